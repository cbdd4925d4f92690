/**
 * What every planner needs before it can plan: masters resolved from operator references, weights
 * validated, and the cluster checked the way redis-cli checks it before it moves anything
 * (clusterManagerCheckCluster: no open slot, every slot covered by a reachable master). Pure.
 */
import { ErrorCode, SlotfleetError } from '../../errors.js';
import { assertOneWayNodes, type ClusterSnapshot, type SlotMove } from '../plan.js';
import { formatSlotRanges, SLOT_COUNT } from '../slots.js';
import { type ClusterNode, findNode, NodeRole, nodeAddress } from '../topology.js';

/** A master with the slots it owns, ascending, as the snapshot sees it. */
export interface MasterSlots {
  readonly node: ClusterNode;
  readonly slots: readonly number[];
}

/** `127.0.0.1:7000 (3f2a9c1d)`: the address an operator recognises, and the id prefix to be sure. */
export function describeNode(node: Pick<ClusterNode, 'id' | 'host' | 'port'>): string {
  return `${nodeAddress(node)} (${node.id.slice(0, 8)})`;
}

/**
 * Resolves a reference (id, 8+ character id prefix, host:port) to a master that can take part in a
 * migration. `role` names the field in the message ("source", "node to drain", "weights key").
 */
export function resolveMaster(snapshot: ClusterSnapshot, reference: string, role: string): ClusterNode {
  const node = findNode(snapshot.nodes, reference);
  if (!node) {
    throw new SlotfleetError(
      ErrorCode.UnknownNode,
      `${role} "${reference}" is not a node of this cluster (give a node id, an 8+ character id prefix, or host:port)`,
    );
  }
  if (node.role !== NodeRole.Master) {
    throw new SlotfleetError(
      ErrorCode.NotMaster,
      `${role} "${reference}" (${nodeAddress(node)}) is a replica of ${node.masterId}: only masters hold slots`,
    );
  }
  if (node.failed) {
    throw new SlotfleetError(
      ErrorCode.NotMaster,
      `${role} "${reference}" (${nodeAddress(node)}) is flagged ${node.flags.join(',')}: it cannot take part in a migration now`,
    );
  }
  return node;
}

/** Masters not flagged failing, in the order of the snapshot, each with the slots it owns. */
export function liveMasters(snapshot: ClusterSnapshot): MasterSlots[] {
  const slotsById = new Map<string, number[]>();
  snapshot.owners.forEach((ownerId, slot) => {
    if (ownerId === null) return;
    const slots = slotsById.get(ownerId);
    if (slots) slots.push(slot);
    else slotsById.set(ownerId, [slot]);
  });
  return snapshot.nodes
    .filter((node) => node.role === NodeRole.Master && !node.failed)
    .map((node) => ({ node, slots: slotsById.get(node.id) ?? [] }));
}

/**
 * Validates `weights` (node reference -> weight) and returns node id -> weight. A weight is a finite
 * number >= 0; two references to the same node must agree.
 */
export function resolveWeights(
  snapshot: ClusterSnapshot,
  weights: Readonly<Record<string, number>> | undefined,
): Map<string, number> {
  const byId = new Map<string, number>();
  const referenceById = new Map<string, string>();
  for (const [reference, weight] of Object.entries(weights ?? {})) {
    if (typeof weight !== 'number' || !Number.isFinite(weight) || weight < 0) {
      throw new SlotfleetError(
        ErrorCode.InvalidRequest,
        `weights["${reference}"] is ${String(weight)}: a weight must be a finite number >= 0`,
      );
    }
    const node = resolveMaster(snapshot, reference, 'weights key');
    const earlier = referenceById.get(node.id);
    if (earlier !== undefined && byId.get(node.id) !== weight) {
      throw new SlotfleetError(
        ErrorCode.InvalidRequest,
        `weights["${earlier}"] and weights["${reference}"] name the same node ${describeNode(node)} with different weights`,
      );
    }
    byId.set(node.id, weight);
    referenceById.set(node.id, reference);
  }
  return byId;
}

/**
 * Refuses to plan on a cluster that redis-cli's clusterManagerCheckCluster would refuse: open slots
 * (a migration in flight or interrupted), uncovered slots, or slots served by a failing master.
 * Counting slots per master on such a cluster gives wrong balances, and moving an open slot races
 * with whatever opened it.
 */
export function assertClusterSettled(snapshot: ClusterSnapshot, action: string): void {
  if (snapshot.openSlots.length > 0) {
    const open = formatSlotRanges(snapshot.openSlots.map((entry) => entry.slot));
    throw new SlotfleetError(
      ErrorCode.SlotConflict,
      `cannot ${action}: slots ${open} are open (IMPORTING/MIGRATING) on the cluster: finish or fix them first`,
      { details: { slots: open } },
    );
  }
  const unowned: number[] = [];
  for (let slot = 0; slot < SLOT_COUNT; slot++)
    if ((snapshot.owners[slot] ?? null) === null) unowned.push(slot);
  if (unowned.length > 0) {
    const slots = formatSlotRanges(unowned);
    throw new SlotfleetError(
      ErrorCode.SlotConflict,
      `cannot ${action}: slots ${slots} have no owner in the cluster: run fix first`,
      { details: { slots } },
    );
  }
  const live = new Set(liveMasters(snapshot).map((master) => master.node.id));
  const unserved = new Map<string, number[]>();
  snapshot.owners.forEach((ownerId, slot) => {
    if (ownerId === null || live.has(ownerId)) return;
    const slots = unserved.get(ownerId);
    if (slots) slots.push(slot);
    else unserved.set(ownerId, [slot]);
  });
  for (const [ownerId, slots] of unserved) {
    const owner = snapshot.nodes.find((node) => node.id === ownerId);
    const name = owner ? describeNode(owner) : ownerId;
    const state = owner ? `flagged ${owner.flags.join(',')}` : 'unknown';
    throw new SlotfleetError(
      ErrorCode.SlotConflict,
      `cannot ${action}: slots ${formatSlotRanges(slots)} belong to ${name}, which is ${state}: fail over to a replica first`,
      { details: { slots: formatSlotRanges(slots) } },
    );
  }
}

export { assertSlotsClosed } from '../plan.js';

/** Every planner ends here: one-way nodes (see assertOneWayNodes), moves in slot order. */
export function finishMoves(moves: SlotMove[]): SlotMove[] {
  assertOneWayNodes(moves);
  return moves.sort((a, b) => a.slot - b.slot);
}
