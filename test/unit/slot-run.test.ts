/**
 * One slot's run through the state machine (driveSlot), on the in-memory cluster of
 * test/support/memory-cluster.ts: interrupted at every action and after every command, re-run after
 * a finished move, config epochs the target has not heard yet, failovers of the source and of the
 * target, BUSYKEY with the same or another value, IOERR then a lone key, and the retryable replies.
 * Each case checks what matters: every key with its value and TTL on the new owner, every node
 * naming it, nothing left open.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { SlotActionKind, SlotPhase, SlotStep } from '../../src/shared/domain/slot-migration.js';
import { ErrorCode, isRetryable, SlotfleetError } from '../../src/shared/errors.js';
import { createMetrics } from '../../src/shared/metrics.js';
import { OpeningState } from '../../src/shared/queue/migration-store.js';
import type { SlotJobData } from '../../src/shared/queue/names.js';
import { PauseRequested } from '../../src/workers/drain.js';
import { driveSlot, type OpenAhead, SlotRun, type SlotRunDeps } from '../../src/workers/slot-run.js';
import {
  FaultReply,
  keySlot,
  MemoryCluster,
  type MemoryNode,
  type PortMethod,
  WRITE_METHODS,
} from '../support/memory-cluster.js';
import { MemorySlotRecords } from '../support/memory-records.js';
import {
  Crash,
  crashBefore,
  type EngineOptions,
  engineDeps,
  MIGRATION_ID,
  movedProblems,
  retryLikeBullmq,
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

function deps(options: EngineOptions = {}): SlotRunDeps {
  return engineDeps(cluster, store, options);
}

async function runToEnd(data: SlotJobData, options: EngineOptions = {}) {
  const migrated = await driveSlot(data, SlotPhase.Migrate, deps(options));
  const finalized = await driveSlot(data, SlotPhase.Finalize, deps(options));
  return { keysMoved: migrated.keysMoved + finalized.keysMoved, step: finalized.step };
}

/** Both jobs, each retried as BullMQ does while its error is retryable. */
async function runLikeBullmq(data: SlotJobData, options: EngineOptions = {}): Promise<{ errors: Error[] }> {
  const errors: Error[] = [];
  for (const phase of [SlotPhase.Migrate, SlotPhase.Finalize]) {
    const attempts = await retryLikeBullmq(cluster, () => driveSlot(data, phase, deps(options)));
    errors.push(...attempts.errors);
  }
  return { errors };
}

function rejection(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => undefined,
    (error: unknown) => error,
  );
}

function replicaOf(master: { id: string }): MemoryNode {
  return cluster.replicasOf(master.id)[0]!;
}

