/**
 * The client-latency budget on a real cluster: one slot full of 4 KB values (random bytes, so LZF
 * cannot make MIGRATE cheap) moves with a tight budget, then back with a loose one, drained by a
 * `slotfleet worker` process while this process PINGs the source every 5 ms on a connection of its
 * own, as a client of the cluster would.
 *
 * Tight budget: the probe's p99 stays within the budget plus TOLERANCE_MS. The tolerance is this
 * machine's, not the pacer's: the cluster, the worker and the probe share two cores, so a PING also
 * waits for a core, whatever MIGRATE does. Loose budget: the same keys move faster. Both moves keep
 * every key, and the pace the workers shared is in the control Redis and on /metrics.
 */
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startLatencyProbes } from '../../src/bench/latency-probe.js';
import { spawnWorkerProcesses, stopProcesses } from '../../src/sandbox/index.js';
import type { NodeRef } from '../../src/shared/domain/plan.js';
import { moveToNextMaster } from './support/one-slot.js';
import { expectNoOpenSlots, type Stack, startStack, waitForMigration } from './support/stack.js';

const TAG = '{budget}';
const KEYS = 16_000;
const VALUE_BYTES = 4096;
const TIGHT_MS = 5;
const LOOSE_MS = 500;
const TOLERANCE_MS = 10;
const PROBE_EVERY_MS = 5;

describe('the client-latency budget', () => {
  let stack: Stack;
  let workers: ChildProcess[] = [];
  let logDir: string;
  const values = new Map<string, Buffer>();

  beforeAll(async () => {
    stack = await startStack({ masters: 3, replicasPerMaster: 0, workers: 0 });
    logDir = await mkdtemp(join(tmpdir(), 'slotfleet-budget-'));
    workers = spawnWorkerProcesses({
      count: 1,
      env: { ...stack.env, SLOTFLEET_LOG_LEVEL: 'info' },
      logDir,
    });
  });

  afterAll(async () => {
    await stopProcesses(workers);
    await stack?.stop();
    if (logDir) await rm(logDir, { recursive: true, force: true });
  });

  async function move(slot: number, source: NodeRef, target: NodeRef, budgetMs: number) {
    // In a process of its own: this one also runs the API, whose work would delay the replies.
    const probing = startLatencyProbes([source.port], { everyMs: PROBE_EVERY_MS });
    try {
      // Its connection opens first: the move's first batches are measured too.
      await new Promise((resolve) => setTimeout(resolve, 300));
      const startedAt = performance.now();
      const created = await stack.api.app.inject({
        method: 'POST',
        url: '/v1/clusters/default/migrations',
        payload: {
          moves: [{ slots: String(slot), target: target.id }],
          limits: { maxClientLatencyMs: budgetMs },
        },
      });
      expect(created.statusCode, created.body).toBe(202);
      const { id } = created.json() as { id: string };
      const final = await waitForMigration(stack, id, 90_000);
      const seconds = (performance.now() - startedAt) / 1000;
      const seen = await probing.stop();
      expect(final).toMatchObject({ state: 'done', keysMoved: KEYS, errors: [] });
      const view = await stack.api.app.inject({ method: 'GET', url: `/v1/migrations/${id}` });
      expect(view.json()).toMatchObject({ limits: { maxClientLatencyMs: budgetMs } });
      return { seconds, p99Ms: seen.p99Ms, maxMs: seen.maxMs, samples: seen.samples };
    } finally {
      await probing.stop().catch(() => undefined);
    }
  }

  async function expectEveryKeyOn(node: NodeRef) {
    const client = stack.cluster.process(node.port).client();
    try {
      const names = [...values.keys()];
      for (let start = 0; start < names.length; start += 1000) {
        const chunk = names.slice(start, start + 1000);
        const stored = await client.mgetBuffer(...chunk);
        const wrong = chunk.filter((name, index) => !stored[index]?.equals(values.get(name)!));
        expect(wrong).toEqual([]);
      }
    } finally {
      client.disconnect();
    }
  }

  it('holds a tight budget within its tolerance, and a loose one moves faster', async () => {
    const { data, slot } = await moveToNextMaster(stack, TAG, 'seed');
    const owner = stack.cluster.process(data.source.port).client();
    try {
      for (let start = 0; start < KEYS; start += 500) {
        const pipeline = owner.pipeline();
        for (let index = start; index < Math.min(KEYS, start + 500); index++) {
          const name = `${TAG}:${index}`;
          const value = randomBytes(VALUE_BYTES);
          values.set(name, value);
          pipeline.set(name, value);
        }
        await pipeline.exec();
      }
    } finally {
      owner.disconnect();
    }

    const tight = await move(slot, data.source, data.target, TIGHT_MS);
    await expectEveryKeyOn(data.target);
    const loose = await move(slot, data.target, data.source, LOOSE_MS);
    await expectEveryKeyOn(data.source);
    await expectNoOpenSlots(stack.cluster);

    const report = JSON.stringify({ tight, loose });
    expect(tight.samples, report).toBeGreaterThan(50);
    expect(tight.p99Ms, report).toBeLessThanOrEqual(TIGHT_MS + TOLERANCE_MS);
    expect(loose.seconds, report).toBeLessThan(tight.seconds);

    // The pace each source ran at is shared in the control Redis: the tight one below the ceilings.
    const control = stack.control.client();
    try {
      const paceOf = async (node: NodeRef) =>
        control.hgetall(`${stack.config.queuePrefix}:pace:default:${node.id}`);
      const tightPace = await paceOf(data.source);
      expect(Number(tightPace.batchKeys), JSON.stringify(tightPace)).toBeLessThan(1000);
      expect(Number(tightPace.latencyMs)).toBeGreaterThan(0);
      expect(Number((await paceOf(data.target)).version)).toBeGreaterThan(0);
    } finally {
      control.disconnect();
    }
    // And on the worker's /metrics.
    const lines = (await readFile(join(logDir, 'worker-1.log'), 'utf8'))
      .split('\n')
      .filter((line) => line.startsWith('{'));
    const ready = lines.map((line) => JSON.parse(line)).find((line) => line.msg === 'slotfleet worker ready');
    expect(ready).toMatchObject({ maxClientLatencyMs: 10 });
    const metrics = await (await fetch(`http://127.0.0.1:${ready.metricsPort}/metrics`)).text();
    for (const name of [
      'slotfleet_node_client_latency_seconds',
      'slotfleet_pace_slots',
      'slotfleet_pace_batch_keys',
    ]) {
      expect(metrics).toMatch(
        new RegExp(
          `^${name}\\{cluster="default",node="127\\.0\\.0\\.1:${data.source.port}"\\} [0-9.e-]+$`,
          'm',
        ),
      );
    }
  });
});
