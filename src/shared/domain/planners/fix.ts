/**
 * Fix: what is broken about each slot and who should own it afterwards, from every master's own
 * view. Pure: the caller reads CLUSTER NODES and which slots hold keys on every master; the executor
 * acts on the repairs. Anything that cannot be decided from that data is reported as unrepairable,
 * with the reason, and never guessed: a wrong guess here deletes keys.
 *
 * A master "claims" a slot when its own view lists itself as owner (redis-cli reads node->slots the
 * same way, from each node's myself line). Per slot, with C = claimants, K = masters holding keys,
 * M = masters MIGRATING it, I = masters IMPORTING it (and not migrating it):
 *
 * redis-cli clusterManagerFixOpenSlot (M or I not empty):
 *  - Case 1, one migrating A -> B and one importing node: finish the migration A -> B.
 *    Ours: `finish-migration` when A is MIGRATING to B and B has started taking over (IMPORTING from
 *    A, or already claiming the slot, or holding keys of it), with no other node involved. redis-cli
 *    first makes "the node with most keys" the owner when B already holds keys, and so may roll the
 *    migration back, or fail on SETSLOT NODE against a node still holding keys; we always roll
 *    forward, the direction both nodes were told to go. redis-cli also pairs A with an importing
 *    node that is not A's target (or with a node that merely holds keys); we report that unrepairable.
 *  - Case 2, no migrating node, importing nodes (or non-owners holding keys): move their keys to the
 *    owner "cold", SETSLOT STABLE them, SETSLOT NODE owner everywhere.
 *    Ours: `move-keys-to-owner` (keysFrom, closeOn), or `close-stale` when none of them holds keys
 *    (only SETSLOT STABLE is needed). With several claimants or none, the owner is chosen first, as
 *    below. redis-cli picks the owner by most keys even when one master claims the slot; we keep the
 *    claimant: it is the node clients have been writing to.
 *  - Case 3, one migrating, several importing, none holding keys: finish the migration to the
 *    importing node that is the migration's target and close the others, or close all of them when
 *    none is. Ours: `finish-migration` with closeOn, or `close-stale`. Same condition: any key on an
 *    importing node makes it unrepairable (redis-cli: "can't fix this slot yet").
 *  - Case 4, one migrating node, nothing importing, and the migrating node owns the slot or holds no
 *    keys: SETSLOT STABLE on it. Ours: `close-stale` (or `assign-uncovered` when nobody claims it).
 *  - Several migrating nodes, or anything else: unrepairable.
 * redis-cli clusterManagerFixSlotsCoverage (no master claims the slot):
 *  - No keys anywhere: redis-cli covers it with a random master; ours the master with fewest slots
 *    (counting what this plan already assigned), so a batch of uncovered slots spreads evenly.
 *  - Keys on one master: it gets the slot. Keys on several: the one with most keys gets it and the
 *    others' keys move to it; ours needs keysInSlot to see who has most, and a unique maximum.
 *    All `assign-uncovered`.
 * redis-cli clusterManagerFixMultipleSlotOwners (--cluster-search-multiple-owners; several claim it):
 *  - The node with most keys keeps it (`resolve-owners`). With no keys anywhere redis-cli keeps the
 *    first node it knows; ours the claimant with the highest config epoch (the claim Redis itself lets
 *    win), and unrepairable on a tie.
 *  - Keys on a non-owner with nothing open (the same redis-cli function treats the holder as one
 *    more owner): `move-keys-to-owner` when the owner holds none and one other master does, or when
 *    key counts show the owner holds most, as redis-cli would then decide; otherwise unrepairable,
 *    since redis-cli would hand the slot to another node and which copy is current cannot be told.
 * Masters flagged failing, or without a view, that still serve slots stop the whole plan: redis-cli
 * refuses to fix with unreachable masters too (it would treat their slots as uncovered).
 */