describe('a slot move on the in-memory cluster', () => {
  it('moves every key with its value and TTL, counts them, and leaves every node agreeing', async () => {
    const seeded = seedSlot(cluster, { tag: 'plain' });
    // The migrate job ends drained: the source holds no key, both sides still open.
    const drained = await driveSlot(seeded.data, SlotPhase.Migrate, deps());
    expect(drained).toEqual({ keysMoved: 60, step: SlotStep.Migrating });
    expect(cluster.node(seeded.data.source.id).countKeysInSlot(seeded.slot)).toBe(0);
    expect(cluster.node(seeded.data.source.id).slotView(seeded.slot)).toMatchObject({
      owner: seeded.data.source.id,
      migratingTo: seeded.data.target.id,
    });
    expect(cluster.callsOf('migrateNextBatch')).toHaveLength(9);
    const result = await driveSlot(seeded.data, SlotPhase.Finalize, deps());
    expect(result).toEqual({ keysMoved: 0, step: SlotStep.Done });
    expect(movedProblems(cluster, seeded, seeded.data.target.id)).toEqual([]);
    expect(store.record(MIGRATION_ID)).toMatchObject({ keysMoved: 60, errors: new Map() });
    expect(store.stepOf(MIGRATION_ID, seeded.slot)).toBe(SlotStep.Done);
    // SETSLOT NODE on the importing target bumped its epoch above every other.
    const epochs = cluster.masters().map((node) => node.configEpoch);
    expect(cluster.node(seeded.data.target.id).configEpoch).toBe(Math.max(...epochs));
  });

  it('re-running both jobs of a finished slot sends no command that changes anything', async () => {
    const seeded = seedSlot(cluster, { tag: 'rerun' });
    await runToEnd(seeded.data);
    const writesBefore = cluster.callsOf(...WRITE_METHODS).length;
    const actions: string[] = [];
    const again = await runToEnd(seeded.data, { beforeAction: (action) => void actions.push(action.kind) });
    expect(again).toEqual({ keysMoved: 0, step: SlotStep.Done });
    expect(actions).toEqual([]);
    expect(cluster.callsOf(...WRITE_METHODS).length).toBe(writesBefore);
    expect(movedProblems(cluster, seeded, seeded.data.target.id)).toEqual([]);
  });

  it('moves a slot with no key at all', async () => {
    const seeded = seedSlot(cluster, { tag: 'empty', keys: 0 });
    expect(await runToEnd(seeded.data)).toEqual({ keysMoved: 0, step: SlotStep.Done });
    expect(movedProblems(cluster, seeded, seeded.data.target.id)).toEqual([]);
  });

  it('moves a key bigger than the byte budget alone, between batches that respect it', async () => {
    const seeded = seedSlot(cluster, { tag: 'big', keys: 20 });
    const big = cluster.set('{big}:huge', { type: 'string', content: 'x'.repeat(10_000) });
    const all = { ...seeded, keys: [...seeded.keys, big] };
    await runToEnd(seeded.data, { settings: { batchBytes: 1_000 } });
    expect(movedProblems(cluster, all, seeded.data.target.id)).toEqual([]);
    const alone = cluster.callsOf('migrate');
    expect(alone).toHaveLength(1);
    expect(alone[0]).toMatchObject({ keys: 1, timeoutMs: 5_000 + Math.ceil(10_080 / 8_192) });
  });

  it('the last slot of a master: the source becomes a replica of the target, and the slot is done', async () => {
    const [source, target] = [cluster.node(7000), cluster.node(7001)];
    const tag = tagServedBy(cluster, 7000, 'last');
    const lastSlot = keySlot(`{${tag}}`);
    // The source keeps that one slot only: the others went to the target before.
    for (const node of cluster.nodes) {
      for (let slot = 0; slot < node.owners.length; slot++) {
        if (node.owners[slot] === source.id && slot !== lastSlot) node.setOwner(slot, target.id);
      }
    }
    const seeded = seedSlot(cluster, { tag, keys: 10 });
    const { errors } = await runLikeBullmq(seeded.data);
    // The target's broadcast turns the source into its replica before SETSLOT NODE reaches the
    // source, which then refuses it as a replica would (READONLY): the run looks again and finds
    // the slot settled, without spending an attempt.
    expect(errors).toEqual([]);
    expect(source).toMatchObject({ role: 'replica', masterId: target.id });
    expect(movedProblems(cluster, seeded, target.id)).toEqual([]);
    expect(store.stepOf(MIGRATION_ID, lastSlot)).toBe(SlotStep.Done);
  });
});

