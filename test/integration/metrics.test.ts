/**
 * What the metrics say, checked against what really happened on real servers: the API's open
 * /metrics (queue depth, keys remaining of a migration until it ends), a worker's counters after a
 * cancelled and after a completed migration, and a taken metrics port refused by name.
 */
import { createServer, type Server } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { seedDataset } from '../../src/sandbox/index.js';
import { loadConfig } from '../../src/shared/config.js';
import type { Metrics } from '../../src/shared/metrics.js';
import { startWorker } from '../../src/workers/worker.js';
import { slotsOf } from './support/slots.js';
import { countKeysInSlots, type Stack, startStack, waitForMigration } from './support/stack.js';

const TOKEN = 'metrics-test-token-0123456789';
const auth = { authorization: `Bearer ${TOKEN}` };

/** One sample of the exposition text, or undefined when the series is absent. */
function sample(text: string, name: string, labels: Record<string, string>): number | undefined {
  const wanted = Object.entries(labels).map(([label, value]) => `${label}="${value}"`);
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    const labelText = line.slice(name.length + 1, line.indexOf('}'));
    if (wanted.every((pair) => labelText.split(',').includes(pair))) return Number(line.split(' ').at(-1));
  }
  return undefined;
}

async function values(metric: Metrics[keyof Omit<Metrics, 'registry'>]) {
  return (await metric.get()).values.map(({ labels, value }) => ({ labels: { ...labels }, value }));
}

