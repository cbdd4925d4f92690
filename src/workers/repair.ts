/**
 * Fix jobs other than finish-migration (which is an ordinary slot move, picked up from wherever the
 * interrupted move left it). Each is idempotent: re-running after a crash re-reads the slot.
 */
import { FixKind } from '../shared/domain/planners/index.js';
import { ErrorCode, SlotfleetError } from '../shared/errors.js';
import type { SlotJobData } from '../shared/queue/names.js';
import { drainSlot } from './drain.js';
import type { SlotRunDeps } from './slot-run.js';

export async function runRepair(data: SlotJobData, deps: SlotRunDeps): Promise<{ keysMoved: number }> {
  const repair = data.repair;
  if (!repair) throw new Error('runRepair called for a job that is not a repair');
  const { cluster, log } = deps;
  let keysMoved = 0;
  switch (repair.kind) {
    case FixKind.CloseStale:
      break;
    case FixKind.AssignUncovered: {
      const view = await cluster.readSlotView(data.target, data.slot);
      if (view.owner === null) {
        log.info({ reason: repair.reason }, 'assigning uncovered slot');
        await cluster.addSlot(data.target, data.slot);
      } else if (view.owner !== data.target.id) {
        throw new SlotfleetError(
          ErrorCode.OwnerChanged,
          `slot ${data.slot} is now served by ${view.owner}: re-run fix to plan again`,
        );
      }
      break;
    }
    case FixKind.MoveKeysToOwner:
      break;
    case FixKind.FinishMigration:
    case FixKind.ResolveOwners:
      throw new SlotfleetError(
        ErrorCode.InvalidState,
        `repair ${repair.kind} of slot ${data.slot} is not automated: ${repair.reason}`,
      );
    default:
      throw new SlotfleetError(ErrorCode.InvalidState, `unknown repair kind ${repair.kind}`);
  }
  // The owner (target) accepts the keys without ASKING; each node giving them up loses them only
  // once the owner acknowledged them (MIGRATE).
  for (const from of repair.keysFrom) {
    if (from.id === data.target.id) continue;
    const drained = await drainSlot({ ...data, source: from }, deps);
    keysMoved += drained.moved;
    await deps.store.addKeysMoved(data.migrationId, drained.unrecorded);
  }
  await Promise.all(repair.closeOn.map((node) => cluster.setSlotStable(node, data.slot)));
  log.info({ kind: repair.kind, keysMoved, closed: repair.closeOn.length }, 'slot repaired');
  return { keysMoved };
}
