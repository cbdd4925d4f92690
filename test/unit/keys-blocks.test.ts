/**
 * The keys engine's blocks (keys-mover.ts) on the in-memory cluster: the job of a block's first slot
 * opens the block, moves its keys and hands its slots to the finalizer; their own jobs end without a
 * command to the cluster; what the opener cannot finish goes back to their own jobs.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { MigrationControl } from '../../src/shared/domain/migration.js';
import { SlotStep } from '../../src/shared/domain/slot-migration.js';
import { OpeningState } from '../../src/shared/queue/migration-store.js';
import type { SlotJobData } from '../../src/shared/queue/names.js';
import { createFinalizeProcessor, createMigrateProcessor } from '../../src/workers/processors.js';
import type { OpenAhead } from '../../src/workers/slot-run.js';
import { FaultReply, MemoryCluster, WRITE_METHODS } from '../support/memory-cluster.js';
import { MemorySlotRecords } from '../support/memory-records.js';
import {
  FakeJob,
  MIGRATION_ID,
  movedProblems,
  type Processors,
  processorDeps,
  runAttempt,
  type SeededSlot,
  seedSlot,
  tagServedBy,
} from '../support/slot-harness.js';

let cluster: MemoryCluster;
let store: MemorySlotRecords;

beforeEach(() => {
  cluster = new MemoryCluster({ masters: 3, replicasPerMaster: 1 });
  store = new MemorySlotRecords();
});

afterEach(() => cluster.close());

/** The record's side of blocks, in memory: claims stamped held, then handed on or given back. */
class MemoryOpenAhead implements OpenAhead {
  readonly stamps = new Map<number, OpeningState>();

  constructor(
    private readonly block: readonly number[],
    private readonly processors: Processors,
  ) {}

  async claim(data: SlotJobData): Promise<readonly number[]> {
    if (data.slot !== this.block[0]) return [];
    const claimed = this.block.slice(1);
    for (const slot of claimed) this.stamps.set(slot, OpeningState.Held);
    return claimed;
  }

  async release(_data: SlotJobData, slots: readonly number[]): Promise<void> {
    for (const slot of slots) this.stamps.set(slot, OpeningState.Free);
  }

  async renew(): Promise<void> {}

  async handOn(data: SlotJobData, slots: readonly number[]): Promise<void> {
    for (const slot of slots) await this.processors.deps.enqueueFinalize({ ...data, slot });
    for (const slot of slots) this.stamps.set(slot, OpeningState.HandedOn);
  }

  async settled(data: SlotJobData): Promise<OpeningState> {
    // The tests run the jobs one after another: a slot is never held when its job asks.
    const state = this.stamps.get(data.slot) ?? OpeningState.Free;
    expect(state).not.toBe(OpeningState.Held);
    return state;
  }
}

function migrateJob(data: SlotJobData): FakeJob<SlotJobData> {
  return new FakeJob(data, `${data.migrationId}-slot-${data.slot}`, 8);
}

/** One finalize job of every slot handed to the finalizer. */
function finalizeAll(deps: Processors['deps'], slots: readonly SlotJobData[]) {
  const job = new FakeJob({ migrationId: MIGRATION_ID, cluster: slots[0]!.cluster, slots }, 'final', 8);
  return runAttempt(createFinalizeProcessor(deps), job);
}

/** A block of four slots of one source, all moving to the same target. */
function seedBlock(): SeededSlot[] {
  const first = seedSlot(cluster, { tag: 'block-0' });
  const source = cluster.node(first.data.source.id);
  const others = ['block-x', 'block-y', 'block-z'].map((prefix) =>
    seedSlot(cluster, {
      tag: tagServedBy(cluster, source.port, prefix),
      targetId: first.data.target.id,
      keys: prefix === 'block-y' ? 250 : 60,
    }),
  );
  return [first, ...others];
}

