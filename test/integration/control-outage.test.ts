/**
 * The control Redis (queues, migration records, slot claims) is killed in the middle of a migration
 * and comes back from its AOF on the same port: meanwhile the API answers 503 CONTROL_STORE on every
 * route that needs it (readiness too, liveness stays 200) and the two `slotfleet worker` processes
 * wait without crashing; afterwards the migration ends done with every key intact, no slot open, no
 * claim left, every job completed. Then the same with an AOF rolled back past finished slots (writes
 * lost): stalled-job recovery and idempotent re-runs must still get everything done.
 */
import type { ChildProcess } from 'node:child_process';
import { cp, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Queue } from 'bullmq';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { MigrationView } from '../../src/cli/migration-view.js';
import {
  type DatasetManifest,
  seedDataset,
  spawnWorkerProcesses,
  stopProcesses,
  verifyDataset,
} from '../../src/sandbox/index.js';
import { SlotStep } from '../../src/shared/domain/slot-migration.js';
import { parseSlotRanges } from '../../src/shared/domain/slots.js';
import { MigrationStore } from '../../src/shared/queue/migration-store.js';
import { type FinalizeJobData, migrateJobId, QueueName } from '../../src/shared/queue/names.js';
import {
  expectOwnersEverywhere,
  type Stack,
  startReshard,
  startStack,
  waitForMigration,
  waitForProgress,
} from './support/stack.js';

const CONTROL_PASSWORD = 'control-secret-5f0c2e9a';
/** How long the control Redis stays down. */
const OUTAGE_MS = 7_000;
/** Slots the second outage loses at least, as seen done by the API before it. */
const LOST_SLOTS = 100;

