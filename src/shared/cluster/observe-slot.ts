/**
 * What the source and the target (and, when asked, every other master) say about one slot, as the
 * state machine of src/shared/domain/slot-migration.ts reads it. Built from ClusterPort reads only,
 * so the same code observes a real cluster and the in-memory one of the unit tests.
 */
import type { NodeRef } from '../domain/plan.js';
import type { NodeSlotState, SlotObservation } from '../domain/slot-migration.js';
import type { SlotView } from '../domain/topology.js';
import { ErrorCode, SlotfleetError } from '../errors.js';
import type { ClusterPort } from './port.js';

/**
 * The source's key count in an observation made without COUNTKEYSINSLOT: not zero, so the state
 * machine sends a drain, whose batch script finds out (an empty slot costs one script call).
 */
export const UNCOUNTED_KEYS = 1;

export interface ObserveOptions {
  /** Ask every other master for its owner too (else their opinion is null: unknown). */
  readonly includeOthers: boolean;
  /** Count the source's keys (COUNTKEYSINSLOT); false: UNCOUNTED_KEYS. @defaultValue true */
  readonly countKeys?: boolean;
}

/** Issued in parallel: one round trip per node. */
export async function observeSlot(
  cluster: Pick<ClusterPort, 'readSlotView' | 'countKeysInSlot'>,
  slot: number,
  source: NodeRef,
  target: NodeRef,
  options: ObserveOptions,
): Promise<SlotObservation> {
  const [sourceView, sourceKeys, targetView] = await Promise.all([
    cluster.readSlotView(source, slot),
    // Not counted: reported as UNCOUNTED_KEYS, "maybe some", which only a drain can settle.
    options.countKeys === false ? UNCOUNTED_KEYS : cluster.countKeysInSlot(source, slot),
    cluster.readSlotView(target, slot),
  ]);
  const otherMasters = sourceView.masters.filter((node) => node.id !== source.id && node.id !== target.id);
  // Without includeOthers their opinion is unknown (null): the state machine then assigns the slot
  // on all of them, which is idempotent and cheaper than asking each first.
  const others: SlotObservation['others'] = options.includeOthers
    ? await Promise.all(
        otherMasters.map(async (node) => ({
          nodeId: node.id,
          host: node.host,
          port: node.port,
          owner: (await cluster.readSlotView(node, slot)).owner,
        })),
      )
    : otherMasters.map((node) => ({ nodeId: node.id, host: node.host, port: node.port, owner: null }));
  return {
    slot,
    sourceId: source.id,
    targetId: target.id,
    source: {
      ...slotStateIn(sourceView, source.id),
      keys: sourceKeys,
      isMaster: sourceView.myselfIsMaster,
      masterId: sourceView.myselfMasterId,
    },
    target: {
      ...slotStateIn(targetView, target.id),
      isMaster: targetView.myselfIsMaster,
      masterId: targetView.myselfMasterId,
    },
    epochs: {
      source: sourceView.myselfEpoch,
      target: targetView.myselfEpoch,
      sourceSeenByTarget: targetView.epochs.get(source.id) ?? 0,
    },
    others,
  };
}

function slotStateIn(view: SlotView, selfId: string): NodeSlotState {
  if (view.myselfId !== selfId) {
    throw new SlotfleetError(
      ErrorCode.OwnerChanged,
      `the node expected to be ${selfId} now answers as ${view.myselfId}: the cluster changed`,
    );
  }
  return { owner: view.owner, importingFrom: view.importingFrom, migratingTo: view.migratingTo };
}