/** A seeded block, the processors' deps, and the in-memory record side of blocks they use. */
function blockWithOpener() {
  const block = seedBlock();
  const processors = processorDeps(cluster, store);
  const ahead = new MemoryOpenAhead(
    block.map((seeded) => seeded.slot),
    processors,
  );
  return { block, processors, ahead, deps: { ...processors.deps, openAhead: ahead } };
}

describe('blocks of the keys engine', () => {
  it("the opener moves the block's keys and hands its slots on; their jobs end without a cluster command", async () => {
    const { block, processors, ahead, deps } = blockWithOpener();
    const opener = await runAttempt(createMigrateProcessor(deps), migrateJob(block[0]!.data));
    expect(opener.status).toBe('completed');
    // Every slot of the block drained, the opener's own and the three it opened (one with several
    // batches), and every one is in the finalizer's queue once.
    for (const seeded of block) {
      expect(cluster.node(seeded.data.source.id).countKeysInSlot(seeded.slot)).toBe(0);
    }
    expect(processors.finalizeQueue.map((data) => data.slot).sort()).toEqual(
      block.map((seeded) => seeded.slot).sort(),
    );
    expect(store.record(MIGRATION_ID).keysMoved).toBe(60 + 60 + 250 + 60);
    for (const seeded of block.slice(1)) {
      expect(ahead.stamps.get(seeded.slot), `slot ${seeded.slot}`).toBe(OpeningState.HandedOn);
    }

    const callsBefore = cluster.callsOf('readSlotView', 'countKeysInSlot', 'migrateNextBatch').length;
    for (const seeded of block.slice(1)) {
      const own = await runAttempt(createMigrateProcessor(deps), migrateJob(seeded.data));
      expect(own).toMatchObject({ status: 'completed', value: { keysMoved: 0 } });
    }
    expect(cluster.callsOf('readSlotView', 'countKeysInSlot', 'migrateNextBatch')).toHaveLength(callsBefore);
    expect(processors.finalizeQueue).toHaveLength(block.length);

    expect((await finalizeAll(deps, processors.finalizeQueue)).status).toBe('completed');
    for (const seeded of block) {
      expect(movedProblems(cluster, seeded, seeded.data.target.id)).toEqual([]);
      expect(store.stepOf(MIGRATION_ID, seeded.slot)).toBe(SlotStep.Done);
    }
  });

  it('a job run again by the stranded-slot sweep does not trust "handed on": it adds the finalize job that was lost', async () => {
    const { block, processors, ahead, deps } = blockWithOpener();
    expect((await runAttempt(createMigrateProcessor(deps), migrateJob(block[0]!.data))).status).toBe(
      'completed',
    );
    const handed = block[1]!;
    expect(ahead.stamps.get(handed.slot)).toBe(OpeningState.HandedOn);
    // A control Redis restart lost the finalize jobs; the stamps, sent across the restart, stayed.
    processors.finalizeQueue.splice(0);

    // Its own job, as it first ran: ends at the stamp, adds nothing.
    expect((await runAttempt(createMigrateProcessor(deps), migrateJob(handed.data))).status).toBe(
      'completed',
    );
    expect(processors.finalizeQueue).toEqual([]);
    // Run again by the sweep: it looks at the cluster, finds the slot drained, adds its finalize job.
    const rerun = { ...handed.data, rerun: 1 };
    const again = await runAttempt(createMigrateProcessor(deps), migrateJob(rerun));
    expect(again).toMatchObject({ status: 'completed', value: { keysMoved: 0 } });
    expect(processors.finalizeQueue).toEqual([rerun]);
    expect((await finalizeAll(deps, processors.finalizeQueue)).status).toBe('completed');
    expect(movedProblems(cluster, handed, handed.data.target.id)).toEqual([]);
    expect(store.stepOf(MIGRATION_ID, handed.slot)).toBe(SlotStep.Done);
  });

  it('a slot whose drain fails in the opener goes back to its own job, which moves it', async () => {
    const { block, processors, ahead, deps } = blockWithOpener();
    const broken = block[2]!;
    cluster.failNext('migrateNextBatch', FaultReply.TryAgain, { slot: broken.slot });
    const opener = await runAttempt(createMigrateProcessor(deps), migrateJob(block[0]!.data));
    expect(opener.status).toBe('completed');
    // The one before it was handed on; it and the one after it went back.
    expect(ahead.stamps.get(block[1]!.slot)).toBe(OpeningState.HandedOn);
    expect(ahead.stamps.get(broken.slot)).toBe(OpeningState.Free);
    expect(ahead.stamps.get(block[3]!.slot)).toBe(OpeningState.Free);
    expect(processors.finalizeQueue.map((data) => data.slot).sort()).toEqual(
      [block[0]!.slot, block[1]!.slot].sort(),
    );

    for (const seeded of block.slice(1)) {
      const own = await runAttempt(createMigrateProcessor(deps), migrateJob(seeded.data));
      expect(own.status).toBe('completed');
    }
    expect(processors.finalizeQueue).toHaveLength(block.length);
    expect((await finalizeAll(deps, processors.finalizeQueue)).status).toBe('completed');
    for (const seeded of block) expect(movedProblems(cluster, seeded, seeded.data.target.id)).toEqual([]);
  });

  it('slots whose hand-on fails go back to their own jobs, which finalize them', async () => {
    const { block, processors, ahead, deps } = blockWithOpener();
    let refused = 0;
    const failingAhead: OpenAhead = {
      claim: (data) => ahead.claim(data),
      release: (data, slots) => ahead.release(data, slots),
      renew: async () => undefined,
      settled: (data) => ahead.settled(data),
      handOn: async () => {
        refused++;
        throw new Error('control Redis went away');
      },
    };
    const opener = await runAttempt(
      createMigrateProcessor({ ...deps, openAhead: failingAhead }),
      migrateJob(block[0]!.data),
    );
    expect(opener.status).toBe('completed');
    expect(refused).toBe(1);
    // Drained, but not handed on: their own jobs take them, and no finalize job holds them yet.
    for (const seeded of block.slice(1)) expect(ahead.stamps.get(seeded.slot)).toBe(OpeningState.Free);
    expect(processors.finalizeQueue.map((data) => data.slot)).toEqual([block[0]!.slot]);

    for (const seeded of block.slice(1)) {
      const own = await runAttempt(createMigrateProcessor(deps), migrateJob(seeded.data));
      expect(own).toMatchObject({ status: 'completed', value: { keysMoved: 0 } });
    }
    expect(processors.finalizeQueue).toHaveLength(block.length);
    expect((await finalizeAll(deps, processors.finalizeQueue)).status).toBe('completed');
    for (const seeded of block) expect(movedProblems(cluster, seeded, seeded.data.target.id)).toEqual([]);
  });

  it('a job that waited for its opener and finds the migration paused hands its slot back untouched', async () => {
    const [seeded] = seedBlock();
    const processors = processorDeps(cluster, store);
    const waits: string[] = [];
    const ahead: OpenAhead = {
      claim: async () => [],
      release: async () => undefined,
      renew: async () => undefined,
      handOn: async () => undefined,
      // The opener gave the slot back because the operator paused meanwhile.
      settled: async (_data, onHeld) => {
        onHeld();
        processors.control = MigrationControl.Pause;
        return OpeningState.Free;
      },
    };
    const taskWait = { onWait: () => waits.push('wait'), onWaitEnd: () => waits.push('end') };
    const outcome = await runAttempt(
      createMigrateProcessor({ ...processors.deps, openAhead: ahead, taskWait }),
      migrateJob(seeded!.data),
    );
    expect(outcome.status).toBe('delayed');
    expect(waits).toEqual(['wait', 'end']);
    expect(cluster.callsOf(...WRITE_METHODS, 'migrateNextBatch')).toEqual([]);
  });
});