import { ErrorCode, SlotfleetError } from '../../errors.js';
import { type NodeRef, nodeRef, type SlotRepair } from '../plan.js';
import { SLOT_COUNT } from '../slots.js';
import { type ClusterNode, NodeRole, type NodeView, slotOwners } from '../topology.js';
import { describeNode } from './common.js';

export const FixKind = {
  /** Source is MIGRATING the slot to target, which has started taking it: finish it like any slot move. */
  FinishMigration: 'finish-migration',
  /** Nothing moves: SETSLOT STABLE on closeOn; target (= source) keeps the slot. */
  CloseStale: 'close-stale',
  /** Keys on keysFrom move to target, the owner; then SETSLOT STABLE on closeOn and SETSLOT NODE target everywhere. */
  MoveKeysToOwner: 'move-keys-to-owner',
  /** No master claims the slot: ADDSLOTS on target, keys on keysFrom move to it, SETSLOT STABLE on closeOn. */
  AssignUncovered: 'assign-uncovered',
  /** Several masters claim it: target keeps it, the others DELSLOTS it, keys on keysFrom move to target. */
  ResolveOwners: 'resolve-owners',
} as const;
export type FixKind = (typeof FixKind)[keyof typeof FixKind];

/** One master's own account of the cluster. */
export interface FixNodeView {
  readonly nodeId: string;
  /** slot -> owner id (null: unassigned), as this master sees it (16384 entries). */
  readonly owners: readonly (string | null)[];
  /** slot -> id of the node this master is importing it from. */
  readonly importing: ReadonlyMap<number, string>;
  /** slot -> id of the node this master is migrating it to. */
  readonly migrating: ReadonlyMap<number, string>;
  /** Slots in which this master holds at least one key. */
  readonly slotsWithKeys: ReadonlySet<number>;
  /** COUNTKEYSINSLOT of slots with keys: only needed to choose between several masters holding keys of a slot. */
  readonly keysInSlot?: ReadonlyMap<number, number>;
}

export interface FixInput {
  /** Every node of the cluster (one view's node list is enough: it supplies addresses, roles, epochs). */
  readonly nodes: readonly ClusterNode[];
  /** One entry per master. */
  readonly views: readonly FixNodeView[];
}

/** A repair is a slot move (source -> target) plus the SlotRepair extras the fix job performs. */
export interface FixRepair extends SlotRepair {
  readonly slot: number;
  readonly kind: FixKind;
  /** Where the slot or its keys come from: the migrating node, the first node giving keys or the slot; target when nothing moves. */
  readonly source: NodeRef;
  /** The master that owns the slot once repaired. */
  readonly target: NodeRef;
}

export interface UnrepairableSlot {
  readonly slot: number;
  readonly reason: string;
}

export interface FixPlan {
  readonly repairs: readonly FixRepair[];
  readonly unrepairable: readonly UnrepairableSlot[];
}

/** Builds a master's FixNodeView from its parsed CLUSTER NODES and the slots where it holds keys. */
export function fixViewFrom(
  view: NodeView,
  slotsWithKeys: Iterable<number>,
  keysInSlot?: ReadonlyMap<number, number>,
): FixNodeView {
  return {
    nodeId: view.myself.id,
    owners: slotOwners(view),
    importing: view.importing,
    migrating: view.migrating,
    slotsWithKeys: new Set(slotsWithKeys),
    ...(keysInSlot ? { keysInSlot } : {}),
  };
}

interface Master {
  readonly node: ClusterNode;
  readonly view: FixNodeView;
  readonly ref: NodeRef;
}

interface SlotFacts {
  readonly slot: number;
  readonly claimants: readonly Master[];
  readonly holders: readonly Master[];
  readonly migrating: readonly Master[];
  readonly importing: readonly Master[];
}

type Outcome = FixRepair | UnrepairableSlot | null;

