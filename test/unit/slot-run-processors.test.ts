/**
 * The two slot processors (createMigrateProcessor, createFinalizeProcessor) on the in-memory
 * cluster, with a stand-in for BullMQ's Job: what the operator asks (pause, cancel), how a finalize
 * job of several slots retries only those that failed retryably, and what the record says after
 * each error of the policy.
 */
import { UnrecoverableError } from 'bullmq';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { MigrationControl } from '../../src/shared/domain/migration.js';
import {
  type SlotAction,
  SlotActionKind,
  type SlotObservation,
  SlotPhase,
  SlotStep,
} from '../../src/shared/domain/slot-migration.js';
import { ErrorCode, SlotfleetError } from '../../src/shared/errors.js';
import type { Metrics } from '../../src/shared/metrics.js';
import type { FinalizeJobData, SlotJobData } from '../../src/shared/queue/names.js';
import {
  createFinalizeProcessor,
  createMigrateProcessor,
  PAUSE_RECHECK_MS,
} from '../../src/workers/processors.js';
import { driveSlot } from '../../src/workers/slot-run.js';
import { FaultReply, MemoryCluster, WRITE_METHODS } from '../support/memory-cluster.js';
import { MemorySlotRecords } from '../support/memory-records.js';
import {
  Crash,
  crashBefore,
  engineDeps,
  FakeJob,
  MIGRATION_ID,
  movedProblems,
  type Processors,
  processorDeps,
  runAttempt,
  type SeededSlot,
  seedSlot,
  tagServedBy,
  untouchedProblems,
} from '../support/slot-harness.js';

let cluster: MemoryCluster;
let store: MemorySlotRecords;

beforeEach(() => {
  cluster = new MemoryCluster({ masters: 3, replicasPerMaster: 1 });
  store = new MemorySlotRecords();
});

afterEach(() => cluster.close());

function migrateJob(data: SlotJobData, attempts = 8): FakeJob<SlotJobData> {
  return new FakeJob(data, `${data.migrationId}-slot-${data.slot}`, attempts);
}

function finalizeJob(slots: readonly SlotJobData[], attempts = 8): FakeJob<FinalizeJobData> {
  const data = { migrationId: MIGRATION_ID, cluster: slots[0]!.cluster, slots };
  return new FakeJob(data, `${MIGRATION_ID}-final-${slots[0]!.slot}-${slots.length}`, attempts);
}

async function finished(metrics: Metrics, result: string): Promise<number> {
  const metric = await metrics.slotsFinished.get();
  return metric.values
    .filter((value) => value.labels.result === result)
    .reduce((sum, value) => sum + value.value, 0);
}

/** The migrate job, then the finalize job of the slot it handed on, each attempt as BullMQ runs it. */
async function runBothJobs(processors: Processors, data: SlotJobData) {
  const migrated = await runAttempt(createMigrateProcessor(processors.deps), migrateJob(data));
  expect(migrated.status).toBe('completed');
  expect(processors.finalizeQueue).toEqual([data]);
  return runAttempt(createFinalizeProcessor(processors.deps), finalizeJob(processors.finalizeQueue));
}

describe('the migrate and finalize processors', () => {
  it('move a slot: the migrate job hands it to the finalizer, which finishes it', async () => {
    const seeded = seedSlot(cluster, { tag: 'jobs' });
    const processors = processorDeps(cluster, store);
    expect(await runBothJobs(processors, seeded.data)).toEqual({
      status: 'completed',
      value: { keysMoved: 0, slots: 1 },
    });
    expect(movedProblems(cluster, seeded, seeded.data.target.id)).toEqual([]);
    expect(store.stepOf(MIGRATION_ID, seeded.slot)).toBe(SlotStep.Done);
    expect(await finished(processors.metrics, 'done')).toBe(1);
  });
});