describe('control Redis outage in the middle of a migration', () => {
  let stack: Stack;
  let manifest: DatasetManifest;
  let logDir: string;
  let workers: ChildProcess[] = [];
  let exitCodes: Promise<(number | null)[]>;
  /** The master the first test adds; the second moves slots away from it. */
  let addedId: string;
  let failed = false;

  const workerLog = (index: number) =>
    readFile(join(logDir, `worker-${index + 1}.log`), 'utf8').catch(() => '');

  async function waitForWorkerLines(pattern: RegExp, timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const logs = await Promise.all(workers.map((_, index) => workerLog(index)));
      if (logs.every((text) => pattern.test(text))) return;
      if (Date.now() > deadline)
        throw new Error(`not every worker logged ${pattern}:\n${logs.join('\n---\n')}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  beforeAll(async () => {
    stack = await startStack({
      workers: 0,
      controlPassword: CONTROL_PASSWORD,
      env: { SLOTFLEET_WORKER_CONCURRENCY: '8' },
    });
    manifest = await seedDataset(stack.cluster.seedUrl, { keys: 30_000, types: 'mixed', ttlFraction: 0.2 });
    logDir = await mkdtemp(join(tmpdir(), 'slotfleet-outage-'));
    workers = spawnWorkerProcesses({ count: 2, env: stack.env, logDir });
    exitCodes = Promise.all(
      workers.map((child) => new Promise<number | null>((resolve) => child.once('exit', resolve))),
    );
    await waitForWorkerLines(/slotfleet worker ready/);
  });

  afterEach(({ task }) => {
    if (task.result?.state === 'fail') failed = true;
  });

  afterAll(async () => {
    await stopProcesses(workers);
    await stack?.stop();
    // The workers' logs of a failed run are kept for the reader of the failure.
    if (logDir && !failed) await rm(logDir, { recursive: true, force: true });
    if (failed) console.error(`worker logs kept in ${logDir}`);
  });

  const inject = (method: 'GET' | 'POST', url: string, payload?: object) =>
    stack.api.app.inject({ method, url, ...(payload ? { payload } : {}) });

  async function readMigration(id: string): Promise<MigrationView> {
    const response = await inject('GET', `/v1/migrations/${id}`);
    expect(response.statusCode, response.body).toBe(200);
    return response.json();
  }

  it('answers 503 meanwhile, then finishes the migration with nothing lost and no slot open', async () => {
    const added = await stack.cluster.addEmptyMaster();
    addedId = added.id;
    // The new master weighs 0.25 (the others 1): about 1260 slots move rather than 4096, enough for
    // the outage to find slots done, in flight and pending.
    const created = await inject('POST', '/v1/clusters/default/rebalance', {
      useEmptyMasters: true,
      weights: { [added.id]: 0.25 },
    });
    expect(created.statusCode, created.body).toBe(202);
    const { id, plan } = created.json() as { id: string; plan: { slots: string; targetId: string }[] };
    const moved = plan.flatMap((group) => parseSlotRanges(group.slots));
    expect(plan.every((group) => group.targetId === added.id)).toBe(true);
    // 16384 / 3.25 * 0.25, give or take redis-cli's rounding.
    expect(moved.length).toBeGreaterThanOrEqual(1255);

    // Some, not all, slots done: the outage hits jobs in flight, finished ones and pending ones.
    const before = await waitForProgress(stack, id, moved.length, 'the outage', 90_000);
    await stack.control.kill();
    const downAt = Date.now();
    expect(before.state).toBe('running');

    const address = `127.0.0.1:${stack.control.port}`;
    const unavailable = {
      statusCode: 503,
      error: 'Service Unavailable',
      code: 'CONTROL_STORE',
      message: expect.stringContaining(`control Redis at ${address} is unreachable`),
    };
    const bodies: string[] = [];
    const expect503 = async (method: 'GET' | 'POST', url: string, payload?: object) => {
      const response = await inject(method, url, payload);
      bodies.push(response.body);
      expect(response.statusCode, `${method} ${url}: ${response.body}`).toBe(503);
      expect(response.json()).toEqual(unavailable);
      expect(response.headers['retry-after']).toBe('5');
    };
    await expect503('GET', `/v1/migrations/${id}`);
    await expect503('GET', '/v1/migrations');
    await expect503('POST', '/v1/clusters/default/migrations', {
      moves: [{ slots: String(moved[0]), target: added.id }],
    });
    await expect503('POST', `/v1/migrations/${id}/pause`);
    await expect503('GET', '/status.json');
    const ready = await inject('GET', '/readyz');
    bodies.push(ready.body);
    expect(ready.statusCode).toBe(503);
    expect(ready.json()).toEqual({
      status: 'not ready',
      checks: { control: unavailable.message, 'cluster:default': 'ok' },
    });
    expect((await inject('GET', '/healthz')).statusCode).toBe(200);
    // The metrics page degrades (no queue depth) instead of failing.
    expect((await inject('GET', '/metrics')).statusCode).toBe(200);

    // The whole outage long: 503, never a 500, and both worker processes stay up.
    while (Date.now() - downAt < OUTAGE_MS) {
      await expect503('GET', `/v1/migrations/${id}`);
      expect(workers.map((child) => child.exitCode)).toEqual([null, null]);
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    for (const body of bodies) expect(body).not.toContain(CONTROL_PASSWORD);

    // Same port, same directory: the data comes back from the AOF.
    await stack.control.restart();
    expect(await stack.control.logTail(50)).toMatch(/DB loaded from append only file/);
    const after = await readMigrationOnceBack(id);
    // Every write acknowledged before the crash survived it.
    expect(after.slots.done).toBeGreaterThanOrEqual(before.slots.done!);
    expect(after.keysMoved).toBeGreaterThanOrEqual(before.keysMoved);

    await expectSettled(id, new Map(moved.map((slot) => [slot, added.id])));
  }, 240_000);

  it('still converges when the restart lost the last seconds of writes', async () => {
    // A stalled fsync can hold back up to 2 s of AOF writes (appendfsync everysec): a crash then
    // loses acknowledged writes. Here the AOF is rolled back on purpose, past LOST_SLOTS finished
    // slots: completed jobs come back active or waiting, finished slots come back with older steps,
    // jobs the workers still run are back in the queue, finalizers they added are gone. Stalled-job
    // recovery and idempotent re-runs must finish it all.
    const receiver = (await stack.cluster.masters()).find((master) => master.id !== addedId)!;
    // 1000 of the added master's slots: LOST_SLOTS of them finish between the copy and the crash,
    // and many more are still to come.
    const { id, moved } = await startReshard(stack, { from: [addedId], to: receiver.id, slots: 1000 });
    await waitForProgress(stack, id, moved.length, 'the outage', 90_000);

    const aofDir = join(stack.control.dir, 'appendonlydir');
    const snapshot = join(logDir, 'aof-snapshot');
    await cp(aofDir, snapshot, { recursive: true });
    // The copy holds at most what this read shows; go on until LOST_SLOTS more slots are done.
    const copied = await readMigration(id);
    let acknowledged = copied;
    const lossDeadline = Date.now() + 60_000;
    while (acknowledged.slots.done! < copied.slots.done! + LOST_SLOTS) {
      if (Date.now() > lossDeadline) throw new Error(`no progress after the copy: ${JSON.stringify(copied)}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
      acknowledged = await readMigration(id);
    }
    expect(acknowledged.slots.done).toBeLessThan(moved.length);
    await stack.control.kill();
    await rm(aofDir, { recursive: true, force: true });
    await cp(snapshot, aofDir, { recursive: true });
    await stack.control.restart();

    const after = await readMigrationOnceBack(id);
    // The rollback really lost finished slots: the record is behind what the API said before.
    expect(after.slots.done).toBeLessThan(acknowledged.slots.done!);
    await expectSettled(id, new Map(moved.map((slot) => [slot, receiver.id])), 240_000, { writesLost: true });
  }, 360_000);

  it('leaves both worker processes up through the outages, saying so, and they stop cleanly', async () => {
    const logs = await Promise.all(workers.map((_, index) => workerLog(index)));
    for (const text of logs) {
      expect(text.match(/control Redis unreachable/g)).toHaveLength(2);
      expect(text.match(/control Redis reachable again/g)).toHaveLength(2);
      expect(text).not.toMatch(/slot failed/);
      expect(text).not.toContain(CONTROL_PASSWORD);
    }
    expect(workers.map((child) => child.exitCode)).toEqual([null, null]);
    await stopProcesses(workers);
    expect(await exitCodes).toEqual([0, 0]);
  });

  /** Polls until at least a tenth of the slots are done, and not all. */

  /** The API reconnects on its own (retryStrategy): the first 200 after the restart. */
  async function readMigrationOnceBack(id: string): Promise<MigrationView> {
    const deadline = Date.now() + 10_000;
    for (;;) {
      const response = await inject('GET', `/v1/migrations/${id}`);
      if (response.statusCode === 200) return response.json();
      expect(response.statusCode, response.body).toBe(503);
      if (Date.now() > deadline) throw new Error(`API still failing: ${response.body}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  /** For a migration that did not end: each unfinished slot's step, opener stamp and job state. */
  async function describeUnfinished(id: string, slots: readonly number[]): Promise<string> {
    const control = stack.control.client();
    const connection = { host: stack.control.host, port: stack.control.port, password: CONTROL_PASSWORD };
    const migrate = new Queue(QueueName.MigrateSlot, { connection, prefix: stack.config.queuePrefix });
    try {
      const steps = await new MigrationStore(control, stack.config.queuePrefix).slotSteps(id);
      // Read as they are: the store's reader of the stamps (openingStates) closes free slots to openers.
      const stamps = await control.hgetall(`${stack.config.queuePrefix}:migration:${id}:task-claims`);
      const lines: string[] = [];
      for (const slot of slots) {
        if (steps.get(slot) === SlotStep.Done) continue;
        const job = await migrate.getJob(migrateJobId(id, slot));
        const state = job ? await job.getState() : 'no job';
        lines.push(
          `slot ${slot}: step ${steps.get(slot)}, stamp ${stamps[slot] ?? '-'}, job ${state}, attempts ${job?.attemptsMade}, ` +
            `stalled ${job?.stalledCounter}, processedOn ${job?.processedOn}, finishedOn ${job?.finishedOn}`,
        );
      }
      return lines.join('\n');
    } finally {
      control.disconnect();
      await migrate.close();
    }
  }

  /** Slots of a migration that a finalize job said it ended, from the workers' logs. */
  async function slotsFinalizedInLogs(id: string): Promise<Set<number>> {
    const slots = new Set<number>();
    for (const text of await Promise.all(workers.map((_, index) => workerLog(index)))) {
      for (const line of text.split('\n')) {
        if (!line.includes(id) || !line.includes('"slot done"')) continue;
        const entry = JSON.parse(line) as { migrationId?: string; phase?: string; slot?: number };
        if (entry.migrationId === id && entry.phase === 'finalize' && entry.slot !== undefined)
          slots.add(entry.slot);
      }
    }
    return slots;
  }

  /**
   * The migration ended done; every key is intact; every node, replicas included, gives each moved
   * slot to its target and has none open; no claim is left; each slot's two jobs completed. With
   * writesLost, a slot's finalize job may be gone: the rollback lost it after it ended its slots,
   * before the crash or across it (then it finds its own key gone, `Missing key for job`, and cannot
   * complete), and the slot's migrate job, run again or handed on, adds no other for an ended slot.
   * Such a slot must have been ended by a finalize job, by the workers' logs.
   */
  async function expectSettled(
    id: string,
    owners: ReadonlyMap<number, string>,
    timeoutMs = 180_000,
    { writesLost = false } = {},
  ) {
    const final = await waitForMigration(stack, id, timeoutMs).catch(async (error: Error) => {
      throw new Error(`${error.message}\n${await describeUnfinished(id, [...owners.keys()])}`);
    });
    expect(final).toMatchObject({ state: 'done', errors: [] });
    expect(final.slots.done).toBe(owners.size);
    expect((await inject('GET', '/readyz')).statusCode).toBe(200);

    const verification = await verifyDataset(stack.cluster.seedUrl, manifest);
    expect(verification).toMatchObject({ missingCount: 0, wrongValueCount: 0, wrongTtlCount: 0 });
    await expectOwnersEverywhere(stack.cluster, owners);

    const control = stack.control.client();
    const connection = { host: stack.control.host, port: stack.control.port, password: CONTROL_PASSWORD };
    const migrate = new Queue(QueueName.MigrateSlot, { connection, prefix: stack.config.queuePrefix });
    const finalize = new Queue<FinalizeJobData>(QueueName.FinalizeSlot, {
      connection,
      prefix: stack.config.queuePrefix,
    });
    try {
      expect(await control.hlen(`${stack.config.queuePrefix}:active-slots:default`)).toBe(0);
      const slots = [...owners.keys()];
      const states = await Promise.all(slots.map((slot) => migrate.getJobState(migrateJobId(id, slot))));
      expect(new Set(states)).toEqual(new Set(['completed']));
      // Every slot is in a completed finalize job (a batch of the slots drained together).
      const finalizers = await finalize.getJobs(['completed']);
      const finalized = new Set(
        finalizers
          .filter((job) => job.data.migrationId === id)
          .flatMap((job) => job.data.slots.map((s) => s.slot)),
      );
      const unfinalized = slots.filter((slot) => !finalized.has(slot));
      if (writesLost) {
        const inLogs = await slotsFinalizedInLogs(id);
        expect(unfinalized.filter((slot) => !inLogs.has(slot))).toEqual([]);
      } else {
        expect(unfinalized).toEqual([]);
      }
      for (const queue of [migrate, finalize]) {
        expect(await queue.getJobCounts('active', 'waiting', 'delayed', 'failed'), queue.name).toMatchObject({
          active: 0,
          waiting: 0,
          delayed: 0,
          failed: 0,
        });
      }
    } finally {
      control.disconnect();
      await Promise.all([migrate.close(), finalize.close()]);
    }
  }
});
