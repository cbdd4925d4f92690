/**
 * The throttle hook's decisions, with the token bucket, the clock and sleep as plain functions
 * (the bucket itself, a Lua script, is checked on a real Redis in test/integration/throttle.test.ts).
 */
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import type { MigrationLimits } from '../../src/shared/domain/migration.js';
import { createLogger } from '../../src/shared/logger.js';
import { createMetrics } from '../../src/shared/metrics.js';
import type { SlotJobData } from '../../src/shared/queue/names.js';
import type { BucketTake } from '../../src/shared/queue/token-bucket.js';
import { createThrottle, drainLimits, THROTTLE_RECHECK_MS } from '../../src/workers/throttle.js';

const JOB: SlotJobData = {
  migrationId: 'mig-1',
  cluster: 'default',
  slot: 7,
  source: { id: 'a'.repeat(40), host: '127.0.0.1', port: 7001 },
  target: { id: 'b'.repeat(40), host: '127.0.0.1', port: 7002 },
};

describe('drainLimits', () => {
  it.each<[string, MigrationLimits, number, MigrationLimits]>([
    ['no limits: the worker setting applies', {}, 1000, {}],
    ['batchKeys alone', { batchKeys: 50 }, 1000, { batchKeys: 50 }],
    [
      'a keys limit below the worker batch caps the batch',
      { maxKeysPerSecond: 300 },
      1000,
      { maxKeysPerSecond: 300, batchKeys: 300 },
    ],
    [
      'a keys limit below the migration batch caps it',
      { maxKeysPerSecond: 300, batchKeys: 2000 },
      1000,
      { maxKeysPerSecond: 300, batchKeys: 300 },
    ],
    [
      'a keys limit above the batch changes nothing',
      { maxKeysPerSecond: 1500, batchKeys: 100 },
      1000,
      { maxKeysPerSecond: 1500, batchKeys: 100 },
    ],
    ['a bytes limit does not touch the batch', { maxBytesPerSecond: 10 }, 1000, { maxBytesPerSecond: 10 }],
  ])('%s', (_name, limits, workerBatchKeys, expected) => {
    expect(drainLimits(limits, workerBatchKeys)).toEqual(expected);
  });
});

interface Harness {
  throttle: ReturnType<typeof createThrottle>;
  takes: { source: string; keys: BucketTake; bytes: BucketTake }[];
  sleeps: number[];
  limitReads: number;
  pauseReads: number;
  logLines: string[];
  waitedSeconds(): Promise<number | undefined>;
}

function harness(options: {
  known?: MigrationLimits;
  fresh?: MigrationLimits[];
  waits?: (number | Error)[];
  paused?: boolean;
  batchBytes?: number;
}): Harness {
  const metrics = createMetrics({ defaultMetrics: false });
  const logLines: string[] = [];
  const log = createLogger(
    { level: 'info', name: 'test' },
    new Writable({
      write(chunk, _encoding, done) {
        logLines.push(String(chunk));
        done();
      },
    }),
  );
  let clock = 1_000_000;
  const waits = [...(options.waits ?? [])];
  const fresh = [...(options.fresh ?? [])];
  const state: Harness = {
    takes: [],
    sleeps: [],
    limitReads: 0,
    pauseReads: 0,
    logLines,
    throttle: createThrottle({
      knownLimitsOf: () => options.known,
      limitsOf: async () => {
        state.limitReads++;
        return fresh.shift() ?? options.known ?? {};
      },
      isPaused: async () => {
        state.pauseReads++;
        return options.paused ?? false;
      },
      take: async (_migrationId, source, keys, bytes) => {
        state.takes.push({ source, keys, bytes });
        const next = waits.shift() ?? 0;
        if (next instanceof Error) throw next;
        return next;
      },
      metrics,
      log,
      batchBytes: options.batchBytes ?? 4096,
      sleep: async (ms) => {
        state.sleeps.push(ms);
        clock += ms;
      },
      now: () => clock,
    }),
    async waitedSeconds() {
      const values = (await metrics.throttleWait.get()).values;
      return values.find((entry) => entry.labels.source === '127.0.0.1:7001')?.value;
    },
  };
  return state;
}