describe('slots opened ahead by another job', () => {
  /** An opener still writing for the slot during the first `polls` looks, then done. */
  function openerFor(slot: number, polls: number) {
    let looks = 0;
    const seenAtLooks: number[] = [];
    return {
      seenAtLooks,
      openingsInFlight: async (_id: string, slots: readonly number[]) => {
        looks++;
        seenAtLooks.push(cluster.callsOf('setSlotNode', 'setSlotStable').length);
        return looks <= polls ? slots.filter((candidate) => candidate === slot) : [];
      },
    };
  }

  it('the finalizer assigns no slot while its opener may still be writing for it', async () => {
    const seeded = seedSlot(cluster, { tag: 'opened-ahead' });
    const processors = processorDeps(cluster, store);
    const migrated = await runAttempt(createMigrateProcessor(processors.deps), migrateJob(seeded.data));
    expect(migrated.status).toBe('completed');
    const opener = openerFor(seeded.slot, 3);
    const finalized = await runAttempt(
      createFinalizeProcessor({ ...processors.deps, openings: opener }),
      finalizeJob(processors.finalizeQueue),
    );
    expect(finalized.status).toBe('completed');
    // Four looks, the last one clear, and no SETSLOT NODE before it.
    expect(opener.seenAtLooks).toEqual([0, 0, 0, 0]);
    expect(movedProblems(cluster, seeded, seeded.data.target.id)).toEqual([]);
  });

  it('a cancelled slot is not dropped while its opener may still be writing for it', async () => {
    const seeded = seedSlot(cluster, { tag: 'opened-ahead-cancel' });
    await cluster.setSlotImporting(seeded.data.target, seeded.slot, seeded.data.source.id);
    const processors = processorDeps(cluster, store);
    processors.control = MigrationControl.Cancel;
    const opener = openerFor(seeded.slot, 2);
    const result = await runAttempt(
      createMigrateProcessor({ ...processors.deps, openings: opener }),
      migrateJob(seeded.data),
    );
    expect(result).toMatchObject({ status: 'completed', value: { cancelled: true } });
    expect(opener.seenAtLooks).toEqual([0, 0, 0]);
    expect(cluster.callsOf('setSlotStable')).toHaveLength(1);
    expect(untouchedProblems(cluster, seeded)).toEqual([]);
  });
});

describe('pause', () => {
  it.each([SlotPhase.Migrate, SlotPhase.Finalize])(
    'a %s job that starts while paused is postponed without a command',
    async (phase) => {
      const seeded = seedSlot(cluster, { tag: `paused-${phase}` });
      const processors = processorDeps(cluster, store);
      processors.control = MigrationControl.Pause;
      const job = phase === SlotPhase.Migrate ? migrateJob(seeded.data) : finalizeJob([seeded.data]);
      const before = Date.now();
      const outcome =
        phase === SlotPhase.Migrate
          ? await runAttempt(createMigrateProcessor(processors.deps), job as FakeJob<SlotJobData>)
          : await runAttempt(createFinalizeProcessor(processors.deps), job as FakeJob<FinalizeJobData>);
      expect(outcome).toEqual({ status: 'delayed' });
      expect(job.delayedUntil).toBeGreaterThanOrEqual(before + PAUSE_RECHECK_MS);
      expect(job.attemptsMade).toBe(0);
      expect(cluster.calls).toEqual([]);
      expect(untouchedProblems(cluster, seeded)).toEqual([]);
    },
  );

  it('a drain paused between batches: the job is postponed, the slot stays open and safe; resumed, it finishes', async () => {
    const seeded = seedSlot(cluster, { tag: 'paused-drain' });
    const processors = processorDeps(cluster, store);
    const stop = cluster.on('after', 'migrateNextBatch', () => {
      processors.control = MigrationControl.Pause;
    });
    const job = migrateJob(seeded.data);
    expect(await runAttempt(createMigrateProcessor(processors.deps), job)).toEqual({ status: 'delayed' });
    stop();
    // It stopped between batches: one batch went.
    expect(cluster.callsOf('migrateNextBatch')).toHaveLength(1);
    expect(job.delayedUntil).toBeDefined();
    expect(job.attemptsMade).toBe(0);
    expect(cluster.node(seeded.data.target.id).countKeysInSlot(seeded.slot)).toBe(7);
    expect(cluster.node(seeded.data.source.id).migrating.get(seeded.slot)).toBe(seeded.data.target.id);
    expect(cluster.node(seeded.data.target.id).importing.get(seeded.slot)).toBe(seeded.data.source.id);
    expect(store.record(MIGRATION_ID).errors.size).toBe(0);
    expect(store.stepOf(MIGRATION_ID, seeded.slot)).toBe(SlotStep.Draining);
    expect(processors.finalizeQueue).toEqual([]);

    processors.control = MigrationControl.Run;
    expect(await runAttempt(createMigrateProcessor(processors.deps), job)).toMatchObject({
      status: 'completed',
      value: { keysMoved: 60 - 7 },
    });
    const finalized = await runAttempt(
      createFinalizeProcessor(processors.deps),
      finalizeJob(processors.finalizeQueue),
    );
    expect(finalized.status).toBe('completed');
    expect(movedProblems(cluster, seeded, seeded.data.target.id)).toEqual([]);
    expect(store.record(MIGRATION_ID).keysMoved).toBe(60);
  });
});

