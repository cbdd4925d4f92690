/**
 * Three pure decisions, each a table: what a cancel does to a slot (cancelDecision), whether the
 * target may be assigned the slot now as far as config epochs go (epochUnsafeReason, rule 2 of
 * slot-migration.ts), and a migration's state from its slots' steps (migrationState).
 */
import { describe, expect, it } from 'vitest';
import {
  countSteps,
  MigrationControl,
  type MigrationState,
  migrationState,
} from '../../src/shared/domain/migration.js';
import {
  CancelDecision,
  cancelDecision,
  epochUnsafeReason,
  type SlotObservation,
  type SlotStep,
} from '../../src/shared/domain/slot-migration.js';

const S = 'source';
const T = 'target';

function observe(partial: {
  source?: Partial<SlotObservation['source']>;
  target?: Partial<SlotObservation['target']>;
  epochs?: SlotObservation['epochs'];
}): SlotObservation {
  const node = { owner: S, importingFrom: null, migratingTo: null, isMaster: true, masterId: null };
  return {
    slot: 42,
    sourceId: S,
    targetId: T,
    source: { ...node, keys: 10, ...partial.source },
    target: { ...node, ...partial.target },
    epochs: partial.epochs ?? { source: 1, target: 2, sourceSeenByTarget: 1 },
    others: [],
  };
}

describe('cancelDecision', () => {
  it.each<[string, SlotObservation, CancelDecision]>([
    ['nothing open: dropped', observe({}), CancelDecision.Drop],
    ['nothing open, no key: dropped', observe({ source: { keys: 0 } }), CancelDecision.Drop],
    [
      'the target imports, the source is not migrating: the import is undone',
      observe({ target: { importingFrom: S } }),
      CancelDecision.UndoImport,
    ],
    [
      'the source migrates: keys may have moved, finished',
      observe({ target: { importingFrom: S }, source: { migratingTo: T } }),
      CancelDecision.Finish,
    ],
    [
      'the source migrates but the target lost its IMPORTING (a failover): still finished',
      observe({ source: { migratingTo: T } }),
      CancelDecision.Finish,
    ],
    [
      'drained: finished',
      observe({ target: { importingFrom: S }, source: { migratingTo: T, keys: 0 } }),
      CancelDecision.Finish,
    ],
    ['the target owns the slot already: finished', observe({ target: { owner: T } }), CancelDecision.Finish],
    [
      'the target imports from another node: not ours to undo, dropped',
      observe({ target: { importingFrom: 'elsewhere' } }),
      CancelDecision.Drop,
    ],
    [
      'the source migrates to another node: not ours, dropped',
      observe({ source: { migratingTo: 'elsewhere' } }),
      CancelDecision.Drop,
    ],
  ])('%s', (_name, observation, expected) => {
    expect(cancelDecision(observation)).toBe(expected);
  });
});

describe('epochUnsafeReason', () => {
  it.each<[string, SlotObservation['epochs'], RegExp | null]>([
    ['the target is above the source already', { source: 1, target: 2, sourceSeenByTarget: 1 }, null],
    ['above, even with a stale view of the source', { source: 3, target: 4, sourceSeenByTarget: 1 }, null],
    [
      'below, and it has heard the source: its bump goes above',
      { source: 5, target: 2, sourceSeenByTarget: 5 },
      null,
    ],
    [
      'below, and it heard a later epoch of the source',
      { source: 5, target: 2, sourceSeenByTarget: 6 },
      null,
    ],
    [
      'below, without having heard the source: its bump could end below',
      { source: 5, target: 2, sourceSeenByTarget: 3 },
      /target has seen source config epoch 3, the source is at 5; waiting for gossip/,
    ],
    [
      'below, having heard nothing of the source',
      { source: 1, target: 0, sourceSeenByTarget: 0 },
      /target has seen source config epoch 0, the source is at 1/,
    ],
    [
      'a tie: Redis resolves the collision first',
      { source: 5, target: 5, sourceSeenByTarget: 5 },
      /target and source share config epoch 5; waiting for Redis to resolve the collision/,
    ],
    [
      'a tie at zero (epochs never set)',
      { source: 0, target: 0, sourceSeenByTarget: 0 },
      /share config epoch 0/,
    ],
  ])('%s', (_name, epochs, expected) => {
    const reason = epochUnsafeReason(observe({ epochs }));
    if (expected === null) expect(reason).toBeNull();
    else expect(reason).toMatch(expected);
  });
});

describe('migrationState', () => {
  const counts = (steps: Partial<Record<SlotStep, number>>) =>
    countSteps(Object.entries(steps).flatMap(([step, count]) => Array.from({ length: count }, () => step)));

  it.each<[string, Partial<Record<SlotStep, number>>, MigrationControl | undefined, MigrationState]>([
    ['no slot started', { pending: 3 }, undefined, 'pending'],
    ['no slot started, paused', { pending: 3 }, MigrationControl.Pause, 'paused'],
    ['one slot draining', { pending: 2, draining: 1 }, undefined, 'running'],
    [
      'every open step counts as running',
      { importing: 1, migrating: 1, finalizing: 1 },
      undefined,
      'running',
    ],
    ['some done, some pending', { pending: 1, done: 2 }, MigrationControl.Run, 'running'],
    ['paused while running', { pending: 1, done: 2 }, MigrationControl.Pause, 'paused'],
    [
      'cancelled while running: running until every slot ended',
      { pending: 1, cancelled: 1 },
      MigrationControl.Cancel,
      'running',
    ],
    ['every slot done', { done: 3 }, undefined, 'done'],
    ['every slot done, though paused: done', { done: 3 }, MigrationControl.Pause, 'done'],
    ['ended, one failed: failed', { done: 2, failed: 1 }, undefined, 'failed'],
    [
      'ended, one failed and one cancelled: failed',
      { failed: 1, cancelled: 1, done: 1 },
      undefined,
      'failed',
    ],
    ['ended, some cancelled: cancelled', { done: 2, cancelled: 1 }, undefined, 'cancelled'],
    ['no slot at all: done', {}, undefined, 'done'],
  ])('%s', (_name, steps, control, expected) => {
    expect(migrationState(counts(steps), control)).toBe(expected);
  });

  it('ignores steps it does not know when counting', () => {
    expect(countSteps(['done', 'no-such-step'])).toMatchObject({ done: 1, pending: 0 });
  });
});
