import { describe, expect, it } from 'vitest';
import {
  afterAction,
  nextSlotAction,
  predictionRegresses,
  SlotActionKind,
  type SlotObservation,
  SlotPhase,
  SlotStep,
  stepOf,
} from '../../src/shared/domain/slot-migration.js';

const S = 'source';
const T = 'target';
const O = 'other';

function observe(partial: {
  source?: Partial<SlotObservation['source']>;
  target?: Partial<SlotObservation['target']>;
  others?: SlotObservation['others'];
  epochs?: SlotObservation['epochs'];
  replaced?: string[];
}): SlotObservation {
  return {
    slot: 42,
    sourceId: S,
    targetId: T,
    source: {
      owner: S,
      importingFrom: null,
      migratingTo: null,
      keys: 10,
      isMaster: true,
      masterId: null,
      ...partial.source,
    },
    target: {
      owner: S,
      importingFrom: null,
      migratingTo: null,
      isMaster: true,
      masterId: null,
      ...partial.target,
    },
    ...(partial.replaced ? { replaced: partial.replaced } : {}),
    epochs: partial.epochs ?? { source: 1, target: 2, sourceSeenByTarget: 1 },
    others: partial.others ?? [{ nodeId: O, host: '127.0.0.1', port: 7002, owner: S }],
  };
}

describe('nextSlotAction', () => {
  it.each([
    [
      'owner still importing: SETSLOT NODE on itself closes it before the source is assigned',
      observe({ target: { owner: T, importingFrom: S }, source: { migratingTo: T, keys: 0 } }),
      SlotPhase.Finalize,
      'assign-target',
    ],
    ['fresh slot: target imports first', observe({}), SlotPhase.Migrate, 'set-importing'],
    [
      'importing: source migrates next',
      observe({ target: { importingFrom: S } }),
      SlotPhase.Migrate,
      'set-migrating',
    ],
    [
      'open both ways with keys: drain',
      observe({ target: { importingFrom: S }, source: { migratingTo: T } }),
      SlotPhase.Migrate,
      'migrate-keys',
    ],
    [
      'drained: the migrate job stops',
      observe({ target: { importingFrom: S }, source: { migratingTo: T, keys: 0 } }),
      SlotPhase.Migrate,
      'drained',
    ],
    [
      'after a source failover: the stale IMPORTING is closed first',
      observe({
        target: { importingFrom: 'old-source' },
        source: { migratingTo: null },
        replaced: ['old-source'],
      }),
      SlotPhase.Migrate,
      'reset-import',
    ],
    [
      'then the target waits until it sees the successor as owner',
      observe({ target: { owner: null }, replaced: ['old-source'] }),
      SlotPhase.Migrate,
      'await-owner',
    ],
    [
      'and imports from it once it does',
      observe({ replaced: ['old-source'] }),
      SlotPhase.Migrate,
      'set-importing',
    ],
    [
      'after a target failover: the source migrates to the successor again',
      observe({
        target: { importingFrom: S },
        source: { migratingTo: 'old-target' },
        replaced: ['old-target'],
      }),
      SlotPhase.Migrate,
      'set-migrating',
    ],
    [
      'importing from a node that was not replaced is still a conflict',
      observe({ target: { importingFrom: 'stranger' }, replaced: ['old-source'] }),
      SlotPhase.Migrate,
      'fail',
    ],
    [
      'a target that became a replica (no successor adopted) is not used',
      observe({ target: { isMaster: false, masterId: 'x' } }),
      SlotPhase.Migrate,
      'fail',
    ],
    [
      'drained: the finalizer assigns the target',
      observe({ target: { importingFrom: S }, source: { migratingTo: T, keys: 0 } }),
      SlotPhase.Finalize,
      'assign-target',
    ],
    [
      'empty source but not migrating: never assign, set MIGRATING first',
      observe({ target: { importingFrom: S }, source: { keys: 0 } }),
      SlotPhase.Finalize,
      'set-migrating',
    ],
    [
      'target owns, source has keys left: save them first',
      observe({ target: { owner: T }, source: { migratingTo: T, keys: 3 } }),
      SlotPhase.Finalize,
      'migrate-keys',
    ],
    [
      'target owns: the source is assigned next',
      observe({ target: { owner: T }, source: { migratingTo: T, keys: 0 } }),
      SlotPhase.Finalize,
      'assign-source',
    ],
    [
      'target and source agree: the other masters next',
      observe({ target: { owner: T }, source: { owner: T, keys: 0 } }),
      SlotPhase.Finalize,
      'assign-others',
    ],
    [
      'everyone agrees: done',
      observe({
        target: { owner: T },
        source: { owner: T, keys: 0 },
        others: [{ nodeId: O, host: '127.0.0.1', port: 7002, owner: T }],
      }),
      SlotPhase.Finalize,
      'done',
    ],
    [
      'source demoted to a replica of the target after losing its last slot: its keys are copies',
      observe({ target: { owner: T }, source: { owner: T, keys: 4, isMaster: false } }),
      SlotPhase.Finalize,
      'assign-others',
    ],
    [
      'the source hands over while the target is read: an older read of the target, read both again',
      observe({ target: { importingFrom: S }, source: { owner: T, keys: 0 } }),
      SlotPhase.Migrate,
      'await-owner',
    ],
    [
      'the same in the finalizer',
      observe({ target: { importingFrom: S }, source: { owner: T, keys: 0 } }),
      SlotPhase.Finalize,
      'await-owner',
    ],
    [
      'a migrate job re-run after finalizing started stops at drained',
      observe({ target: { owner: T }, source: { migratingTo: T, keys: 0 } }),
      SlotPhase.Migrate,
      'drained',
    ],
  ])('%s', (_name, observation, phase, expected) => {
    expect(nextSlotAction(observation, phase).kind).toBe(expected);
  });

  it.each([
    ['owner moved elsewhere', observe({ source: { owner: O }, target: { owner: O } }), 'OWNER_CHANGED'],
    [
      'source failed over before the target took the slot',
      observe({ source: { isMaster: false } }),
      'OWNER_CHANGED',
    ],
    ['target importing from a third node', observe({ target: { importingFrom: O } }), 'SLOT_CONFLICT'],
    [
      'source migrating to a third node',
      observe({ target: { importingFrom: S }, source: { migratingTo: O } }),
      'SLOT_CONFLICT',
    ],
  ])('fails when %s', (_name, observation, code) => {
    const action = nextSlotAction(observation, SlotPhase.Migrate);
    expect(action).toMatchObject({ kind: 'fail', code });
  });

  it('walks from pending to done when every action succeeds', () => {
    let observation = observe({});
    const seen: string[] = [];
    for (const phase of [SlotPhase.Migrate, SlotPhase.Finalize]) {
      for (let i = 0; i < 10; i++) {
        const action = nextSlotAction(observation, phase);
        seen.push(action.kind);
        if (action.kind === 'drained' || action.kind === 'done') break;
        observation = afterAction(observation, action);
      }
    }
    expect(seen).toEqual([
      'set-importing',
      'set-migrating',
      'migrate-keys',
      'drained',
      'assign-target',
      'assign-source',
      'assign-others',
      'done',
    ]);
    expect(stepOf(observation)).toBe('done');
  });
});