describe('cancel', () => {
  /** How far the slot got before the cancel arrived. */
  const Reached = {
    Nothing: 'nothing done yet',
    Importing: 'the target IMPORTING, the source not yet MIGRATING',
    Draining: 'the source MIGRATING, keys split',
    Drained: 'drained, waiting for the finalizer',
  } as const;
  type Reached = (typeof Reached)[keyof typeof Reached];

  async function reach(reached: Reached, seeded: SeededSlot): Promise<void> {
    const deps = (beforeAction?: (action: SlotAction) => void) =>
      engineDeps(cluster, store, beforeAction ? { beforeAction } : {});
    const attempt = async (beforeAction?: (action: SlotAction) => void): Promise<void> => {
      await driveSlot(seeded.data, SlotPhase.Migrate, deps(beforeAction)).catch((error: unknown) => {
        if (!(error instanceof Crash)) throw error;
      });
    };
    switch (reached) {
      case Reached.Nothing:
        return;
      case Reached.Importing:
        return attempt(crashBefore(SlotActionKind.SetMigrating).hook);
      case Reached.Draining: {
        const stop = cluster.on('before', 'migrateNextBatch', (call) => {
          if (call.count === 3) throw new Crash('worker died mid-drain');
        });
        await attempt();
        stop();
        return;
      }
      case Reached.Drained:
        await attempt();
        return;
      default: {
        const never: never = reached;
        throw new Error(`unhandled ${never}`);
      }
    }
  }

  it.each<[Reached, 'dropped' | 'finished']>([
    [Reached.Nothing, 'dropped'],
    [Reached.Importing, 'dropped'],
    [Reached.Draining, 'finished'],
    [Reached.Drained, 'finished'],
  ])('with %s: the slot is %s', async (reached, outcome) => {
    const seeded = seedSlot(cluster, { tag: `cancel-${reached}` });
    await reach(reached, seeded);
    const processors = processorDeps(cluster, store);
    processors.control = MigrationControl.Cancel;
    const writesBefore = cluster.callsOf(...WRITE_METHODS).length;
    if (outcome === 'dropped') {
      const cancelled = await runAttempt(createMigrateProcessor(processors.deps), migrateJob(seeded.data));
      expect(cancelled).toEqual({ status: 'completed', value: { keysMoved: 0, cancelled: true } });
      // Only the target's IMPORTING was undone, if there was one.
      const writes = cluster.callsOf(...WRITE_METHODS).slice(writesBefore);
      expect(writes.map((call) => [call.method, call.node.port])).toEqual(
        reached === Reached.Importing ? [['setSlotStable', seeded.data.target.port]] : [],
      );
      expect(untouchedProblems(cluster, seeded)).toEqual([]);
      expect(store.stepOf(MIGRATION_ID, seeded.slot)).toBe(SlotStep.Cancelled);
      expect(await finished(processors.metrics, 'cancelled')).toBe(1);
      expect(processors.finalizeQueue).toEqual([]);
      expect(store.stateOf(MIGRATION_ID, 1)).toBe('cancelled');
    } else {
      // Stopping it halfway would leave its keys split across two nodes: it is finished instead.
      expect(await runBothJobs(processors, seeded.data)).toMatchObject({ status: 'completed' });
      expect(movedProblems(cluster, seeded, seeded.data.target.id)).toEqual([]);
      expect(store.stepOf(MIGRATION_ID, seeded.slot)).toBe(SlotStep.Done);
      expect(await finished(processors.metrics, 'cancelled')).toBe(0);
      expect(store.stateOf(MIGRATION_ID, 1)).toBe('done');
    }
  });

  it('a slot cancelled by its migrate job is counted once when its finalizer comes by too', async () => {
    const seeded = seedSlot(cluster, { tag: 'cancel-twice' });
    const processors = processorDeps(cluster, store);
    processors.control = MigrationControl.Cancel;
    await runAttempt(createMigrateProcessor(processors.deps), migrateJob(seeded.data));
    const finalized = await runAttempt(createFinalizeProcessor(processors.deps), finalizeJob([seeded.data]));
    expect(finalized).toEqual({ status: 'completed', value: { keysMoved: 0, slots: 1 } });
    expect(await finished(processors.metrics, 'cancelled')).toBe(1);
    expect(store.record(MIGRATION_ID).writes.filter((write) => write.step === SlotStep.Cancelled)).toEqual([
      expect.objectContaining({ written: true }),
      expect.objectContaining({ written: false }),
    ]);
  });
});

