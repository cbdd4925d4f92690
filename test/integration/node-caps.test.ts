/**
 * Caps on slots in flight per node hold across worker processes: two `slotfleet worker` processes,
 * each allowed 16 slot jobs at once, rebalance a 3 x 1 cluster with data onto an added empty master
 * with at most 2 slots in flight per source and 3 into the target. The numbers come from the workers
 * themselves: at every lease they take, they log the leases held on the source and on the target as
 * the atomic acquire script counted them (ours included). The highest must be above 1 (slots did
 * run in parallel) and never above the cap. Afterwards every key is intact (value and TTL), no slot
 * is open on any node, no lease is left in the control Redis and every worker's gauge is back to 0.
 */
import type { ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type DatasetManifest,
  seedDataset,
  spawnWorkerProcesses,
  stopProcesses,
  verifyDataset,
} from '../../src/sandbox/index.js';
import { parseSlotRanges } from '../../src/shared/domain/slots.js';
import { expectOwnersEverywhere, type Stack, startStack, waitForMigration } from './support/stack.js';

const PER_SOURCE = 2;
const PER_TARGET = 3;

interface LeaseLine {
  source: string;
  target: string;
  sourceSlotsInFlight: number;
  targetSlotsInFlight: number;
}

describe('slots in flight per node, capped across worker processes', () => {
  let stack: Stack;
  let manifest: DatasetManifest;
  let logDir: string;
  let workers: ChildProcess[] = [];
  let exitCodes: Promise<(number | null)[]>;

  const workerLog = (index: number) =>
    readFile(join(logDir, `worker-${index + 1}.log`), 'utf8').catch(() => '');
  const workerLines = async () =>
    (await Promise.all(workers.map((_, index) => workerLog(index)))).map((text) =>
      text
        .split('\n')
        .filter((line) => line.startsWith('{'))
        .map((line) => JSON.parse(line) as Record<string, unknown>),
    );

  beforeAll(async () => {
    stack = await startStack({
      workers: 0,
      env: {
        SLOTFLEET_WORKER_CONCURRENCY: '16',
        SLOTFLEET_MAX_SLOTS_PER_SOURCE: String(PER_SOURCE),
        SLOTFLEET_MAX_SLOTS_PER_TARGET: String(PER_TARGET),
        // The lease lines are debug: what the acquire script returned, per slot.
        SLOTFLEET_LOG_LEVEL: 'debug',
      },
    });
    manifest = await seedDataset(stack.cluster.seedUrl, { keys: 20_000, types: 'mixed', ttlFraction: 0.2 });
    logDir = await mkdtemp(join(tmpdir(), 'slotfleet-caps-'));
    workers = spawnWorkerProcesses({ count: 2, env: stack.env, logDir });
    exitCodes = Promise.all(
      workers.map((child) => new Promise<number | null>((resolve) => child.once('exit', resolve))),
    );
    const deadline = Date.now() + 30_000;
    while (
      !(await workerLines()).every((lines) => lines.some((line) => line.msg === 'slotfleet worker ready'))
    ) {
      if (Date.now() > deadline) throw new Error('the worker processes did not get ready');
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  });

  afterAll(async () => {
    await stopProcesses(workers);
    await stack?.stop();
    if (logDir) await rm(logDir, { recursive: true, force: true });
  });

  it('rebalances onto a new master without ever passing the caps, yet in parallel', async () => {
    const added = await stack.cluster.addEmptyMaster();
    const created = await stack.api.app.inject({
      method: 'POST',
      url: '/v1/clusters/default/rebalance',
      // A quarter share for the new master (about 1260 slots): 32 jobs at a time queue up behind
      // caps of 2 and 3 all the same.
      payload: { useEmptyMasters: true, weights: { [added.id]: 0.25 } },
    });
    expect(created.statusCode, created.body).toBe(202);
    const { id, plan } = created.json() as {
      id: string;
      plan: { source: string; target: string; slots: string; targetId: string }[];
    };
    const moved = plan.flatMap((group) => parseSlotRanges(group.slots));
    expect(plan).toHaveLength(3);
    // 16384 / 3.25 * 0.25, give or take redis-cli's rounding.
    expect(moved.length).toBeGreaterThanOrEqual(1255);
    expect(plan.every((group) => group.targetId === added.id)).toBe(true);

    const final = await waitForMigration(stack, id, 50_000);
    expect(final).toMatchObject({ state: 'done', errors: [] });
    expect(final.slots.done).toBe(moved.length);

    const lines = await workerLines();
    const leases = lines.map((ofWorker) =>
      ofWorker.filter((line) => line.msg === 'node leases taken' && line.migrationId === id),
    ) as unknown as LeaseLine[][];
    // Both processes drained slots under leases: a slot's own job takes one for its slot, the opener
    // of a block one for its own slot and one for the rest of the block (keys-mover.ts), so there are
    // at least as many as blocks (a retried attempt takes another).
    const blockSize = stack.config.worker.openSlotsTogether;
    const blocks = plan.reduce(
      (sum, group) => sum + Math.ceil(parseSlotRanges(group.slots).length / blockSize),
      0,
    );
    expect(leases[0]!.length).toBeGreaterThan(0);
    expect(leases[1]!.length).toBeGreaterThan(0);
    expect(leases[0]!.length + leases[1]!.length).toBeGreaterThanOrEqual(blocks);
    const highest = (key: 'source' | 'target', count: 'sourceSlotsInFlight' | 'targetSlotsInFlight') => {
      const byNode: Record<string, number> = {};
      for (const line of leases.flat()) byNode[line[key]] = Math.max(byNode[line[key]] ?? 0, line[count]);
      return byNode;
    };
    const perSource = highest('source', 'sourceSlotsInFlight');
    const perTarget = highest('target', 'targetSlotsInFlight');
    expect(Object.keys(perSource).sort()).toEqual(plan.map((group) => group.source).sort());
    expect(Object.keys(perTarget)).toEqual([plan[0]!.target]);
    for (const highestCount of Object.values(perSource)) expect(highestCount).toBeLessThanOrEqual(PER_SOURCE);
    expect(Math.max(...Object.values(perSource))).toBeGreaterThan(1);
    expect(perTarget[plan[0]!.target]).toBeLessThanOrEqual(PER_TARGET);
    expect(perTarget[plan[0]!.target]).toBeGreaterThan(1);

    // Every key, its value and its TTL; every node, replicas included, agrees and has nothing open.
    const verification = await verifyDataset(stack.cluster.seedUrl, manifest);
    expect(verification).toMatchObject({ missingCount: 0, wrongValueCount: 0, wrongTtlCount: 0 });
    await expectOwnersEverywhere(stack.cluster, new Map(moved.map((slot) => [slot, added.id])));

    // Every lease was given back: none left in the control Redis, every gauge at 0.
    const control = stack.control.client();
    try {
      expect(await control.keys(`${stack.config.queuePrefix}:node-leases:*`)).toEqual([]);
    } finally {
      control.disconnect();
    }
    const attempts = { taken: 0, refused: 0 };
    for (const ofWorker of lines) {
      const ready = ofWorker.find((line) => line.msg === 'slotfleet worker ready')!;
      expect(ready).toMatchObject({ maxSlotsPerSource: PER_SOURCE, maxSlotsPerTarget: PER_TARGET });
      const response = await fetch(`http://127.0.0.1:${ready.metricsPort}/metrics`);
      const text = await response.text();
      const samples = text.split('\n').filter((line) => line.startsWith('slotfleet_node_slots_in_flight{'));
      expect(samples.some((line) => line.includes('role="target"'))).toBe(true);
      expect(samples.some((line) => line.includes('role="source"'))).toBe(true);
      for (const sample of samples) expect(sample).toMatch(/ 0$/);
      expect(text).toMatch(/^slotfleet_slots_waiting_for_lease 0$/m);
      attempts.taken += Number(
        /^slotfleet_node_lease_attempts_total\{result="taken"\} (\d+)$/m.exec(text)?.[1],
      );
      attempts.refused += Number(
        /^slotfleet_node_lease_attempts_total\{result="refused"\} (\d+)$/m.exec(text)?.[1],
      );
    }
    // A job refused its leases sleeps until one frees: about one refusal and one wake per lease, where
    // polling made several (and the 16 jobs per worker far outnumber the caps).
    expect(attempts.taken).toBeGreaterThanOrEqual(blocks);
    expect(attempts.refused).toBeGreaterThan(0);
    expect(attempts.refused).toBeLessThan(3 * moved.length);

    await stopProcesses(workers);
    expect(await exitCodes).toEqual([0, 0]);
  });
});
