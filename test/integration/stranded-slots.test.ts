/**
 * The sweep for stranded slots on a real control Redis with real BullMQ queues: the state a restart
 * that lost writes leaves (a migrate job completed, its slot not ended, no finalize job for it) is
 * found and its job put back in the queue; a slot whose job failed without recording it ends failed
 * with the job's reason; a slot ended, a slot whose finalize job waits, and a slot whose migrate job
 * waits are left alone; and only one worker sweeps per period. Then a worker of a real stack, whose
 * slot lost the writes that ended it, runs its job again and the migration ends done, also when the
 * opener's "handed on" for the slot outlived them.
 */
import { Queue, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { startControlRedis } from '../../src/sandbox/index.js';
import type { RedisProcess } from '../../src/sandbox/redis-process.js';
import { SlotStep } from '../../src/shared/domain/slot-migration.js';
import { createLogger } from '../../src/shared/logger.js';
import { createMetrics } from '../../src/shared/metrics.js';
import { finalizeJob, slotJobData } from '../../src/shared/queue/jobs.js';
import { MigrationStore } from '../../src/shared/queue/migration-store.js';
import {
  type FinalizeJobData,
  migrateJobId,
  QueueName,
  type SlotJobData,
} from '../../src/shared/queue/names.js';
import { type StrandedSlotDeps, sweepStrandedSlots } from '../../src/workers/stranded-slots.js';
import {
  expectOwnersEverywhere,
  type Stack,
  startReshard,
  startStack,
  waitForMigration,
} from './support/stack.js';

const PREFIX = 'stranded-test';
const ID = 'mig-stranded';
const source = { id: 'a'.repeat(40), host: '127.0.0.1', port: 7000 };
const target = { id: 'b'.repeat(40), host: '127.0.0.1', port: 7001 };
const policy = { attempts: 3, backoffMs: 100 };

describe('the sweep for slots stranded by lost writes', () => {
  let control: RedisProcess;
  let redis: Redis;
  let migrateQueue: Queue<SlotJobData>;
  let finalizeQueue: Queue<FinalizeJobData>;
  let deps: StrandedSlotDeps;
  let store: MigrationStore;

  beforeAll(async () => {
    control = await startControlRedis();
    const connection = { host: control.host, port: control.port };
    redis = new Redis(connection);
    migrateQueue = new Queue(QueueName.MigrateSlot, { connection, prefix: PREFIX });
    finalizeQueue = new Queue(QueueName.FinalizeSlot, { connection, prefix: PREFIX });
    store = new MigrationStore(redis, PREFIX);
    deps = {
      control: redis,
      store,
      migrateQueue,
      finalizeQueue,
      clusters: ['default'],
      lockKey: `${PREFIX}:stranded-sweep`,
      log: createLogger({ level: 'silent', name: 'stranded-test' }),
      metrics: createMetrics({ defaultMetrics: false }),
    };

    // Slots 1-6 of one migration, claimed in the cluster's active-slots hash as the API does.
    const slots = [1, 2, 3, 4, 5, 6];
    const moves = slots.map((slot) => ({ slot, source, target }));
    await store.create({ id: ID, cluster: 'default', kind: 'migrations', request: {}, moves });
    expect(await store.claimSlots('default', ID, slots)).toEqual([]);
    const job = (slot: number) => {
      const data = slotJobData(ID, 'default', { slot, source, target });
      return { name: 'migrate', data, opts: { jobId: migrateJobId(ID, slot) } };
    };
    // 1-4 run to completion: 1 ends done; 2 was stranded by a lost write (its finalize job and its
    // steps gone); 3 has its finalize job waiting; 4 ended failed. 5 is still waiting in the queue.
    // 6's job fails as after too many stalls: nothing recorded it.
    await migrateQueue.addBulk([1, 2, 3, 4, 6].map(job));
    const worker = new Worker<SlotJobData>(
      QueueName.MigrateSlot,
      async (current) => {
        if (current.data.slot === 6) throw new Error('job stalled more than allowable limit');
        return { keysMoved: 0 };
      },
      { connection, prefix: PREFIX },
    );
    await vi.waitFor(async () => expect(await migrateQueue.getCompletedCount()).toBe(4), { timeout: 10_000 });
    await vi.waitFor(async () => expect(await migrateQueue.getFailedCount()).toBe(1), { timeout: 10_000 });
    await worker.close();
    await migrateQueue.add('migrate', job(5).data, job(5).opts);
    await store.setSlotStep(ID, 'default', 1, SlotStep.Done);
    await store.setSlotStep(ID, 'default', 4, SlotStep.Failed);
    await store.setSlotStep(ID, 'default', 3, SlotStep.Migrating);
    const finalize = finalizeJob({ migrationId: ID, cluster: 'default', slots: [job(3).data] }, policy);
    await finalizeQueue.add(finalize.name, finalize.data, finalize.opts);
  });

  afterAll(async () => {
    await migrateQueue?.close();
    await finalizeQueue?.close();
    redis?.disconnect();
    await control?.stop();
  });

  it('puts back the job of the stranded slot, ends the failed one, once per period however many workers look', async () => {
    // Two workers look at once: one holds the period's lock, the other does nothing.
    const [first, second] = await Promise.all([
      sweepStrandedSlots(deps, 10_000, 50),
      sweepStrandedSlots(deps, 10_000, 50),
    ]);
    expect([...first, ...second]).toEqual([
      { migrationId: ID, cluster: 'default', job: 'completed', slots: [2] },
      { migrationId: ID, cluster: 'default', job: 'failed', slots: [6] },
    ]);
    const states = await Promise.all(
      [1, 2, 3, 4, 5, 6].map((slot) => migrateQueue.getJobState(migrateJobId(ID, slot))),
    );
    expect(states).toEqual(['completed', 'waiting', 'completed', 'completed', 'waiting', 'failed']);
    const record = await store.get(ID);
    expect(record?.errors).toEqual([
      expect.objectContaining({
        slot: 6,
        code: 'JOB_FAILED',
        message: expect.stringContaining('job stalled more than allowable limit'),
      }),
    ]);
    expect((await store.slotSteps(ID)).get(6)).toBe(SlotStep.Failed);
    const metrics = await deps.metrics.slotsStranded.get();
    expect(metrics.values).toEqual([{ labels: { cluster: 'default' }, value: 2 }]);

    // Within the period no worker sweeps again; after it, the put-back job is no longer completed.
    expect(await sweepStrandedSlots(deps, 10_000, 50)).toEqual([]);
    await redis.del(deps.lockKey);
    expect(await sweepStrandedSlots(deps, 10_000, 50)).toEqual([]);
  });
});

describe('a worker, after the control Redis lost the end of a slot', () => {
  let stack: Stack;

  beforeAll(async () => {
    stack = await startStack({
      replicasPerMaster: 0,
      workerOptions: { strandedSweep: { periodMs: 500, confirmMs: 200 } },
    });
  });

  afterAll(async () => {
    await stack?.stop();
  });

  /**
   * A one-slot reshard ends done; then a restart loses the writes that ended it, and `lose` whatever
   * else it lost or kept; the sweep must have the slot's job run again and the migration end done.
   */
  async function loseTheEndAndRecover(lose: (control: Redis, id: string, slot: number) => Promise<void>) {
    const [from, to] = await stack.cluster.masters();
    // One slot: its first finalize job held it alone, so the re-run asks for a job of the same id.
    const { id, moved } = await startReshard(stack, { from: [from!.id], to: to!.id, slots: 1 });
    expect(await waitForMigration(stack, id)).toMatchObject({ state: 'done', errors: [] });
    const slot = moved[0]!;
    const prefix = stack.config.queuePrefix;
    const connection = { host: stack.control.host, port: stack.control.port };
    const migrate = new Queue<SlotJobData>(QueueName.MigrateSlot, { connection, prefix });
    const control = stack.control.client();
    try {
      const finishedOn = (await migrate.getJob(migrateJobId(id, slot)))!.finishedOn!;
      // What a restart that lost the slot's last writes leaves: its migrate job completed, its step
      // and its claim from before the finalizer ended it.
      await control.hset(`${prefix}:migration:${id}:slots`, String(slot), SlotStep.Migrating);
      await control.hset(`${prefix}:active-slots:default`, String(slot), id);
      await lose(control, id, slot);

      expect(await waitForMigration(stack, id, 20_000)).toMatchObject({ state: 'done', errors: [] });
      const again = (await migrate.getJob(migrateJobId(id, slot)))!;
      expect(again.processedOn).toBeGreaterThan(finishedOn);
      // Counted, so its finalize job took an id of its own, not the completed one's.
      expect(again.data.rerun).toBe(1);
      expect(await again.getState()).toBe('completed');
      expect(await control.hlen(`${prefix}:active-slots:default`)).toBe(0);
      await expectOwnersEverywhere(stack.cluster, new Map(moved.map((moving) => [moving, to!.id])));
    } finally {
      control.disconnect();
      await migrate.close();
    }
  }

  it('runs the completed job of the slot again, and the migration ends done', async () => {
    await loseTheEndAndRecover(async (_control, id) => {
      const view = await stack.api.app.inject({ method: 'GET', url: `/v1/migrations/${id}` });
      expect(view.json()).toMatchObject({ state: 'running' });
    });
    const stranded = await stack.workers[0]!.metrics.slotsStranded.get();
    expect(stranded.values).toEqual([{ labels: { cluster: 'default' }, value: 1 }]);
  });

  it('does not take the lost slot for handed on by its opener when only the stamp survived', async () => {
    // The restart lost the finalize job too; the opener's "handed on", sent across the restart,
    // arrived. Taken at its word, the re-run would end at once, again at every sweep.
    await loseTheEndAndRecover((control, id, slot) =>
      new MigrationStore(control, stack.config.queuePrefix).handOn(id, [slot]),
    );
  });
});
