/**
 * Resharding: slots from some masters to one master, as redis-cli --cluster reshard does. Pure.
 *
 * With `slots: N`, like clusterManagerComputeReshardTable: each source gives a share of N in
 * proportion to the slots it holds, taking its LOWEST slots first. redis-cli rounds the largest
 * source's share up and every other share down, so it can move fewer than N slots; we hand the
 * rounding remainder to the largest fractional shares instead, so exactly N move.
 * `from: ['all']` means every other master holding slots (clusterManagerCommandReshard's "all").
 * The cluster must be settled first, as redis-cli's reshard checks (clusterManagerCheckCluster).
 *
 * With `ranges`, exactly those slots move, and each must be owned by one of the sources.
 * All moves go to one target that is not a source: one-way by construction.
 */
import { ErrorCode, SlotfleetError } from '../../errors.js';
import { type ClusterSnapshot, nodeRef, resolveTargetMaster, type SlotMove } from '../plan.js';
import { formatSlotRanges, parseSlotRanges, SLOT_COUNT } from '../slots.js';
import type { ClusterNode } from '../topology.js';
import {
  assertClusterSettled,
  assertSlotsClosed,
  describeNode,
  finishMoves,
  liveMasters,
  type MasterSlots,
  resolveMaster,
} from './common.js';

export interface ReshardOptions {
  /** References of the masters giving slots, or ['all']: every other master holding slots. */
  readonly from: readonly string[];
  /** Reference of the master receiving the slots. */
  readonly to: string;
  /** How many slots to move, shared among the sources in proportion to what each holds. */
  readonly slots?: number;
  /** Exactly which slots to move, e.g. "0-99,4000"; each must be owned by a source. */
  readonly ranges?: string;
}

export const ALL_SOURCES = 'all';

export function planReshard(snapshot: ClusterSnapshot, options: ReshardOptions): SlotMove[] {
  if ((options.slots === undefined) === (options.ranges === undefined)) {
    throw new SlotfleetError(
      ErrorCode.InvalidRequest,
      'give exactly one of slots (how many to move) and ranges (which ones, e.g. "0-99")',
    );
  }
  if (options.from.length === 0) {
    throw new SlotfleetError(ErrorCode.InvalidRequest, 'from is empty: give source nodes or ["all"]');
  }
  const all = options.from.some((reference) => reference.trim() === ALL_SOURCES);
  if (all && options.from.length > 1) {
    throw new SlotfleetError(
      ErrorCode.InvalidRequest,
      `from is ${JSON.stringify(options.from)}: "all" cannot be combined with node references`,
    );
  }
  const target = resolveTargetMaster(snapshot, options.to);
  const masters = liveMasters(snapshot);
  const sources = all ? allOtherSources(masters, target) : listedSources(snapshot, masters, options.from);
  const targetAsSource = sources.find((source) => source.node.id === target.id);
  if (targetAsSource) {
    throw new SlotfleetError(
      ErrorCode.UnsafePlan,
      `to "${options.to}" (${describeNode(target)}) is also a source: a node cannot give slots to itself`,
    );
  }
  const moves =
    options.ranges !== undefined
      ? movesForRanges(snapshot, sources, target, options.ranges)
      : movesForCount(snapshot, sources, target, options.slots!);
  return finishMoves(moves);
}

function allOtherSources(masters: readonly MasterSlots[], target: ClusterNode): MasterSlots[] {
  const sources = masters.filter((master) => master.node.id !== target.id && master.slots.length > 0);
  if (sources.length === 0) {
    throw new SlotfleetError(
      ErrorCode.UnsafePlan,
      `from is "all" but no master other than ${describeNode(target)} holds slots`,
    );
  }
  return sources;
}

function listedSources(
  snapshot: ClusterSnapshot,
  masters: readonly MasterSlots[],
  references: readonly string[],
): MasterSlots[] {
  const sources = new Map<string, MasterSlots>();
  for (const reference of references) {
    const node = resolveMaster(snapshot, reference, 'source');
    const master = masters.find((candidate) => candidate.node.id === node.id)!;
    sources.set(node.id, master);
  }
  return [...sources.values()];
}

