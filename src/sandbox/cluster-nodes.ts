/**
 * CLUSTER NODES as the sandbox's waits read it. The text is parsed by the domain's parser, the one
 * the workers trust; this module only adds what the waits ask about: how many slots a node owns, and
 * whether the node that wrote the line sees it failing or still joining.
 */
import type { SlotRange } from '../shared/domain/slots.js';
import {
  type ClusterNode,
  isFlaggedFailing,
  isJoining,
  ownersOfSlots,
  parseClusterNodes as parseNodeView,
  slotCount,
} from '../shared/domain/topology.js';

export { SLOT_COUNT } from '../shared/domain/slots.js';

export interface ClusterNodeEntry
  extends Pick<
    ClusterNode,
    'id' | 'host' | 'port' | 'flags' | 'role' | 'masterId' | 'myself' | 'linkConnected'
  > {
  /** Owned slots; MIGRATING/IMPORTING markers are left out. */
  readonly slotRanges: readonly SlotRange[];
  /** How many slots it owns. */
  readonly slots: number;
  /** Flagged `fail` or `fail?` (pfail) by the node that produced this line. */
  readonly failing: boolean;
  /** Still in handshake or without an address: not a cluster member yet. */
  readonly joining: boolean;
}

/** Every node one node's CLUSTER NODES lists, itself included. */
export function parseClusterNodes(text: string): ClusterNodeEntry[] {
  return parseNodeView(text).nodes.map((node) => ({
    id: node.id,
    host: node.host,
    port: node.port,
    flags: node.flags,
    role: node.role,
    masterId: node.masterId,
    myself: node.myself,
    linkConnected: node.linkConnected,
    slotRanges: node.slots,
    slots: slotCount(node),
    failing: isFlaggedFailing(node),
    joining: isJoining(node),
  }));
}

/** Slot -> owning master id (or null) as seen by one node. */
export function slotOwners(entries: readonly ClusterNodeEntry[]): Array<string | null> {
  return ownersOfSlots(entries.map(({ id, role, slotRanges }) => ({ id, role, slots: slotRanges })));
}

export function parseInfoField(info: string, field: string): string | undefined {
  const match = new RegExp(`^${field}:(.*)$`, 'm').exec(info);
  return match?.[1]?.trim();
}
