/**
 * The engine seam: how a slot's keys get from its source to its target. The processors ask the
 * migration's mover to run a slot's phase (migrate: up to drained; finalize: up to done) and know
 * nothing of how it does it. One BullMQ job per slot stays the unit of work, retry and record for
 * every engine.
 */
import { MigrationEngine } from '../../shared/domain/migration.js';
import type { SlotPhase } from '../../shared/domain/slot-migration.js';
import type { SlotJobData } from '../../shared/queue/names.js';
import type { SlotRunDeps, SlotRunResult } from '../slot-run.js';
import { keysMover } from './keys-mover.js';

export interface SlotMover {
  readonly engine: MigrationEngine;
  /**
   * One phase of one slot, idempotent: a re-run after any crash continues from what the cluster
   * says. Throws a SlotfleetError (its code decides retry or failure) or PauseRequested.
   */
  moveSlot(data: SlotJobData, phase: SlotPhase, deps: SlotRunDeps): Promise<SlotRunResult>;
}

/** The mover of a slot job: its migration's engine; jobs added before engines existed move keys. */
export function moverFor(data: Pick<SlotJobData, 'engine'>): SlotMover {
  const engine = data.engine ?? MigrationEngine.Keys;
  switch (engine) {
    case MigrationEngine.Keys:
      return keysMover;
    default: {
      const never: never = engine;
      throw new Error(`unhandled migration engine: ${String(never)}`);
    }
  }
}
