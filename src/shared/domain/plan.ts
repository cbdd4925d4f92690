/**
 * Turning an operator's request into per-slot moves. Pure: takes a snapshot of the cluster and the
 * request, returns moves or throws a SlotfleetError naming what is wrong (mapped to a 4xx by the API).
 */
import { ErrorCode, SlotfleetError } from '../errors.js';
import { formatSlotRanges, parseSlotRanges } from './slots.js';
import { type ClusterNode, findNode, NodeRole, type NodeView, nodeAddress, slotOwners } from './topology.js';

export interface SlotMove {
  readonly slot: number;
  readonly source: NodeRef;
  readonly target: NodeRef;
  /** Set when the move repairs a broken slot (fix): what else must happen besides source -> target. */
  readonly repair?: SlotRepair;
}

export interface SlotRepair {
  /** A FixKind: finish-migration, close-stale, move-keys-to-owner, assign-uncovered, resolve-owners. */
  readonly kind: string;
  /** Masters whose keys of the slot move to the target. */
  readonly keysFrom: readonly NodeRef[];
  /** Masters whose IMPORTING/MIGRATING state for the slot is cleared (SETSLOT STABLE). */
  readonly closeOn: readonly NodeRef[];
  readonly reason: string;
}

/** How job payloads name a node: id for identity, address to reach it. */
export interface NodeRef {
  readonly id: string;
  readonly host: string;
  readonly port: number;
}

export interface OpenSlot {
  readonly slot: number;
  readonly nodeId: string;
  readonly state: 'importing' | 'migrating';
  readonly peerId: string;
}

/** The cluster as the masters see it: the node list of one view, each master's own open slots. */
export interface ClusterSnapshot {
  readonly nodes: readonly ClusterNode[];
  readonly owners: readonly (string | null)[];
  readonly openSlots: readonly OpenSlot[];
  /** Slots on whose owner some master disagrees with the seed (absent when not checked). */
  readonly disagreeingSlots?: readonly number[];
}

export function snapshotFromViews(seedView: NodeView, masterViews: readonly NodeView[]): ClusterSnapshot {
  const openSlots: OpenSlot[] = [];
  for (const view of masterViews) {
    for (const [slot, peerId] of view.importing)
      openSlots.push({ slot, nodeId: view.myself.id, state: 'importing', peerId });
    for (const [slot, peerId] of view.migrating)
      openSlots.push({ slot, nodeId: view.myself.id, state: 'migrating', peerId });
  }
  openSlots.sort((a, b) => a.slot - b.slot);
  const owners = slotOwners(seedView);
  const disagreeing = new Set<number>();
  for (const view of masterViews) {
    slotOwners(view).forEach((owner, slot) => {
      if (owner !== owners[slot]) disagreeing.add(slot);
    });
  }
  return {
    nodes: seedView.nodes,
    owners,
    openSlots,
    disagreeingSlots: [...disagreeing].sort((a, b) => a - b),
  };
}

export interface MoveRequest {
  readonly slots: string;
  readonly target: string;
}

export interface MovePlan {
  readonly moves: readonly SlotMove[];
  /** Slots the request names that the target owns already: nothing to do for them. */
  readonly alreadyOnTarget: readonly number[];
}

export function nodeRef(node: ClusterNode): NodeRef {
  return { id: node.id, host: node.host, port: node.port };
}

/** Resolves a target reference to a master that can take slots, or throws naming the problem. */
export function resolveTargetMaster(snapshot: ClusterSnapshot, reference: string): ClusterNode {
  const node = findNode(snapshot.nodes, reference);
  if (!node) {
    throw new SlotfleetError(
      ErrorCode.UnknownNode,
      `target "${reference}" is not a node of this cluster (give a node id, an 8+ character id prefix, or host:port)`,
    );
  }
  if (node.role !== NodeRole.Master) {
    throw new SlotfleetError(
      ErrorCode.NotMaster,
      `target "${reference}" (${nodeAddress(node)}) is a replica of ${node.masterId}: slots can only move to a master`,
    );
  }
  if (node.failed) {
    throw new SlotfleetError(
      ErrorCode.NotMaster,
      `target "${reference}" (${nodeAddress(node)}) is flagged ${node.flags.join(',')}: it cannot take slots now`,
    );
  }
  return node;
}