describe('an interrupted slot move, re-run, completes with nothing lost', () => {
  it.each([
    SlotActionKind.SetImporting,
    SlotActionKind.SetMigrating,
    SlotActionKind.MigrateKeys,
    SlotActionKind.AssignTarget,
    SlotActionKind.AssignSource,
    SlotActionKind.AssignOthers,
  ])('crashing just before %s', async (crashAt) => {
    const seeded = seedSlot(cluster, { tag: `before-${crashAt}` });
    const crash = crashBefore(crashAt);
    expect(await rejection(runToEnd(seeded.data, { beforeAction: crash.hook }))).toBeInstanceOf(Crash);
    expect(crash.performed).not.toContain(crashAt);
    expect(await runToEnd(seeded.data)).toMatchObject({ step: SlotStep.Done });
    expect(movedProblems(cluster, seeded, seeded.data.target.id)).toEqual([]);
    expect(store.record(MIGRATION_ID).keysMoved).toBe(60);
  });

  /** Which node a command went to, for the commands sent to several. */
  type Role = 'source' | 'target' | 'other';

  it.each<[string, PortMethod, Role, number]>([
    ['SETSLOT IMPORTING', 'setSlotImporting', 'target', 1],
    ['SETSLOT MIGRATING', 'setSlotMigrating', 'source', 1],
    ['the first MIGRATE batch', 'migrateNextBatch', 'source', 1],
    ['the second MIGRATE batch', 'migrateNextBatch', 'source', 2],
    ['the MIGRATE batch that emptied the slot', 'migrateNextBatch', 'source', 9],
    ['SETSLOT NODE on the target', 'setSlotNode', 'target', 1],
    ['SETSLOT NODE on the source', 'setSlotNode', 'source', 1],
    ['SETSLOT NODE on the other master', 'setSlotNode', 'other', 1],
  ])('crashing right after %s took effect', async (_name, method, role, occurrence) => {
    const seeded = seedSlot(cluster, { tag: `after-${method}-${role}-${occurrence}` });
    const address = (node: { port: number }) => node.port;
    const other = cluster
      .masters()
      .find((node) => node.id !== seeded.data.source.id && node.id !== seeded.data.target.id)!;
    const port = role === 'other' ? other.port : address(seeded.data[role]);
    let seen = 0;
    cluster.on('after', method, (call) => {
      if (call.node.port === port && ++seen === occurrence) throw new Crash(`crash after ${method}`);
    });
    expect(await rejection(runToEnd(seeded.data))).toBeInstanceOf(Crash);
    expect(seen).toBe(occurrence);
    expect(await runToEnd(seeded.data)).toMatchObject({ step: SlotStep.Done });
    expect(movedProblems(cluster, seeded, seeded.data.target.id)).toEqual([]);
  });

  it('crashing between two MIGRATE batches leaves the keys split, and the re-run moves the rest', async () => {
    const seeded = seedSlot(cluster, { tag: 'mid-drain' });
    const stop = cluster.on('before', 'migrateNextBatch', (call) => {
      if (call.count === 3) throw new Crash('worker died between two MIGRATE batches');
    });
    expect(await rejection(runToEnd(seeded.data))).toBeInstanceOf(Crash);
    stop();
    expect(cluster.node(seeded.data.source.id).countKeysInSlot(seeded.slot)).toBe(60 - 2 * 7);
    expect(cluster.node(seeded.data.target.id).countKeysInSlot(seeded.slot)).toBe(2 * 7);
    expect(await runToEnd(seeded.data)).toMatchObject({ keysMoved: 60 - 2 * 7, step: SlotStep.Done });
    expect(movedProblems(cluster, seeded, seeded.data.target.id)).toEqual([]);
  });

  it('a drain paused between batches stops with PauseRequested, leaving the slot open but safe', async () => {
    const seeded = seedSlot(cluster, { tag: 'paused' });
    let paused = false;
    cluster.on('after', 'migrateNextBatch', () => {
      paused = true;
    });
    const error = await rejection(
      driveSlot(seeded.data, SlotPhase.Migrate, deps({ isPaused: async () => paused })),
    );
    expect(error).toBeInstanceOf(PauseRequested);
    // One batch went; the slot is open both ways, so clients follow ASK to the keys that moved.
    expect(cluster.callsOf('migrateNextBatch')).toHaveLength(1);
    expect(cluster.node(seeded.data.target.id).countKeysInSlot(seeded.slot)).toBe(7);
    expect(cluster.node(seeded.data.source.id).migrating.get(seeded.slot)).toBe(seeded.data.target.id);
    expect(cluster.node(seeded.data.target.id).importing.get(seeded.slot)).toBe(seeded.data.source.id);
    paused = false;
    expect(await runToEnd(seeded.data)).toMatchObject({ step: SlotStep.Done });
    expect(movedProblems(cluster, seeded, seeded.data.target.id)).toEqual([]);
  });
});

