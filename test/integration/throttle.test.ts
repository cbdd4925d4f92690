/**
 * Throttling on real servers: the token bucket script in a real control Redis; PATCH
 * /v1/migrations/:id refusing what it should; a migration posted with a keys/s limit moving no
 * faster than it (an upper bound only: this machine is slow and shared, so nothing here says how fast
 * it must go), then `slotfleet limit --keys-per-second none` letting it finish with every key intact.
 */
import calculateSlot from 'cluster-key-slot';
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DatasetManifest, seedDataset, verifyDataset } from '../../src/sandbox/index.js';
import { LIMIT_RANGES } from '../../src/shared/domain/migration.js';
import { TokenBuckets } from '../../src/shared/queue/token-bucket.js';
import { runSlotfleet } from './support/run-slotfleet.js';
import { slotsOf } from './support/slots.js';
import { expectOwnersEverywhere, type Stack, startStack, waitForMigration } from './support/stack.js';

const CONCURRENCY = 4;
/**
 * Slow enough that the 12,000 keys take about 11 s at it: the limit is watched for LIMITED_MS, then
 * two CLI processes start (status, then limit), which on a loaded machine took long enough at
 * 1,500 keys/s for the migration to end first and the limit to be refused.
 */
const KEYS_PER_SECOND = 1_000;
const BATCH_KEYS = 100;
const SLOTS_MOVED = 12;
const KEYS_PER_SLOT = 1_000;
/** How long the limit is watched before it is lifted. */
const LIMITED_MS = 4_500;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('throttling', () => {
  let stack: Stack;
  let control: Redis;
  let apiUrl: string;

  beforeAll(async () => {
    stack = await startStack({ workers: 1, env: { SLOTFLEET_WORKER_CONCURRENCY: String(CONCURRENCY) } });
    control = stack.control.client();
    apiUrl = await stack.api.app.listen({ host: '127.0.0.1', port: 0 });
  });

  afterAll(async () => {
    control?.disconnect();
    await stack?.stop();
  });

  function patch(id: string, payload: unknown) {
    return stack.api.app.inject({
      method: 'PATCH',
      url: `/v1/migrations/${id}`,
      payload: payload as Record<string, unknown>,
    });
  }

  function cli(args: string[]) {
    return runSlotfleet(
      args,
      { ...process.env, SLOTFLEET_API_URL: apiUrl, SLOTFLEET_LOG_LEVEL: 'warn' },
      30_000,
    );
  }

  describe('the token bucket script', () => {
    let buckets: TokenBuckets;
    const bucketKey = (source: string, unit: string) => `bucket-test:throttle:mig-b:${source}:${unit}`;
    beforeAll(() => {
      buckets = new TokenBuckets(control, 'bucket-test');
    });
    const unlimited = { perSecond: undefined, taken: 0 };

    it('starts full with one second of burst, then makes a taker wait out its debt at the rate', async () => {
      expect(await buckets.take('mig-b', 'full:1', { perSecond: 1000, taken: 1000 }, unlimited)).toBe(0);
      const waitMs = await buckets.take('mig-b', 'full:1', { perSecond: 1000, taken: 500 }, unlimited);
      // 500 keys of debt at 1000/s, less what refilled between the two calls.
      expect(waitMs).toBeLessThanOrEqual(500);
      expect(waitMs).toBeGreaterThan(250);
      await sleep(waitMs + 20);
      expect(await buckets.take('mig-b', 'full:1', { perSecond: 1000, taken: 0 }, unlimited)).toBe(0);
      // Kept no longer than it takes to fill up again, plus a second: a missing bucket is a full one.
      const ttl = await control.pttl(bucketKey('full:1', 'keys'));
      expect(ttl).toBeGreaterThan(0);
      expect(ttl).toBeLessThanOrEqual(2_000);
    });

    it('holds one second of burst however long it sat idle', async () => {
      expect(await buckets.take('mig-b', 'burst:1', { perSecond: 1000, taken: 3000 }, unlimited)).toBe(2000);
      const [seconds = 0, microseconds = 0] = (await control.time()).map(Number);
      const nowMs = seconds * 1000 + Math.floor(microseconds / 1000);
      await control.hset(bucketKey('burst:2', 'keys'), 'tokens', '0', 'at', String(nowMs - 60_000));
      const waitMs = await buckets.take('mig-b', 'burst:2', { perSecond: 1000, taken: 1500 }, unlimited);
      expect(waitMs).toBeGreaterThan(400);
      expect(waitMs).toBeLessThanOrEqual(500);
    });

    it('makes the slower of keys and bytes decide, and keeps no bucket for a unit without a rate', async () => {
      const waitMs = await buckets.take(
        'mig-b',
        'both:1',
        { perSecond: 1000, taken: 1500 },
        { perSecond: 1_000_000, taken: 4_000_000 },
      );
      expect(waitMs).toBe(3000);
      expect(await buckets.take('mig-b', 'bytes-only:1', unlimited, { perSecond: 100, taken: 150 })).toBe(
        500,
      );
      expect(await control.exists(bucketKey('bytes-only:1', 'keys'))).toBe(0);
      expect(await control.exists(bucketKey('bytes-only:1', 'bytes'))).toBe(1);
    });

    it('counts debt in keys, so a raised rate repays it sooner', async () => {
      expect(await buckets.take('mig-b', 'raise:1', { perSecond: 100, taken: 300 }, unlimited)).toBe(2000);
      const waitMs = await buckets.take('mig-b', 'raise:1', { perSecond: 1000, taken: 0 }, unlimited);
      expect(waitMs).toBeGreaterThan(100);
      expect(waitMs).toBeLessThanOrEqual(200);
    });

    it('keeps one bucket per migration and source', async () => {
      await buckets.take('mig-b', 'own:1', { perSecond: 100, taken: 200 }, unlimited);
      expect(await buckets.take('mig-b', 'own:2', { perSecond: 100, taken: 100 }, unlimited)).toBe(0);
      expect(await buckets.take('mig-c', 'own:1', { perSecond: 100, taken: 100 }, unlimited)).toBe(0);
    });
  });

  describe('PATCH /v1/migrations/:id refuses bad input', () => {
    const { maxKeysPerSecond, maxBytesPerSecond, batchKeys } = LIMIT_RANGES;
    it.each<[string, unknown, RegExp]>([
      ['a number as a string', { maxKeysPerSecond: '100' }, /maxKeysPerSecond must be integer/],
      ['a fraction', { maxKeysPerSecond: 1.5 }, /maxKeysPerSecond must be integer/],
      ['a boolean', { batchKeys: true }, /batchKeys must be integer/],
      ['zero', { maxKeysPerSecond: 0 }, /maxKeysPerSecond must be >= 1/],
      ['a negative rate', { maxBytesPerSecond: -5 }, /maxBytesPerSecond must be >= 1/],
      [
        'keys/s above the maximum',
        { maxKeysPerSecond: maxKeysPerSecond.maximum + 1 },
        new RegExp(`maxKeysPerSecond must be <= ${maxKeysPerSecond.maximum}`),
      ],
      [
        'bytes/s above the maximum',
        { maxBytesPerSecond: maxBytesPerSecond.maximum + 1 },
        new RegExp(`maxBytesPerSecond must be <= ${maxBytesPerSecond.maximum}`),
      ],
      ['batchKeys above 5000', { batchKeys: batchKeys.maximum + 1 }, /batchKeys must be <= 5000/],
      ['an unknown field', { batch_keys: 100 }, /unknown field "batch_keys"/],
      ['a known and an unknown field', { batchKeys: 100, paused: true }, /unknown field "paused"/],
      ['nothing to change', {}, /must NOT have fewer than 1 properties/],
      ['an array', [{ batchKeys: 100 }], /body must be object/],
    ])('%s: 400', async (_name, payload, message) => {
      const response = await patch('mig-unknown-1', payload);
      expect(response.statusCode, response.body).toBe(400);
      expect(response.json()).toMatchObject({
        code: 'INVALID_REQUEST',
        message: expect.stringMatching(message),
      });
    });

    it('answers 404 for an unknown migration and 400 for an id that cannot be one', async () => {
      const unknown = await patch('mig-unknown-1', { maxKeysPerSecond: 10 });
      expect(unknown.statusCode).toBe(404);
      expect(unknown.json()).toMatchObject({
        code: 'NOT_FOUND',
        message: 'migration mig-unknown-1 does not exist',
      });
      expect((await patch('bad:id', { maxKeysPerSecond: 10 })).statusCode).toBe(400);
    });

    it('is documented in OpenAPI with its body and answers', async () => {
      const openapi = (await stack.api.app.inject({ method: 'GET', url: '/docs/json' })).json();
      const operation = openapi.paths['/v1/migrations/{id}'].patch;
      expect(operation.description).toMatch(/null clears it/);
      const schema = operation.requestBody.content['application/json'].schema;
      expect(Object.keys(schema.properties).sort()).toEqual([
        'batchKeys',
        'maxBytesPerSecond',
        'maxClientLatencyMs',
        'maxKeysPerSecond',
      ]);
      expect(schema.additionalProperties).toBe(false);
      expect(Object.keys(operation.responses).sort()).toEqual(['200', '400', '401', '404', '409', '503']);
      const view =
        openapi.paths['/v1/migrations/{id}'].get.responses['200'].content['application/json'].schema;
      expect(view.properties.limits.properties.maxKeysPerSecond).toBeDefined();
    });

    it('refuses bad limits on a new migration and creates nothing', async () => {
      const before = (await stack.api.app.inject({ method: 'GET', url: '/v1/migrations' })).json().items
        .length;
      for (const limits of [{ batchKeys: 0 }, { maxKeysPerSecond: null }, { keysPerSecond: 10 }]) {
        const response = await stack.api.app.inject({
          method: 'POST',
          url: '/v1/clusters/default/migrations',
          payload: { moves: [{ slots: '1', target: '127.0.0.1:1' }], limits },
        });
        expect(response.statusCode, JSON.stringify(limits)).toBe(400);
      }
      const after = (await stack.api.app.inject({ method: 'GET', url: '/v1/migrations' })).json().items
        .length;
      expect(after).toBe(before);
    });
  });

  it('holds a migration to its keys/s limit, and lets it finish once the limit is lifted', {
    timeout: 90_000,
  }, async () => {
    const masters = (await stack.cluster.masters()).sort((a, b) => a.port - b.port);
    const [source, target] = [masters[0]!, masters[1]!];
    // Twelve slots of the source, a thousand keys each (hash tags), so that a few slot jobs make a
    // long drain instead of thousands of jobs of a key or two.
    const sourceSlots = new Set(await slotsOf(stack.cluster, source.id));
    const tags: { tag: string; slot: number }[] = [];
    for (let i = 0; tags.length < SLOTS_MOVED; i++) {
      const tag = `{thr${i}}`;
      const slot = calculateSlot(tag);
      if (sourceSlots.has(slot) && !tags.some((taken) => taken.slot === slot)) tags.push({ tag, slot });
    }
    const manifests: DatasetManifest[] = [];
    for (const [index, { tag }] of tags.entries()) {
      manifests.push(
        await seedDataset(stack.cluster.seedUrl, {
          keys: KEYS_PER_SLOT,
          prefix: `thr${index}`,
          hashTag: tag,
          types: 'mixed',
          ttlFraction: 0.2,
          seed: index + 1,
        }),
      );
    }
    const totalKeys = SLOTS_MOVED * KEYS_PER_SLOT;

    const startedAt = Date.now();
    const created = await stack.api.app.inject({
      method: 'POST',
      url: '/v1/clusters/default/migrations',
      payload: {
        moves: [{ slots: tags.map(({ slot }) => slot).join(','), target: target.id }],
        limits: { maxKeysPerSecond: KEYS_PER_SECOND, batchKeys: BATCH_KEYS },
      },
    });
    expect(created.statusCode, created.body).toBe(202);
    const id: string = created.json().id;

    // Set, keep and clear, while it runs; a refused change changes nothing.
    const bytesSet = await patch(id, { maxBytesPerSecond: 1024 ** 3 });
    expect(bytesSet.statusCode, bytesSet.body).toBe(200);
    expect(bytesSet.json().limits).toEqual({
      maxKeysPerSecond: KEYS_PER_SECOND,
      maxBytesPerSecond: 1024 ** 3,
      batchKeys: BATCH_KEYS,
      maxClientLatencyMs: null,
    });
    expect((await patch(id, { batchKeys: 0 })).statusCode).toBe(400);
    const bytesCleared = await patch(id, { maxBytesPerSecond: null });
    expect(bytesCleared.json().limits).toEqual({
      maxKeysPerSecond: KEYS_PER_SECOND,
      maxBytesPerSecond: null,
      batchKeys: BATCH_KEYS,
      maxClientLatencyMs: null,
    });
    // The client-latency budget is set and cleared the same way (null: the workers' default).
    expect((await patch(id, { maxClientLatencyMs: 0 })).statusCode).toBe(400);
    expect((await patch(id, { maxClientLatencyMs: 25 })).json().limits).toMatchObject({
      maxClientLatencyMs: 25,
    });
    expect((await patch(id, { maxClientLatencyMs: null })).json().limits).toMatchObject({
      maxClientLatencyMs: null,
    });

    // Every key moved is counted twice: by the worker's counter when its batch lands, by the record
    // a little later. Neither may run ahead of the bucket: one second of burst, the rate since the
    // POST, and the rounds moved but not yet taken (or taken and being waited out), one per job.
    const round = stack.config.worker.batchesInFlight * BATCH_KEYS;
    const allowance = (elapsedMs: number) =>
      (KEYS_PER_SECOND * elapsedMs) / 1000 + KEYS_PER_SECOND + CONCURRENCY * round;
    const worker = stack.workers[0]!;
    const workerCount = async () =>
      (await worker.metrics.keysMigrated.get()).values.reduce((sum, entry) => sum + entry.value, 0);
    const samples: { elapsedMs: number; recorded: number; counted: number; allowed: number }[] = [];
    while (Date.now() - startedAt < LIMITED_MS) {
      const view = (await stack.api.app.inject({ method: 'GET', url: `/v1/migrations/${id}` })).json();
      const counted = await workerCount();
      const elapsedMs = Date.now() - startedAt;
      samples.push({
        elapsedMs,
        recorded: view.keysMoved,
        counted,
        allowed: Math.floor(allowance(elapsedMs)),
      });
      expect(view.limits).toEqual({
        maxKeysPerSecond: KEYS_PER_SECOND,
        maxBytesPerSecond: null,
        batchKeys: BATCH_KEYS,
        maxClientLatencyMs: null,
      });
      await sleep(150);
    }
    const overLimit = samples.filter((sample) => Math.max(sample.recorded, sample.counted) > sample.allowed);
    expect(overLimit, JSON.stringify(samples)).toEqual([]);
    const last = samples.at(-1)!;
    // It moved, and it was held back: jobs waited for the bucket.
    expect(last.counted).toBeGreaterThan(0);
    expect(last.counted).toBeLessThan(totalKeys);
    const waited = (await worker.metrics.throttleWait.get()).values.find(
      (entry) => entry.labels.source === `127.0.0.1:${source.port}`,
    );
    expect(waited?.value).toBeGreaterThan(0);

    const status = await cli(['status', id]);
    expect(status.code, status.stderr).toBe(0);
    expect(status.stdout).toContain(
      `limits: ${KEYS_PER_SECOND} keys/s per source, batches of ${BATCH_KEYS} keys`,
    );
    const lifted = await cli([
      'limit',
      id,
      '--keys-per-second',
      'none',
      '--max-client-latency-ms',
      '30',
      '--json',
    ]);
    expect(lifted.code, lifted.stderr).toBe(0);
    expect(JSON.parse(lifted.stdout).limits).toEqual({
      maxKeysPerSecond: null,
      maxBytesPerSecond: null,
      batchKeys: BATCH_KEYS,
      maxClientLatencyMs: 30,
    });

    const final = await waitForMigration(stack, id, 60_000);
    expect(final).toMatchObject({ state: 'done', errors: [], keysMoved: totalKeys });
    expect(final.slots.done).toBe(SLOTS_MOVED);
    await expectOwnersEverywhere(stack.cluster, new Map(tags.map(({ slot }) => [slot, target.id])));
    for (const manifest of manifests) {
      const verification = await verifyDataset(stack.cluster.seedUrl, manifest);
      expect(verification, manifest.prefix).toMatchObject({
        checked: KEYS_PER_SLOT,
        missingCount: 0,
        wrongValueCount: 0,
        wrongTtlCount: 0,
      });
    }

    // An ended migration keeps its limits as they were, and refuses new ones.
    const ended = await patch(id, { maxKeysPerSecond: 10 });
    expect(ended.statusCode).toBe(409);
    expect(ended.json()).toMatchObject({
      code: 'INVALID_STATE',
      message: expect.stringMatching(/has ended \(done\)/),
    });
    const refused = await cli(['limit', id, '--batch-keys', '50']);
    expect(refused.code).toBe(3);
    expect(refused.stderr).toMatch(/409 INVALID_STATE/);
    const typo = await cli(['limit', id, '--keys-per-second', '1.5k']);
    expect(typo.code).toBe(2);
    expect(typo.stderr).toMatch(/--keys-per-second takes a whole number, or none/);
  });
});