describe('a finalize job of several slots, some failing', () => {
  /** Three slots of one source drained to the same target, ready for one finalize job. */
  async function drainedSlots(): Promise<SeededSlot[]> {
    const seeded = [0, 1, 2].map((index) =>
      seedSlot(cluster, { tag: tagServedBy(cluster, 7000, `batch${index}`), keys: 20 }),
    );
    expect(new Set(seeded.map((slot) => slot.slot)).size).toBe(3);
    for (const { data } of seeded) await driveSlot(data, SlotPhase.Migrate, engineDeps(cluster, store));
    return seeded;
  }

  /** A permanent failure of one slot's assignment, as the real-server test makes it. */
  function brokenSlot(slot: number) {
    return (action: SlotAction, observation: SlotObservation) => {
      if (action.kind === SlotActionKind.AssignTarget && observation.slot === slot) {
        throw new SlotfleetError(ErrorCode.SlotConflict, `test: slot ${slot} was opened by someone else`);
      }
    };
  }

  it('retries a slot that failed retryably alone; the others stay done, a broken one stays failed', async () => {
    const [done, flaky, broken] = await drainedSlots();
    const target = done!.data.target;
    // The flaky slot's first SETSLOT NODE on the target is lost with its connection.
    cluster.failNext('setSlotNode', FaultReply.Connection, { slot: flaky!.slot, nodeId: target.id });
    const processors = processorDeps(cluster, store, { beforeAction: brokenSlot(broken!.slot) });
    const job = finalizeJob([done!.data, flaky!.data, broken!.data]);
    const processor = createFinalizeProcessor(processors.deps);

    const first = await runAttempt(processor, job);
    expect(first).toMatchObject({ status: 'failed', retried: true });
    const failure = (first as { error: Error }).error as SlotfleetError;
    expect(failure).toBeInstanceOf(SlotfleetError);
    expect(failure.code).toBe(ErrorCode.Connection);
    expect(failure.message).toMatch(
      new RegExp(`^2 of 3 slots failed, first slot ${flaky!.slot}: CONNECTION: `),
    );
    // What is done stays done: the retry carries the flaky slot alone.
    expect(job.updates.map((data) => data.slots.map((slot) => slot.slot))).toEqual([[flaky!.slot]]);
    expect(store.stepOf(MIGRATION_ID, done!.slot)).toBe(SlotStep.Done);
    expect(store.stepOf(MIGRATION_ID, broken!.slot)).toBe(SlotStep.Failed);
    expect(store.record(MIGRATION_ID).errors.get(flaky!.slot)?.code).toBe(ErrorCode.Connection);

    const setSlotNodesBefore = cluster.callsOf('setSlotNode').length;
    expect(await runAttempt(processor, job)).toEqual({
      status: 'completed',
      value: { keysMoved: 0, slots: 1 },
    });
    // The retry touched the flaky slot only.
    expect(
      new Set(
        cluster
          .callsOf('setSlotNode')
          .slice(setSlotNodesBefore)
          .map((call) => call.slot),
      ),
    ).toEqual(new Set([flaky!.slot]));
    expect(job.attemptsMade).toBe(1);
    // The flaky slot's error is gone once it is done; the broken slot's stays, naming it.
    expect([...store.record(MIGRATION_ID).errors]).toEqual([
      [
        broken!.slot,
        { code: ErrorCode.SlotConflict, message: `test: slot ${broken!.slot} was opened by someone else` },
      ],
    ]);
    expect(store.stateOf(MIGRATION_ID, 3)).toBe('failed');
    for (const slot of [done!, flaky!]) expect(movedProblems(cluster, slot, target.id)).toEqual([]);
    // The broken slot is left open but safe: drained, MIGRATING on the source, IMPORTING on the target.
    const source = cluster.node(broken!.data.source.id);
    expect(source.migrating.get(broken!.slot)).toBe(target.id);
    expect(cluster.node(target.id).importing.get(broken!.slot)).toBe(source.id);
    expect(source.countKeysInSlot(broken!.slot)).toBe(0);
  });

  it('fails for good, naming the slot, when no slot is left to retry', async () => {
    const [done, , broken] = await drainedSlots();
    const processors = processorDeps(cluster, store, { beforeAction: brokenSlot(broken!.slot) });
    const job = finalizeJob([done!.data, broken!.data]);
    const outcome = await runAttempt(createFinalizeProcessor(processors.deps), job);
    expect(outcome).toMatchObject({ status: 'failed', retried: false });
    const failure = (outcome as { error: Error }).error;
    expect(failure).toBeInstanceOf(UnrecoverableError);
    expect(failure.message).toMatch(
      new RegExp(
        `^1 of 2 slots failed, first slot ${broken!.slot}: SLOT_CONFLICT: test: slot ${broken!.slot} was opened`,
      ),
    );
    expect(job.updates).toEqual([]);
    expect(store.stepOf(MIGRATION_ID, done!.slot)).toBe(SlotStep.Done);
    expect(store.stepOf(MIGRATION_ID, broken!.slot)).toBe(SlotStep.Failed);
  });

  it('a retryable failure on the last attempt fails the slot', async () => {
    const [done, flaky] = await drainedSlots();
    cluster.failNext('setSlotNode', FaultReply.ClusterDown, { slot: flaky!.slot });
    const processors = processorDeps(cluster, store);
    const job = finalizeJob([done!.data, flaky!.data], 1);
    const outcome = await runAttempt(createFinalizeProcessor(processors.deps), job);
    expect(outcome).toMatchObject({ status: 'failed', retried: false });
    expect((outcome as { error: Error }).error).toBeInstanceOf(UnrecoverableError);
    expect(store.stepOf(MIGRATION_ID, flaky!.slot)).toBe(SlotStep.Failed);
    expect(store.record(MIGRATION_ID).errors.get(flaky!.slot)?.code).toBe(ErrorCode.ClusterDown);
    expect(await finished(processors.metrics, 'failed')).toBe(1);
  });
});