describe('config epochs (rule 2: the target is assigned only when its epoch ends above the source s)', () => {
  /**
   * The target is cut off the cluster bus while another master fails over and the source bumps its
   * epoch: the source's epoch is above anything the target knows, so a claim made now would end
   * below the source's, and the source's replicas would answer it with an UPDATE.
   */
  function sourceAheadOfTarget(seeded: SeededSlot): void {
    const { source, target } = seeded.data;
    cluster.isolate(target.id, { forMs: 60 });
    const third = cluster.masters().find((node) => node.id !== source.id && node.id !== target.id)!;
    cluster.failover(replicaOf(third).id);
    cluster.bumpEpoch(source.id);
    cluster.settle();
  }

  /** Both end on one epoch, unknown to the other until the bus heals. */
  function sharedEpoch(seeded: SeededSlot): void {
    const { source, target } = seeded.data;
    cluster.isolate(target.id, { forMs: 60 });
    cluster.bumpEpoch(source.id);
    cluster.settle();
    cluster.bumpEpoch(target.id);
    expect(cluster.node(target.id).configEpoch).toBe(cluster.node(source.id).configEpoch);
  }

  it.each([
    ['the target has not heard the source s epoch', sourceAheadOfTarget],
    ['the source and the target share an epoch', sharedEpoch],
  ])(
    '%s: the finalizer waits for gossip, then the target claims the slot above the source',
    async (_name, prepare) => {
      // Source 7000 (epoch 1), target 7001 (epoch 2), third master 7002 (epoch 3).
      const seeded = seedSlot(cluster, { tag: tagServedBy(cluster, 7000, `epoch-${prepare.name}`) });
      expect(seeded.data.target.port).toBe(7001);
      const { source, target } = seeded.data;
      prepare(seeded);
      await driveSlot(seeded.data, SlotPhase.Migrate, deps());
      let heardAtClaim: { sourceEpoch: number; heard: number; target: number } | undefined;
      cluster.on('before', 'setSlotNode', (call) => {
        if (call.node.port !== target.port || heardAtClaim) return;
        heardAtClaim = {
          sourceEpoch: cluster.node(source.id).configEpoch,
          heard: cluster.node(target.id).epochOf(source.id),
          target: cluster.node(target.id).configEpoch,
        };
      });
      const reads = cluster.callsOf('readSlotView').length;
      expect(await driveSlot(seeded.data, SlotPhase.Finalize, deps())).toMatchObject({ step: SlotStep.Done });
      // It waited (observing again) instead of claiming at once.
      expect(cluster.callsOf('readSlotView').length - reads).toBeGreaterThan(6);
      expect(heardAtClaim).toBeDefined();
      const { sourceEpoch, heard, target: targetEpoch } = heardAtClaim!;
      // Either the target already was above the source, or it had heard the source's epoch (and
      // SETSLOT NODE took it above).
      expect(targetEpoch > sourceEpoch || heard >= sourceEpoch).toBe(true);
      expect(cluster.node(target.id).configEpoch).toBeGreaterThan(cluster.node(source.id).configEpoch);
      expect(movedProblems(cluster, seeded, target.id)).toEqual([]);
    },
  );
});

describe('config epochs that do not settle', () => {
  it('the finalizer gives up after its wait with NOT_CONVERGED, having claimed nothing, and a retry finishes', async () => {
    const seeded = seedSlot(cluster, { tag: tagServedBy(cluster, 7000, 'epoch-stuck') });
    const { source, target } = seeded.data;
    await driveSlot(seeded.data, SlotPhase.Migrate, deps());
    // The target hears nothing for far longer than the finalizer waits.
    cluster.isolate(target.id, { forMs: 60_000 });
    cluster.bumpEpoch(source.id);
    const epochWait = { waitMs: 100, pollMs: 10 };
    const failure = await rejection(driveSlot(seeded.data, SlotPhase.Finalize, { ...deps(), epochWait }));
    expect(failure).toMatchObject({ code: ErrorCode.NotConverged });
    expect(isRetryable(failure)).toBe(true);
    // Nothing was assigned: the slot is still open and safe (clients follow ASK to the target).
    expect(cluster.callsOf('setSlotNode')).toEqual([]);
    expect(cluster.node(source.id).migrating.get(seeded.data.slot)).toBe(target.id);
    cluster.heal(target.id);
    cluster.settle();
    expect(await driveSlot(seeded.data, SlotPhase.Finalize, { ...deps(), epochWait })).toMatchObject({
      step: SlotStep.Done,
    });
    expect(movedProblems(cluster, seeded, target.id)).toEqual([]);
  });
});

