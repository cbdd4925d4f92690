/**
 * The engine seam: how a slot's keys get from its source to its target. The processors ask the
 * migration's mover to run a slot's phase (migrate: up to drained, or handed to the server; finalize:
 * up to done) and know nothing of how it does it. One BullMQ job per slot stays the unit of work,
 * retry and record for every engine.
 */
import { MigrationEngine } from '../../shared/domain/migration.js';
import type { SlotPhase } from '../../shared/domain/slot-migration.js';
import type { Logger } from '../../shared/logger.js';
import type { SlotJobData } from '../../shared/queue/names.js';
import type { SlotRunResult } from '../slot-run.js';
import { type AtomicDeps, atomicMover } from './atomic-mover.js';
import { keysMover } from './keys-mover.js';

/** A cancelled migration's slot: dropped with nothing moved, or to be finished (it cannot go back). */
export type CancelOutcome = 'cancelled' | 'finish';

/** What a mover may use: a slot run's deps, and the atomic engine's runtime where the worker has one. */
export type MoverDeps = AtomicDeps & {
  /**
   * The logger of another slot of the job's block, bound to that slot and these fields (and naming
   * the job's own slot as openedBy) instead of the job's; absent: the job's logger.
   */
  readonly logOf?: (slot: number, bindings: Record<string, unknown>) => Logger;
};

export interface SlotMover {
  readonly engine: MigrationEngine;
  /**
   * One phase of one slot, idempotent: a re-run after any crash continues from what the cluster
   * says. Throws a SlotfleetError (its code decides retry or failure) or PauseRequested.
   */
  moveSlot(data: SlotJobData, phase: SlotPhase, deps: MoverDeps): Promise<SlotRunResult>;
  /** The migration was cancelled: drop the slot if nothing of it moved, else say it must finish. */
  onCancel(data: SlotJobData, deps: MoverDeps): Promise<CancelOutcome>;
}

/** The mover of a slot job: its migration's engine; jobs added before engines existed move keys. */
export function moverFor(data: Pick<SlotJobData, 'engine'>): SlotMover {
  const engine = data.engine ?? MigrationEngine.Keys;
  switch (engine) {
    case MigrationEngine.Keys:
      return keysMover;
    case MigrationEngine.Atomic:
      return atomicMover;
    default: {
      const never: never = engine;
      throw new Error(`unhandled migration engine: ${String(never)}`);
    }
  }
}