export function planFix(input: FixInput): FixPlan {
  const masters = reachableMasters(input);
  const byId = new Map(masters.map((master) => [master.node.id, master]));
  const claimed = (master: Master): number =>
    master.view.owners.reduce<number>((count, owner) => count + (owner === master.node.id ? 1 : 0), 0);
  const fixer = new SlotFixer(byId, new Map(masters.map((master) => [master.node.id, claimed(master)])));
  const repairs: FixRepair[] = [];
  const unrepairable: UnrepairableSlot[] = [];
  for (let slot = 0; slot < SLOT_COUNT; slot++) {
    const facts = factsOf(masters, slot);
    if (facts === null) continue;
    const outcome = fixer.classify(facts);
    if (outcome === null) continue;
    if ('kind' in outcome) {
      repairs.push(outcome);
      fixer.settle(facts, outcome.target.id);
    } else {
      unrepairable.push(outcome);
    }
  }
  return { repairs, unrepairable };
}

function reachableMasters(input: FixInput): Master[] {
  const viewById = new Map<string, FixNodeView>();
  for (const view of input.views) {
    const node = input.nodes.find((candidate) => candidate.id === view.nodeId);
    if (!node || node.role !== NodeRole.Master) {
      throw new SlotfleetError(
        ErrorCode.InvalidRequest,
        `views has an entry for ${view.nodeId}, which is not a master of this cluster`,
      );
    }
    if (viewById.has(view.nodeId)) {
      throw new SlotfleetError(ErrorCode.InvalidRequest, `views has two entries for ${describeNode(node)}`);
    }
    if (view.owners.length !== SLOT_COUNT) {
      throw new SlotfleetError(
        ErrorCode.InvalidRequest,
        `the view of ${describeNode(node)} maps ${view.owners.length} slots: it needs all ${SLOT_COUNT}`,
      );
    }
    viewById.set(view.nodeId, view);
  }
  const masters: Master[] = [];
  for (const node of input.nodes) {
    if (node.role !== NodeRole.Master) continue;
    const view = viewById.get(node.id);
    if (view && !node.failed) {
      masters.push({ node, view, ref: nodeRef(node) });
      continue;
    }
    const served = input.views.some((candidate) => candidate.owners.includes(node.id));
    if (served) {
      const why = node.failed ? `is flagged ${node.flags.join(',')}` : 'has no view in the input';
      throw new SlotfleetError(
        ErrorCode.UnsafePlan,
        `master ${describeNode(node)} ${why} but still serves slots: fail over to a replica (or read its view) ` +
          'before fixing; redis-cli refuses to fix with unreachable masters too, as their slots would look uncovered',
      );
    }
  }
  return masters;
}

/** The slot's state on every master, or null when it is healthy (one claimant, keys only there, nothing open). */
function factsOf(masters: readonly Master[], slot: number): SlotFacts | null {
  const claimants: Master[] = [];
  const holders: Master[] = [];
  const migrating: Master[] = [];
  const importing: Master[] = [];
  for (const master of masters) {
    const { view } = master;
    if (view.owners[slot] === master.node.id) claimants.push(master);
    if (view.slotsWithKeys.has(slot)) holders.push(master);
    if (view.migrating.has(slot)) migrating.push(master);
    else if (view.importing.has(slot)) importing.push(master);
  }
  const healthy =
    migrating.length === 0 &&
    importing.length === 0 &&
    claimants.length === 1 &&
    holders.every((holder) => holder === claimants[0]);
  return healthy ? null : { slot, claimants, holders, migrating, importing };
}

class SlotFixer {
  constructor(
    private readonly byId: ReadonlyMap<string, Master>,
    private readonly slotCounts: Map<string, number>,
  ) {}