describe('a failover in the middle of a slot move', () => {
  /** When the failover happens. */
  const Moment = {
    BeforeTheMove: 'before the move',
    MidDrain: 'before the third MIGRATE batch',
    BetweenThePhases: 'after the drain, before the finalizer',
    AfterTheClaim: 'after the target claimed the slot',
  } as const;
  type Moment = (typeof Moment)[keyof typeof Moment];

  it.each<['source' | 'target', Moment]>([
    ['source', Moment.BeforeTheMove],
    ['source', Moment.MidDrain],
    ['source', Moment.BetweenThePhases],
    ['source', Moment.AfterTheClaim],
    ['target', Moment.BeforeTheMove],
    ['target', Moment.MidDrain],
    ['target', Moment.BetweenThePhases],
    ['target', Moment.AfterTheClaim],
  ])(
    'of the %s %s: the job adopts the promoted replica and finishes with nothing lost',
    async (role, moment) => {
      const seeded = seedSlot(cluster, { tag: `failover-${role}-${moment}` });
      const failedOver = seeded.data[role];
      const promoted = replicaOf(failedOver);
      const failover = () => void cluster.failover(promoted.id);
      let errors: Error[] = [];
      switch (moment) {
        case Moment.BeforeTheMove:
          failover();
          ({ errors } = await runLikeBullmq(seeded.data));
          break;
        case Moment.MidDrain:
          cluster.on('before', 'migrateNextBatch', (call) => {
            if (call.count === 3) failover();
          });
          ({ errors } = await runLikeBullmq(seeded.data));
          // The batch after it went to a replica, or to a node that was not importing any more.
          expect(errors.map((error) => (error as SlotfleetError).code)).toContain(
            role === 'source' ? ErrorCode.ReadOnly : ErrorCode.Moved,
          );
          break;
        case Moment.BetweenThePhases:
          await driveSlot(seeded.data, SlotPhase.Migrate, deps());
          failover();
          ({ errors } = await runLikeBullmq(seeded.data));
          break;
        case Moment.AfterTheClaim:
          cluster.on('after', 'setSlotNode', (call) => {
            if (call.node.port === seeded.data.target.port && call.count === 1) {
              failover();
              throw new Crash('worker died after SETSLOT NODE on the target');
            }
          });
          ({ errors } = await runLikeBullmq(seeded.data));
          expect(errors[0]).toBeInstanceOf(Crash);
          break;
        default: {
          const never: never = moment;
          throw new Error(`unhandled moment ${never}`);
        }
      }
      expect(errors.every((error) => isRetryable(error))).toBe(true);
      expect(cluster.node(failedOver.id)).toMatchObject({ role: 'replica', masterId: promoted.id });
      const owner = role === 'target' ? promoted.id : seeded.data.target.id;
      expect(movedProblems(cluster, seeded, owner)).toEqual([]);
      expect(store.stepOf(MIGRATION_ID, seeded.slot)).toBe(SlotStep.Done);
    },
  );
});

describe('BUSYKEY: the target already holds a key of the slot', () => {
  /** A key on the target as a half-done MIGRATE leaves it: IMPORTING, then RESTORE ASKING. */
  function plantOnTarget(seeded: SeededSlot, index: number, content?: string, encoding?: string) {
    const { source, target } = seeded.data;
    cluster.node(target.id).setSlotImporting(seeded.slot, source.id);
    const key = seeded.keys[index]!;
    cluster.plant(target.id, {
      ...key,
      value: {
        ...key.value,
        ...(content === undefined ? {} : { content }),
        ...(encoding ? { encoding } : {}),
      },
    });
    return key;
  }

  it.each([
    ['the same value', undefined, undefined],
    ['the same value in another encoding (DUMP payloads differ)', undefined, 'listpack'],
  ])('with %s: replaced by the source copy, the slot completes', async (_name, content, encoding) => {
    const seeded = seedSlot(cluster, { tag: `busy-same-${encoding}` });
    plantOnTarget(seeded, 3, content, encoding);
    await runToEnd(seeded.data);
    expect(movedProblems(cluster, seeded, seeded.data.target.id)).toEqual([]);
    expect(cluster.callsOf('migrate').at(-1)).toMatchObject({ replace: true });
  });

  it('with another value: the slot fails naming the key, nothing overwritten; replace: true overwrites', async () => {
    const seeded = seedSlot(cluster, { tag: 'busy-other' });
    const key = plantOnTarget(seeded, 0, 'the target has its own idea');
    const failure = await rejection(driveSlot(seeded.data, SlotPhase.Migrate, deps()));
    expect(failure).toBeInstanceOf(SlotfleetError);
    expect(failure).toMatchObject({
      code: ErrorCode.BusyKey,
      details: { keys: [JSON.stringify(key.name.toString())], count: 1 },
    });
    expect(isRetryable(failure)).toBe(false);
    expect((failure as Error).message).toContain(JSON.stringify(key.name.toString()));
    expect((failure as Error).message).toContain('replace: true');
    // Nothing lost, nothing overwritten.
    expect(cluster.node(seeded.data.source.id).lookup(key.name)?.value).toEqual(key.value);
    expect(cluster.node(seeded.data.target.id).lookup(key.name)?.value.content).toBe(
      'the target has its own idea',
    );

    await runToEnd({ ...seeded.data, replace: true });
    expect(movedProblems(cluster, seeded, seeded.data.target.id)).toEqual([]);
  });
});