describe('the throttle hook', () => {
  it('costs no bucket, no read and no sleep without limits, and exports the wait series at zero', async () => {
    const run = harness({ known: { batchKeys: 100 } });
    await run.throttle(JOB, { keys: 100, bytes: 9000 });
    expect(run).toMatchObject({ takes: [], sleeps: [], limitReads: 0, pauseReads: 0 });
    expect(await run.waitedSeconds()).toBe(0);
  });

  it('reads the limits only when this worker never read them', async () => {
    const run = harness({ fresh: [{}] });
    await run.throttle(JOB, { keys: 100, bytes: 0 });
    expect(run.limitReads).toBe(1);
    expect(run.takes).toEqual([]);
  });

  it('takes what the round moved from both buckets and goes on when they allow it', async () => {
    const run = harness({ known: { maxKeysPerSecond: 1500, maxBytesPerSecond: 1_000_000 }, waits: [0] });
    await run.throttle(JOB, { keys: 400, bytes: 51_200 });
    expect(run.takes).toEqual([
      {
        source: '127.0.0.1:7001',
        keys: { perSecond: 1500, taken: 400 },
        bytes: { perSecond: 1_000_000, taken: 51_200 },
      },
    ]);
    expect(run.sleeps).toEqual([]);
  });

  it('sleeps a short wait in one piece, without looking again, and counts it', async () => {
    const run = harness({ known: { maxKeysPerSecond: 1500 }, waits: [320] });
    await run.throttle(JOB, { keys: 400, bytes: 0 });
    expect(run.sleeps).toEqual([320]);
    expect(run).toMatchObject({ limitReads: 0, pauseReads: 0 });
    expect(run.takes).toHaveLength(1);
    expect(await run.waitedSeconds()).toBeCloseTo(0.32);
  });

  it('cuts a long wait into pieces, asking the bucket again (taking nothing) after each', async () => {
    const run = harness({ known: { maxKeysPerSecond: 100 }, waits: [1_200, 700, 150] });
    await run.throttle(JOB, { keys: 400, bytes: 0 });
    expect(run.sleeps).toEqual([THROTTLE_RECHECK_MS, THROTTLE_RECHECK_MS, 150]);
    expect(run.takes.map((take) => take.keys)).toEqual([
      { perSecond: 100, taken: 400 },
      { perSecond: 100, taken: 0 },
      { perSecond: 100, taken: 0 },
    ]);
    expect(run).toMatchObject({ limitReads: 2, pauseReads: 2 });
    expect(await run.waitedSeconds()).toBeCloseTo(1.15);
  });

  it('applies a limit raised during a long wait to the rest of it', async () => {
    const run = harness({
      known: { maxKeysPerSecond: 100 },
      fresh: [{ maxKeysPerSecond: 5000 }],
      waits: [4_000, 10],
    });
    await run.throttle(JOB, { keys: 400, bytes: 0 });
    expect(run.takes[1]!.keys).toEqual({ perSecond: 5000, taken: 0 });
    expect(run.sleeps).toEqual([THROTTLE_RECHECK_MS, 10]);
  });

  it('stops waiting when the limit is cleared during a long wait', async () => {
    const run = harness({ known: { maxKeysPerSecond: 100 }, fresh: [{ batchKeys: 100 }], waits: [4_000] });
    await run.throttle(JOB, { keys: 400, bytes: 0 });
    expect(run.sleeps).toEqual([THROTTLE_RECHECK_MS]);
    expect(run.takes).toHaveLength(1);
  });

  it('stops waiting when the migration is paused during a long wait (the engine stops next)', async () => {
    const run = harness({ known: { maxKeysPerSecond: 100 }, waits: [4_000], paused: true });
    await run.throttle(JOB, { keys: 400, bytes: 0 });
    expect(run.sleeps).toEqual([THROTTLE_RECHECK_MS]);
    expect(run).toMatchObject({ limitReads: 0, pauseReads: 1 });
  });

  it('resolves after one recheck interval when the bucket cannot be read: the round must be counted', async () => {
    const run = harness({ known: { maxKeysPerSecond: 100 }, waits: [new Error('OOM command not allowed')] });
    await expect(run.throttle(JOB, { keys: 400, bytes: 0 })).resolves.toBeUndefined();
    expect(run.sleeps).toEqual([THROTTLE_RECHECK_MS]);
    expect(run.logLines.join('')).toMatch(/token bucket not readable.*OOM|OOM.*token bucket not readable/);
  });

  it('warns once per migration that a bytes limit cannot hold when batches are not weighed', async () => {
    const run = harness({ known: { maxBytesPerSecond: 1_000 }, batchBytes: 0 });
    await run.throttle(JOB, { keys: 10, bytes: 0 });
    await run.throttle(JOB, { keys: 10, bytes: 0 });
    const warnings = run.logLines.filter((line) => line.includes('SLOTFLEET_BATCH_BYTES=0'));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain('mig-1');
  });
});
