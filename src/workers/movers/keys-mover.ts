/**
 * The keys engine: the slot runs through the state machine of src/shared/domain/slot-migration.ts
 * (SETSLOT IMPORTING and MIGRATING, MIGRATE batches until the source is empty, then SETSLOT NODE on
 * every master), as redis-cli does it, made restartable. Works on every Redis and Valkey.
 */
import { observeSlot } from '../../shared/cluster/observe-slot.js';
import { MigrationEngine } from '../../shared/domain/migration.js';
import { CancelDecision, cancelDecision } from '../../shared/domain/slot-migration.js';
import { driveSlot } from '../slot-run.js';
import type { SlotMover } from './slot-mover.js';

export const keysMover: SlotMover = {
  engine: MigrationEngine.Keys,
  moveSlot: (data, phase, deps) => driveSlot(data, phase, deps),
  // A slot not yet MIGRATING has moved no key: drop it (undoing the target's IMPORTING). Once
  // MIGRATING, keys may be on both sides: it is finished, so no slot is left with its keys split.
  onCancel: async (data, deps) => {
    const observation = await observeSlot(deps.cluster, data.slot, data.source, data.target, {
      includeOthers: false,
    });
    const decision = cancelDecision(observation);
    if (decision === CancelDecision.Finish) return 'finish';
    if (decision === CancelDecision.UndoImport) await deps.cluster.setSlotStable(data.target, data.slot);
    deps.log.info({ decision }, 'slot cancelled: no key had moved');
    return 'cancelled';
  },
};