describe('IOERR: a MIGRATE timed out', () => {
  function timeouts(metrics: ReturnType<typeof createMetrics>) {
    return metrics.migrateTimeouts
      .get()
      .then((metric) => metric.values.reduce((sum, value) => sum + value.value, 0));
  }

  it('the next key moves alone with 4x the timeout, then the drain goes on', async () => {
    const seeded = seedSlot(cluster, { tag: 'ioerr-alone' });
    const metrics = createMetrics({ defaultMetrics: false });
    cluster.failNext('migrateNextBatch', FaultReply.IoError, { slot: seeded.slot });
    await runToEnd(seeded.data, { metrics });
    const alone = cluster.callsOf('migrate');
    expect(alone).toHaveLength(1);
    expect(alone[0]).toMatchObject({ keys: 1, timeoutMs: 4 * 5_000 });
    expect(await timeouts(metrics)).toBe(1);
    expect(movedProblems(cluster, seeded, seeded.data.target.id)).toEqual([]);
  });

  it('the keys the target restored before the timeout are recognised as the same (BUSYKEY) and replaced', async () => {
    const seeded = seedSlot(cluster, { tag: 'ioerr-restored' });
    cluster.failNext('migrateNextBatch', FaultReply.IoError, { slot: seeded.slot, restoredKeys: 7 });
    await runToEnd(seeded.data);
    expect(cluster.callsOf('migrate').map((call) => call.replace ?? false)).toEqual([false, true]);
    expect(movedProblems(cluster, seeded, seeded.data.target.id)).toEqual([]);
  });

  it('a second timeout of the lone key fails the attempt naming the key; a retry completes', async () => {
    const seeded = seedSlot(cluster, { tag: 'ioerr-twice' });
    const metrics = createMetrics({ defaultMetrics: false });
    cluster.failNext('migrateNextBatch', FaultReply.IoError, { slot: seeded.slot });
    cluster.failNext('migrate', FaultReply.IoError, { slot: seeded.slot });
    const failure = await rejection(driveSlot(seeded.data, SlotPhase.Migrate, deps({ metrics })));
    const first = JSON.stringify(seeded.keys[0]!.name.toString());
    expect(failure).toMatchObject({ code: ErrorCode.IoError, details: { key: first } });
    expect((failure as Error).message).toMatch(/timed out in a batch and again alone \(20000 ms\)/);
    expect(isRetryable(failure)).toBe(true);
    expect(await timeouts(metrics)).toBe(2);
    // Open and safe meanwhile: nothing lost, the source still MIGRATING.
    expect(cluster.node(seeded.data.source.id).migrating.get(seeded.slot)).toBe(seeded.data.target.id);
    await runToEnd(seeded.data);
    expect(movedProblems(cluster, seeded, seeded.data.target.id)).toEqual([]);
  });
});