  classify(facts: SlotFacts): Outcome {
    const { claimants, migrating, importing } = facts;
    if (migrating.length > 0) return this.migratingSlot(facts);
    if (claimants.length === 0) return this.uncovered(facts, importing);
    if (claimants.length > 1) return this.multipleOwners(facts, importing);
    const owner = claimants[0]!;
    if (importing.length > 0) return this.keysToOwner(facts, owner);
    return this.strayKeys(facts, owner);
  }

  /** Counts the slot for its new owner, so later uncovered slots go to the then-emptiest master. */
  settle(facts: SlotFacts, ownerId: string): void {
    for (const claimant of facts.claimants) {
      if (claimant.node.id !== ownerId) this.adjustCount(claimant.node.id, -1);
    }
    if (!facts.claimants.some((claimant) => claimant.node.id === ownerId)) this.adjustCount(ownerId, 1);
  }

  private adjustCount(id: string, delta: number): void {
    this.slotCounts.set(id, (this.slotCounts.get(id) ?? 0) + delta);
  }

  private migratingSlot(facts: SlotFacts): Outcome {
    const { slot, claimants, holders, migrating, importing } = facts;
    if (migrating.length > 1) {
      return unrepairable(
        slot,
        `MIGRATING on ${names(migrating)}: only one node can be migrating a slot; ${describeState(facts)}`,
      );
    }
    const source = migrating[0]!;
    const peerId = source.view.migrating.get(slot)!;
    const peer = this.byId.get(peerId);
    if (!peer) {
      return unrepairable(
        slot,
        `MIGRATING on ${describeNode(source.node)} to ${peerId}, which is not a reachable master; ${describeState(facts)}`,
      );
    }
    const importingFrom = peer.view.importing.get(slot);
    if (importing.includes(peer) && importingFrom !== source.node.id) {
      return unrepairable(
        slot,
        `${describeNode(source.node)} is MIGRATING it to ${describeNode(peer.node)}, which is IMPORTING it from ${importingFrom}`,
      );
    }
    const pair = new Set<Master>([source, peer]);
    const others = [...new Set([...claimants, ...holders, ...importing])].filter(
      (master) => !pair.has(master),
    );
    if (others.length === 0) {
      if (importing.includes(peer) || claimants.includes(peer) || holders.includes(peer)) {
        return repair(
          slot,
          FixKind.FinishMigration,
          source,
          peer,
          [],
          [],
          `MIGRATING on ${describeNode(source.node)} to ${describeNode(peer.node)}, which ${peerProgress(facts, peer)}: ` +
            'finish the migration (redis-cli fix case 1)',
        );
      }
      if (claimants.includes(source)) {
        return repair(
          slot,
          FixKind.CloseStale,
          source,
          source,
          [],
          [source],
          `MIGRATING on its owner ${describeNode(source.node)} to ${describeNode(peer.node)}, which neither imports it ` +
            'nor holds its keys: close it (redis-cli fix case 4)',
        );
      }
      return this.uncovered(facts, [source]);
    }
    const onlyImporters = others.every((master) => importing.includes(master));
    const importersHoldKeys = importing.some((master) => holders.includes(master));
    const sourceOwnsAlone = claimants.length === 1 && claimants[0] === source;
    if (onlyImporters && !importersHoldKeys && sourceOwnsAlone) {
      const strayImporters = importing.filter((master) => master !== peer);
      if (importing.includes(peer)) {
        return repair(
          slot,
          FixKind.FinishMigration,
          source,
          peer,
          [],
          strayImporters,
          `MIGRATING on ${describeNode(source.node)} to ${describeNode(peer.node)}, also IMPORTING on ` +
            `${names(strayImporters)} without keys: finish the migration and close the others (redis-cli fix case 3)`,
        );
      }
      return repair(
        slot,
        FixKind.CloseStale,
        source,
        source,
        [],
        [source, ...importing],
        `MIGRATING on ${describeNode(source.node)} to ${describeNode(peer.node)}, which does not import it, and ` +
          `IMPORTING on ${names(importing)} without keys: close it everywhere (redis-cli fix case 3)`,
      );
    }
    return unrepairable(
      slot,
      `${describeState(facts)}: more nodes are involved than one migration explains ` +
        '(redis-cli: "can\'t fix this slot yet"); resolve it by hand',
    );
  }