describe('the error policy, as the record shows it', () => {
  it('BUSYKEY with another value fails the slot for good naming the key; posted again with replace: true, it moves', async () => {
    const seeded = seedSlot(cluster, { tag: 'policy-busy' });
    const key = seeded.keys[0]!;
    cluster.node(seeded.data.target.id).setSlotImporting(seeded.slot, seeded.data.source.id);
    cluster.plant(seeded.data.target.id, { ...key, value: { type: 'string', content: 'another value' } });
    const processors = processorDeps(cluster, store);
    const outcome = await runAttempt(createMigrateProcessor(processors.deps), migrateJob(seeded.data));
    expect(outcome).toMatchObject({ status: 'failed', retried: false });
    expect((outcome as { error: Error }).error).toBeInstanceOf(UnrecoverableError);
    expect(store.stepOf(MIGRATION_ID, seeded.slot)).toBe(SlotStep.Failed);
    const recorded = store.record(MIGRATION_ID).errors.get(seeded.slot);
    expect(recorded?.code).toBe(ErrorCode.BusyKey);
    expect(recorded?.message).toContain(JSON.stringify(key.name.toString()));

    const again = { ...seeded.data, migrationId: 'mig-memory-2', replace: true };
    expect(await runBothJobs(processors, again)).toMatchObject({ status: 'completed' });
    expect(movedProblems(cluster, seeded, seeded.data.target.id)).toEqual([]);
  });

  it('IOERR twice is retried: the error is recorded meanwhile, and cleared when the slot is done', async () => {
    const seeded = seedSlot(cluster, { tag: 'policy-ioerr' });
    cluster.failNext('migrateNextBatch', FaultReply.IoError, { slot: seeded.slot });
    cluster.failNext('migrate', FaultReply.IoError, { slot: seeded.slot });
    const processors = processorDeps(cluster, store);
    const job = migrateJob(seeded.data);
    const processor = createMigrateProcessor(processors.deps);
    expect(await runAttempt(processor, job)).toMatchObject({ status: 'failed', retried: true });
    expect(store.record(MIGRATION_ID).errors.get(seeded.slot)?.code).toBe(ErrorCode.IoError);
    expect(store.stepOf(MIGRATION_ID, seeded.slot)).not.toBe(SlotStep.Failed);
    expect(await runAttempt(processor, job)).toMatchObject({ status: 'completed' });
    const finalized = await runAttempt(
      createFinalizeProcessor(processors.deps),
      finalizeJob(processors.finalizeQueue),
    );
    expect(finalized.status).toBe('completed');
    expect(store.record(MIGRATION_ID).errors.size).toBe(0);
    expect(movedProblems(cluster, seeded, seeded.data.target.id)).toEqual([]);
  });
});