describe('config epochs before the target takes the slot', () => {
  const drained = { target: { importingFrom: S }, source: { migratingTo: T, keys: 0 } };
  it.each([
    ['target above source', { source: 3, target: 5, sourceSeenByTarget: 1 }, 'assign-target'],
    [
      'target below a source it has heard of: SETSLOT NODE bumps past it',
      { source: 7, target: 5, sourceSeenByTarget: 7 },
      'assign-target',
    ],
    [
      'target below a source it has not heard of yet',
      { source: 7, target: 5, sourceSeenByTarget: 6 },
      'await-epoch',
    ],
    ['a tie: Redis will not bump the target', { source: 5, target: 5, sourceSeenByTarget: 5 }, 'await-epoch'],
  ])('%s', (_name, epochs, expected) => {
    expect(nextSlotAction(observe({ ...drained, epochs }), SlotPhase.Finalize).kind).toBe(expected);
  });
});

describe('stepOf', () => {
  it.each([
    [observe({}), 'pending'],
    [observe({ target: { importingFrom: S } }), 'importing'],
    [observe({ target: { importingFrom: S }, source: { migratingTo: T, keys: 0 } }), 'migrating'],
    [observe({ target: { importingFrom: S }, source: { migratingTo: T } }), 'draining'],
    [observe({ target: { owner: T }, source: { migratingTo: T, keys: 0 } }), 'finalizing'],
    [observe({ target: { importingFrom: S }, source: { owner: T, keys: 0 } }), 'finalizing'],
  ])('%#', (observation, step) => {
    expect(stepOf(observation)).toBe(step);
  });
});

describe('predictionRegresses: a predicted step never goes back, except by ResetImport', () => {
  const pending = observe({});
  const importing = observe({ target: { importingFrom: S } });
  const draining = observe({ target: { importingFrom: S }, source: { migratingTo: T } });
  const finalizing = observe({ target: { owner: T }, source: { migratingTo: T, keys: 0 } });

  it.each([
    ['SetImporting from pending', pending, { kind: SlotActionKind.SetImporting }, false],
    ['SetMigrating from importing', importing, { kind: SlotActionKind.SetMigrating }, false],
    ['MigrateKeys from draining', draining, { kind: SlotActionKind.MigrateKeys }, false],
    ['AssignSource from finalizing', finalizing, { kind: SlotActionKind.AssignSource }, false],
    [
      'ResetImport from importing (allowed going back)',
      importing,
      { kind: SlotActionKind.ResetImport },
      false,
    ],
  ] as const)('%s: %s', (_name, before, action, regresses) => {
    expect(predictionRegresses(before, afterAction(before, action), action)).toBe(regresses);
  });

  it('flags a prediction that takes a draining slot back to pending', () => {
    const action = { kind: SlotActionKind.MigrateKeys } as const;
    expect(stepOf(draining)).toBe(SlotStep.Draining);
    expect(stepOf(pending)).toBe(SlotStep.Pending);
    expect(predictionRegresses(draining, pending, action)).toBe(true);
  });
});