  /** No claimant: clusterManagerFixSlotsCoverage. */
  private uncovered(facts: SlotFacts, closeOn: readonly Master[]): Outcome {
    const { slot, holders } = facts;
    if (holders.length === 0) {
      const target = this.fewestSlots();
      return repair(
        slot,
        FixKind.AssignUncovered,
        target,
        target,
        [],
        closeOn,
        `no master claims it and none holds its keys: assign it to ${describeNode(target.node)}, the master ` +
          'with fewest slots (redis-cli picks a random master)',
      );
    }
    const target = mostKeys(slot, holders);
    if (typeof target === 'string') return unrepairable(slot, `no master claims it; ${target}`);
    const keysFrom = holders.filter((holder) => holder !== target);
    return repair(
      slot,
      FixKind.AssignUncovered,
      keysFrom[0] ?? target,
      target,
      keysFrom,
      closeOn,
      keysFrom.length === 0
        ? `no master claims it; only ${describeNode(target.node)} holds its keys: assign it there`
        : `no master claims it; ${describeNode(target.node)} holds most of its keys: assign it there and move ` +
            `the keys of ${names(keysFrom)} to it`,
    );
  }

  /** Several claimants: clusterManagerFixMultipleSlotOwners. */
  private multipleOwners(facts: SlotFacts, closeOn: readonly Master[]): Outcome {
    const { slot, claimants, holders } = facts;
    let target: Master | string;
    if (holders.length === 0) {
      const topEpoch = Math.max(...claimants.map((claimant) => claimant.node.configEpoch));
      const top = claimants.filter((claimant) => claimant.node.configEpoch === topEpoch);
      target =
        top.length === 1
          ? top[0]!
          : `claimed by ${names(claimants)}, ${names(top)} with the same config epoch ${topEpoch}, and no keys anywhere`;
    } else {
      target = mostKeys(slot, holders);
    }
    if (typeof target === 'string') {
      return unrepairable(slot, `claimed by ${names(claimants)}; ${target}: choose the owner by hand`);
    }
    const keysFrom = holders.filter((holder) => holder !== target);
    const losers = claimants.filter((claimant) => claimant !== target);
    return repair(
      slot,
      FixKind.ResolveOwners,
      keysFrom[0] ?? losers[0] ?? target,
      target,
      keysFrom,
      closeOn,
      `claimed by ${names(claimants)}: ${describeNode(target.node)} keeps it` +
        (holders.length === 0 ? ' (highest config epoch, no keys anywhere)' : ' (most keys)') +
        (keysFrom.length > 0 ? `, the keys of ${names(keysFrom)} move to it` : ''),
    );
  }

  /** One claimant, importing nodes: redis-cli fix case 2. */
  private keysToOwner(facts: SlotFacts, owner: Master): Outcome {
    const { slot, holders, importing } = facts;
    const keysFrom = holders.filter((holder) => holder !== owner);
    if (keysFrom.length === 0) {
      return repair(
        slot,
        FixKind.CloseStale,
        owner,
        owner,
        [],
        importing,
        `IMPORTING on ${names(importing)}, which hold no keys of it; ${describeNode(owner.node)} owns it: ` +
          'close the import (redis-cli fix case 2)',
      );
    }
    return repair(
      slot,
      FixKind.MoveKeysToOwner,
      keysFrom[0]!,
      owner,
      keysFrom,
      importing,
      `IMPORTING on ${names(importing)}, keys on ${names(keysFrom)}; ${describeNode(owner.node)} owns it: ` +
        'move the keys back to the owner and close the import (redis-cli fix case 2)',
    );
  }