export function planExplicitMoves(snapshot: ClusterSnapshot, requests: readonly MoveRequest[]): MovePlan {
  if (requests.length === 0) {
    throw new SlotfleetError(ErrorCode.InvalidRequest, 'moves is empty: give at least one {slots, target}');
  }
  const claimedBy = new Map<number, number>();
  const moves: SlotMove[] = [];
  const alreadyOnTarget: number[] = [];
  const unowned: number[] = [];
  requests.forEach((request, index) => {
    let slots: number[];
    try {
      slots = parseSlotRanges(request.slots);
    } catch (error) {
      throw new SlotfleetError(
        ErrorCode.InvalidRequest,
        `moves[${index}].slots: ${(error as Error).message}`,
      );
    }
    const target = resolveTargetMaster(snapshot, request.target);
    for (const slot of slots) {
      const earlier = claimedBy.get(slot);
      if (earlier !== undefined) {
        throw new SlotfleetError(
          ErrorCode.InvalidRequest,
          `slot ${slot} appears in moves[${earlier}] and moves[${index}]: each slot can move once`,
        );
      }
      claimedBy.set(slot, index);
      const ownerId = snapshot.owners[slot] ?? null;
      if (ownerId === null) {
        unowned.push(slot);
        continue;
      }
      if (ownerId === target.id) {
        alreadyOnTarget.push(slot);
        continue;
      }
      const owner = snapshot.nodes.find((node) => node.id === ownerId);
      if (!owner)
        throw new SlotfleetError(ErrorCode.NotConverged, `owner ${ownerId} of slot ${slot} is unknown`);
      moves.push({ slot, source: nodeRef(owner), target: nodeRef(target) });
    }
  });
  if (unowned.length > 0) {
    throw new SlotfleetError(
      ErrorCode.SlotConflict,
      `slots ${formatSlotRanges(unowned)} have no owner in the cluster: run fix first`,
      { details: { slots: formatSlotRanges(unowned) } },
    );
  }
  assertSlotsClosed(
    snapshot,
    moves.map((move) => move.slot),
  );
  assertOneWayNodes(moves);
  moves.sort((a, b) => a.slot - b.slot);
  return { moves, alreadyOnTarget };
}

/**
 * A node may give slots or receive them in one migration, not both. A receiving node bumps its config
 * epoch when it takes a slot; if it is also giving a slot away, that bump can lift it above the epoch
 * of the node receiving from it, and Redis 7.0 then lets the old mapping win and the receiver drops
 * the slot's keys (see slot-migration.ts, rule 2).
 */
export function assertOneWayNodes(moves: readonly SlotMove[]): void {
  const sources = new Set(moves.map((move) => move.source.id));
  const targets = new Map(moves.map((move) => [move.target.id, move.target]));
  const both = [...targets.values()].filter((target) => sources.has(target.id));
  if (both.length > 0) {
    const names = both.map((node) => `${node.host}:${node.port}`).join(', ');
    throw new SlotfleetError(
      ErrorCode.UnsafePlan,
      `${names} would both give and receive slots in one migration: split it into two migrations ` +
        '(a node that imports while it exports can race on config epochs and lose keys)',
    );
  }
}

/** Refuses moves of slots that are IMPORTING or MIGRATING somewhere: moving them races with whatever opened them. */
export function assertSlotsClosed(snapshot: ClusterSnapshot, slots: Iterable<number>): void {
  const moving = new Set(slots);
  const open = snapshot.openSlots.filter((entry) => moving.has(entry.slot));
  if (open.length > 0) {
    const openSlots = formatSlotRanges(open.map((entry) => entry.slot));
    throw new SlotfleetError(
      ErrorCode.SlotConflict,
      `slots ${openSlots} are open (IMPORTING/MIGRATING) on the cluster: finish or fix them first`,
      { details: { slots: openSlots } },
    );
  }
}

/**
 * The moves in the order their jobs are queued: round-robin over source -> target pairs, each pair's
 * slots in their planned order. Workers take jobs in queue order and each node caps its slots in
 * flight, so a queue sorted by source would leave every source but the first idle while the
 * workers wait on its cap.
 */
export function interleaveByPair(moves: readonly SlotMove[]): SlotMove[] {
  const pairs = new Map<string, SlotMove[]>();
  for (const move of moves) {
    const key = `${move.source.id}>${move.target.id}`;
    const pair = pairs.get(key) ?? [];
    pair.push(move);
    pairs.set(key, pair);
  }
  const queues = [...pairs.values()];
  const ordered: SlotMove[] = [];
  for (let index = 0; ordered.length < moves.length; index++) {
    for (const queue of queues) if (index < queue.length) ordered.push(queue[index]!);
  }
  return ordered;
}