function movesForCount(
  snapshot: ClusterSnapshot,
  sources: readonly MasterSlots[],
  target: ClusterNode,
  count: number,
): SlotMove[] {
  if (!Number.isInteger(count) || count < 1 || count > SLOT_COUNT) {
    throw new SlotfleetError(
      ErrorCode.InvalidRequest,
      `slots is ${String(count)}: give a whole number of slots from 1 to ${SLOT_COUNT}`,
    );
  }
  assertClusterSettled(snapshot, 'reshard');
  const held = sources.reduce((sum, source) => sum + source.slots.length, 0);
  if (count > held) {
    const names = sources.map((source) => `${describeNode(source.node)}: ${source.slots.length}`).join(', ');
    throw new SlotfleetError(
      ErrorCode.UnsafePlan,
      `slots is ${count} but the sources hold ${held} slots in total (${names})`,
    );
  }
  const shares = proportionalShares(
    sources.map((source) => source.slots.length),
    count,
  );
  const targetRef = nodeRef(target);
  return sources.flatMap((source, index) => {
    const sourceRef = nodeRef(source.node);
    return source.slots
      .slice(0, shares[index])
      .map((slot) => ({ slot, source: sourceRef, target: targetRef }));
  });
}

/**
 * Splits `total` among holders in proportion to `held`: floors first, then one more to the largest
 * fractional parts (ties: the larger holder, then the earlier one). Needs total <= sum of held.
 */
export function proportionalShares(held: readonly number[], total: number): number[] {
  const sum = held.reduce((acc, value) => acc + value, 0);
  if (sum === 0) return held.map(() => 0);
  const exact = held.map((value) => (total * value) / sum);
  const shares = exact.map(Math.floor);
  let remainder = total - shares.reduce((acc, value) => acc + value, 0);
  const order = held
    .map((_, index) => index)
    .sort((a, b) => exact[b]! - shares[b]! - (exact[a]! - shares[a]!) || held[b]! - held[a]! || a - b);
  for (const index of order) {
    if (remainder === 0) break;
    if (shares[index]! < held[index]!) {
      shares[index]! += 1;
      remainder--;
    }
  }
  return shares;
}

function movesForRanges(
  snapshot: ClusterSnapshot,
  sources: readonly MasterSlots[],
  target: ClusterNode,
  ranges: string,
): SlotMove[] {
  let slots: number[];
  try {
    slots = parseSlotRanges(ranges);
  } catch (error) {
    throw new SlotfleetError(ErrorCode.InvalidRequest, `ranges: ${(error as Error).message}`);
  }
  const sourceById = new Map(sources.map((source) => [source.node.id, source.node]));
  const strayByOwner = new Map<string | null, number[]>();
  const moves: SlotMove[] = [];
  const targetRef = nodeRef(target);
  for (const slot of slots) {
    const ownerId = snapshot.owners[slot] ?? null;
    const source = ownerId === null ? undefined : sourceById.get(ownerId);
    if (source) {
      moves.push({ slot, source: nodeRef(source), target: targetRef });
      continue;
    }
    const stray = strayByOwner.get(ownerId);
    if (stray) stray.push(slot);
    else strayByOwner.set(ownerId, [slot]);
  }
  if (strayByOwner.size > 0) {
    const problems = [...strayByOwner].map(([ownerId, stray]) => {
      if (ownerId === null) return `slots ${formatSlotRanges(stray)} have no owner`;
      const owner = snapshot.nodes.find((node) => node.id === ownerId);
      const name = owner ? describeNode(owner) : ownerId;
      const role = ownerId === target.id ? ', the target' : ', which is not a source';
      return `slots ${formatSlotRanges(stray)} are owned by ${name}${role}`;
    });
    throw new SlotfleetError(
      ErrorCode.UnsafePlan,
      `ranges must only name slots owned by the sources: ${problems.join('; ')}`,
      { details: { slots: formatSlotRanges([...strayByOwner.values()].flat()) } },
    );
  }
  assertSlotsClosed(snapshot, slots);
  return moves;
}