  /** One claimant, nothing open, keys elsewhere too. */
  private strayKeys(facts: SlotFacts, owner: Master): Outcome {
    const { slot, holders } = facts;
    const strays = holders.filter((holder) => holder !== owner);
    const ownerHolds = holders.includes(owner);
    if (!ownerHolds && strays.length === 1) {
      return repair(
        slot,
        FixKind.MoveKeysToOwner,
        strays[0]!,
        owner,
        strays,
        [],
        `keys only on ${describeNode(strays[0]!.node)}, which does not own it; its owner ${describeNode(owner.node)} ` +
          'holds none: move them to the owner',
      );
    }
    const most = ownerHolds ? mostKeys(slot, holders) : null;
    if (most === owner) {
      return repair(
        slot,
        FixKind.MoveKeysToOwner,
        strays[0]!,
        owner,
        strays,
        [],
        `keys on its owner ${describeNode(owner.node)} and on ${names(strays)}; the owner holds most: move the ` +
          'others to it (redis-cli --cluster-search-multiple-owners)',
      );
    }
    return unrepairable(
      slot,
      `keys on ${names(strays)}, which do not own it, and ${ownerHolds ? 'on' : 'none on'} its owner ` +
        `${describeNode(owner.node)}: which copy is current cannot be told from key counts ` +
        '(redis-cli --cluster-search-multiple-owners would give the slot to the node with most keys); ' +
        'inspect the keys and move or delete them by hand',
    );
  }

  private fewestSlots(): Master {
    let fewest: Master | undefined;
    for (const master of this.byId.values()) {
      if (!fewest || this.slotCounts.get(master.node.id)! < this.slotCounts.get(fewest.node.id)!)
        fewest = master;
    }
    return fewest!;
  }
}

/** The holder with most keys (clusterManagerGetNodeWithMostKeysInSlot), or why it cannot be told. */
function mostKeys(slot: number, holders: readonly Master[]): Master | string {
  if (holders.length === 1) return holders[0]!;
  const counts = holders.map((holder) => holder.view.keysInSlot?.get(slot));
  if (counts.some((count) => count === undefined)) {
    return `keys on ${names(holders)} and their key counts are unknown (give keysInSlot to choose)`;
  }
  const top = Math.max(...(counts as number[]));
  const leaders = holders.filter((_, index) => counts[index] === top);
  if (leaders.length > 1) return `${names(leaders)} hold the same number of keys (${top})`;
  return leaders[0]!;
}

function peerProgress(facts: SlotFacts, peer: Master): string {
  if (facts.importing.includes(peer)) return 'is IMPORTING it';
  if (facts.claimants.includes(peer)) return 'already claims it';
  return 'holds keys of it';
}

function describeState(facts: SlotFacts): string {
  const parts = [
    `claimed by ${facts.claimants.length > 0 ? names(facts.claimants) : 'no master'}`,
    `keys on ${facts.holders.length > 0 ? names(facts.holders) : 'no master'}`,
  ];
  if (facts.migrating.length > 0) parts.push(`MIGRATING on ${names(facts.migrating)}`);
  if (facts.importing.length > 0) parts.push(`IMPORTING on ${names(facts.importing)}`);
  return parts.join(', ');
}

function names(masters: readonly Master[]): string {
  return masters.map((master) => describeNode(master.node)).join(', ');
}

function repair(
  slot: number,
  kind: FixKind,
  source: Master,
  target: Master,
  keysFrom: readonly Master[],
  closeOn: readonly Master[],
  reason: string,
): FixRepair {
  return {
    slot,
    kind,
    source: source.ref,
    target: target.ref,
    keysFrom: keysFrom.map((master) => master.ref),
    closeOn: closeOn.map((master) => master.ref),
    reason: `slot ${slot}: ${reason}`,
  };
}

function unrepairable(slot: number, reason: string): UnrepairableSlot {
  return { slot, reason: `slot ${slot}: ${reason}` };
}