describe('metrics', () => {
  let stack: Stack;

  beforeAll(async () => {
    stack = await startStack({ workers: 0, env: { SLOTFLEET_API_TOKEN: TOKEN } });
    await seedDataset(stack.cluster.seedUrl, { keys: 5_000, types: 'mixed', ttlFraction: 0, seed: 3 });
  });

  afterAll(async () => {
    await stack?.stop();
  });

  /** GET /metrics until `accept` is true of its text (the API reads at most every 2 s). */
  async function metricsUntil(accept: (text: string) => boolean, timeoutMs = 10_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    let text = '';
    while (Date.now() < deadline) {
      const response = await stack.api.app.inject({ method: 'GET', url: '/metrics' });
      expect(response.statusCode).toBe(200);
      text = response.body;
      if (accept(text)) return text;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    throw new Error(`GET /metrics never matched within ${timeoutMs} ms; last:\n${text}`);
  }

  it('serves /metrics on the API without the token, in OpenAPI, with queue depth and process metrics', async () => {
    const response = await stack.api.app.inject({ method: 'GET', url: '/metrics' });
    expect(response.statusCode).toBe(200);
    expect(response.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
    expect(response.body).toMatch(/^process_cpu_user_seconds_total /m);
    expect(sample(response.body, 'slotfleet_queue_jobs', { queue: 'migrate-slot', state: 'waiting' })).toBe(
      0,
    );
    expect(sample(response.body, 'slotfleet_queue_jobs', { queue: 'finalize-slot', state: 'active' })).toBe(
      0,
    );
    expect((await stack.api.app.inject({ method: 'GET', url: '/v1/migrations' })).statusCode).toBe(401);
    const openapi = (await stack.api.app.inject({ method: 'GET', url: '/docs/json' })).json();
    expect(openapi.paths['/metrics']?.get?.description).toMatch(/Prometheus/);
    expect(openapi.paths['/metrics'].get.security).toBeUndefined();
  });

  it('reports keys remaining until a migration ends, and counts each cancelled slot once', async () => {
    const masters = (await stack.cluster.masters()).sort((a, b) => a.port - b.port);
    const [target, source] = [masters[0]!, masters[1]!];
    const slots = (await slotsOf(stack.cluster, source.id)).slice(0, 200);
    const keysInSlots = await countKeysInSlots(stack.cluster, slots);
    expect(keysInSlots).toBeGreaterThan(0);
    const created = await stack.api.app.inject({
      method: 'POST',
      url: '/v1/clusters/default/migrations',
      headers: auth,
      payload: { moves: [{ slots: slots.join(','), target: target.id }] },
    });
    expect(created.statusCode, created.body).toBe(202);
    const id: string = created.json().id;
    const labels = { cluster: 'default', migration: id };

    // No worker yet: the migration is pending, every key still on the source, every job waiting.
    const pending = await metricsUntil(
      (text) => sample(text, 'slotfleet_keys_remaining', labels) !== undefined,
    );
    expect(sample(pending, 'slotfleet_keys_remaining', labels)).toBe(keysInSlots);
    const queued = await metricsUntil(
      (text) => sample(text, 'slotfleet_queue_jobs', { queue: 'migrate-slot', state: 'waiting' }) === 200,
    );
    // Finalizers are added by the migrate jobs once they drained: none yet.
    expect(sample(queued, 'slotfleet_queue_jobs', { queue: 'finalize-slot', state: 'waiting' }) ?? 0).toBe(0);

    expect(
      (await stack.api.app.inject({ method: 'POST', url: `/v1/migrations/${id}/cancel`, headers: auth }))
        .statusCode,
    ).toBe(200);
    const worker = await stack.startWorker();
    try {
      const final = await waitForMigration(stack, id, 60_000, auth);
      expect(final).toMatchObject({ state: 'cancelled', keysMoved: 0 });
      expect(final.slots.cancelled).toBe(200);
      // A cancelled slot ends with its migrate job; it never gets a finalizer.
      const ended = await metricsUntil(
        (text) =>
          sample(text, 'slotfleet_queue_jobs', { queue: 'migrate-slot', state: 'completed' }) === 200 &&
          sample(text, 'slotfleet_keys_remaining', labels) === undefined,
      );
      expect(sample(ended, 'slotfleet_queue_jobs', { queue: 'finalize-slot', state: 'completed' }) ?? 0).toBe(
        0,
      );
      expect(sample(ended, 'slotfleet_queue_jobs', { queue: 'migrate-slot', state: 'waiting' })).toBe(0);

      // Each slot is counted once, when its step changed to cancelled.
      expect(await values(worker.metrics.slotsFinished)).toEqual(
        expect.arrayContaining([
          { labels: { cluster: 'default', result: 'cancelled', engine: 'keys' }, value: 200 },
          { labels: { cluster: 'default', result: 'done', engine: 'keys' }, value: 0 },
          { labels: { cluster: 'default', result: 'failed', engine: 'keys' }, value: 0 },
          { labels: { cluster: 'default', result: 'cancelled', engine: 'atomic' }, value: 0 },
        ]),
      );
      expect((await values(worker.metrics.slotsInFlight)).every(({ value }) => value === 0)).toBe(true);
      expect(await values(worker.metrics.keysMigrated)).toEqual([]);
    } finally {
      await worker.close();
    }
  });

  it('counts every key a worker moves once, by source and target, and every slot done', async () => {
    const masters = (await stack.cluster.masters()).sort((a, b) => a.port - b.port);
    const [target, source] = [masters[0]!, masters[2]!];
    const slots = (await slotsOf(stack.cluster, source.id)).slice(0, 100);
    const keysBefore = await countKeysInSlots(stack.cluster, slots);
    const worker = await stack.startWorker();
    try {
      const created = await stack.api.app.inject({
        method: 'POST',
        url: '/v1/clusters/default/migrations',
        headers: auth,
        payload: { moves: [{ slots: slots.join(','), target: target.id }] },
      });
      expect(created.statusCode, created.body).toBe(202);
      const final = await waitForMigration(stack, created.json().id, 60_000, auth);
      expect(final).toMatchObject({ state: 'done', errors: [] });
      const count = async (histogram: Metrics['slotDuration']) =>
        (await histogram.get()).values.find((entry) => entry.metricName?.endsWith('_count'))?.value;
      // The record is done when the last finalizer wrote its step, a moment before its job returns.
      const slotsDone = async () =>
        (await worker.metrics.slotsFinished.get()).values.find((entry) => entry.labels.result === 'done')
          ?.value;
      await expect.poll(slotsDone, { timeout: 10_000 }).toBe(100);
      // One finalizer job per batch of slots drained together, timed per attempt: fewer than slots.
      await expect.poll(() => count(worker.metrics.finalizeDuration), { timeout: 10_000 }).toBeGreaterThan(0);
      expect(await count(worker.metrics.finalizeDuration)).toBeLessThan(100);

      const pair = {
        cluster: 'default',
        source: `127.0.0.1:${source.port}`,
        target: `127.0.0.1:${target.port}`,
      };
      expect(await values(worker.metrics.keysMigrated)).toEqual([{ labels: pair, value: keysBefore }]);
      expect(final.keysMoved).toBe(keysBefore);
      expect(await countKeysInSlots(stack.cluster, slots)).toBe(keysBefore);
      // Exported at zero from the first batch on, so a first timeout is not lost to increase().
      expect(await values(worker.metrics.migrateTimeouts)).toEqual([{ labels: pair, value: 0 }]);
      expect(await values(worker.metrics.migrateErrors)).toEqual([]);
      expect(await values(worker.metrics.slotsFinished)).toContainEqual({
        labels: { cluster: 'default', result: 'done', engine: 'keys' },
        value: 100,
      });
      expect(await count(worker.metrics.slotDuration)).toBe(100);
      expect(await count(worker.metrics.migrateBatchDuration)).toBeGreaterThan(0);
    } finally {
      await worker.close();
    }
  });

  it('refuses a taken metrics port, naming SLOTFLEET_METRICS_PORT', async () => {
    const blocker: Server = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const address = blocker.address();
    const port = typeof address === 'object' && address ? address.port : 0;
    try {
      const config = loadConfig({ ...stack.env, SLOTFLEET_METRICS_PORT: String(port) });
      await expect(startWorker(config, stack.log)).rejects.toThrow(
        new RegExp(`SLOTFLEET_METRICS_PORT: cannot serve /metrics on 127\\.0\\.0\\.1:${port}`),
      );
    } finally {
      await new Promise((resolve) => blocker.close(resolve));
    }
  });
});