describe('retryable replies end the attempt; the retry completes', () => {
  it.each<[PortMethod, FaultReply, ErrorCode]>([
    ['migrateNextBatch', FaultReply.TryAgain, ErrorCode.TryAgain],
    ['migrateNextBatch', FaultReply.ClusterDown, ErrorCode.ClusterDown],
    ['migrateNextBatch', FaultReply.Connection, ErrorCode.Connection],
    ['setSlotImporting', FaultReply.ClusterDown, ErrorCode.ClusterDown],
    ['setSlotMigrating', FaultReply.Connection, ErrorCode.Connection],
    ['setSlotNode', FaultReply.ReadOnly, ErrorCode.ReadOnly],
    ['setSlotNode', FaultReply.TryAgain, ErrorCode.TryAgain],
    ['readSlotView', FaultReply.Connection, ErrorCode.Connection],
    ['countKeysInSlot', FaultReply.Connection, ErrorCode.Connection],
  ])('%s answering %s', async (method, reply, code) => {
    const seeded = seedSlot(cluster, { tag: `retry-${method}-${reply}` });
    cluster.failNext(method, reply);
    const { errors } = await runLikeBullmq(seeded.data);
    expect(errors.map((error) => (error as SlotfleetError).code)).toEqual([code]);
    expect(errors[0]!.message).toMatch(/ on 127\.0\.0\.1:70\d\d: /);
    expect(movedProblems(cluster, seeded, seeded.data.target.id)).toEqual([]);
  });

  it('a slot that belongs to another node than planned fails at once, untouched', async () => {
    const seeded = seedSlot(cluster, { tag: 'replanned' });
    const third = cluster
      .masters()
      .find((node) => node.id !== seeded.data.source.id && node.id !== seeded.data.target.id)!;
    const failure = await rejection(runToEnd({ ...seeded.data, source: third.ref }));
    expect(failure).toMatchObject({ code: ErrorCode.OwnerChanged });
    expect(isRetryable(failure)).toBe(false);
    expect(untouchedProblems(cluster, seeded)).toEqual([]);
  });
});

describe('opening the slots of a pair together (openAhead)', () => {
  it('opens the companions IMPORTING then MIGRATING with the first slot; their own runs drain them, nothing lost', async () => {
    const first = seedSlot(cluster, { tag: 'ahead-0' });
    const source = cluster.node(first.data.source.id);
    // Two more slots of the same source, moving to the same target.
    const companions = ['ahead-x', 'ahead-y'].map((prefix) =>
      seedSlot(cluster, { tag: tagServedBy(cluster, source.port, prefix), targetId: first.data.target.id }),
    );
    const asked: number[] = [];
    const openAhead: OpenAhead = {
      claim: async (data: SlotJobData) => {
        asked.push(data.slot);
        return companions.map((companion) => companion.slot);
      },
      release: async () => undefined,
      renew: async () => undefined,
      handOn: async () => undefined,
      settled: async () => OpeningState.Free,
    };
    const run = new SlotRun(first.data, SlotPhase.Migrate, { ...deps(), openAhead });
    await run.run();
    expect(asked).toEqual([first.slot]);
    // Both opened: the target imports them and the source redirects them.
    expect(run.claimed).toEqual(companions.map((companion) => companion.slot));
    expect(run.opened).toEqual(companions.map((companion) => companion.slot));
    for (const companion of companions) {
      expect(cluster.node(first.data.target.id).slotView(companion.slot)).toMatchObject({
        importingFrom: source.id,
      });
      expect(source.slotView(companion.slot)).toMatchObject({ migratingTo: first.data.target.id });
    }
    // The target imported every companion before the source redirected any of them.
    const setslots = cluster
      .callsOf('setSlotImporting', 'setSlotMigrating')
      .filter((call) => call.slot !== first.slot)
      .map((call) => call.method);
    expect(setslots).toEqual([
      'setSlotImporting',
      'setSlotImporting',
      'setSlotMigrating',
      'setSlotMigrating',
    ]);
    // Each companion's own run finds it open: no SETSLOT IMPORTING or MIGRATING of its own.
    const actions: string[] = [];
    for (const companion of companions) {
      await runToEnd(companion.data, { beforeAction: (action) => void actions.push(action.kind) });
      expect(movedProblems(cluster, companion, first.data.target.id)).toEqual([]);
    }
    expect(actions).not.toContain('set-importing');
    expect(actions).not.toContain('set-migrating');
    await driveSlot(first.data, SlotPhase.Finalize, deps());
    expect(movedProblems(cluster, first, first.data.target.id)).toEqual([]);
  });
});
