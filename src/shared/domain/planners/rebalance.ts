/**
 * Rebalancing: which slots to move so that every master holds its weighted share. Pure.
 *
 * By slots, this is redis-cli 7.0's clusterManagerCommandRebalance, step by step:
 *  - Masters taking part: every master holding slots; empty masters only with useEmptyMasters
 *    (redis-cli sets an empty master's weight to 0 and leaves it out otherwise, whatever weight was
 *    given). A master with weight 0 that holds slots takes part and gives all of them away.
 *  - expected = (int)((float)16384 / totalWeight * weight), in single precision and truncated, as
 *    redis-cli computes it; balance = slots held - expected (positive: gives, negative: takes).
 *  - Threshold: nothing moves unless some master is off by more than `threshold` percent, measured
 *    against the slots it HOLDS: |100 - 100 * expected / held| (a master holding none counts as off
 *    when it should get more than one slot). One deliberate difference: redis-cli skips the check
 *    when the threshold is 0 and then never moves anything; here 0 means "any imbalance".
 *  - Truncation leaves the balances summing to more than 0; redis-cli walks the masters in its node
 *    list order (the seed node, then the others as the seed's CLUSTER NODES lists them; here the
 *    snapshot's "myself" node, then its node list) and lowers the balance of every master at or below
 *    0 by one until the sum is 0.
 *  - Masters sorted by balance; the most over-full gives min(|its balance|, |receiver's balance|)
 *    slots to the most under-full, then whichever reached 0 is passed over, until the two ends meet.
 *    Each batch comes from clusterManagerComputeReshardTable with a single source, which takes that
 *    source's LOWEST slots first; we take its lowest slots that no earlier batch took.
 * Balances only ever move toward 0, so a master gives or takes, never both: one-way by construction.
 *
 * By keys, see planByKeys below.
 */
import { ErrorCode, SlotfleetError } from '../../errors.js';
import { type ClusterSnapshot, nodeRef, type SlotMove } from '../plan.js';
import { SLOT_COUNT } from '../slots.js';
import type { ClusterNode } from '../topology.js';
import {
  assertClusterSettled,
  describeNode,
  finishMoves,
  liveMasters,
  type MasterSlots,
  resolveWeights,
} from './common.js';

export const RebalanceBy = { Slots: 'slots', Keys: 'keys' } as const;
export type RebalanceBy = (typeof RebalanceBy)[keyof typeof RebalanceBy];

export interface RebalanceOptions {
  /** Node reference (id, 8+ character id prefix, host:port) -> weight. Unlisted masters weigh 1; 0 empties a master. */
  readonly weights?: Readonly<Record<string, number>>;
  /** Percent a master may be off its share before anything moves. @defaultValue 2 */
  readonly threshold?: number;
  /** Let masters without slots take part (and receive slots). @defaultValue false */
  readonly useEmptyMasters?: boolean;
  /** What to even out: the number of slots or the number of keys per master. @defaultValue 'slots' */
  readonly by?: RebalanceBy;
  /** COUNTKEYSINSLOT of every slot (16384 entries); required when `by` is 'keys'. */
  readonly keysPerSlot?: ArrayLike<number>;
}

/** redis-cli's CLUSTER_MANAGER_REBALANCE_THRESHOLD. */
export const DEFAULT_REBALANCE_THRESHOLD = 2;

interface Participant {
  readonly node: ClusterNode;
  readonly weight: number;
  readonly slots: readonly number[];
}

export function planRebalance(snapshot: ClusterSnapshot, options: RebalanceOptions = {}): SlotMove[] {
  const by = options.by ?? RebalanceBy.Slots;
  if (by !== RebalanceBy.Slots && by !== RebalanceBy.Keys) {
    throw new SlotfleetError(ErrorCode.InvalidRequest, `by is "${String(by)}": give "slots" or "keys"`);
  }
  const threshold = options.threshold ?? DEFAULT_REBALANCE_THRESHOLD;
  if (typeof threshold !== 'number' || !Number.isFinite(threshold) || threshold < 0) {
    throw new SlotfleetError(
      ErrorCode.InvalidRequest,
      `threshold is ${String(threshold)}: give a percentage >= 0`,
    );
  }
  const keysPerSlot = by === RebalanceBy.Keys ? validKeysPerSlot(options.keysPerSlot) : undefined;
  const weights = resolveWeights(snapshot, options.weights);
  assertClusterSettled(snapshot, 'rebalance');

  // Stable sort: the seed ("myself") first, as redis-cli's clusterManagerLoadInfoFromNode lists it.
  const participants = liveMasters(snapshot)
    .sort((a, b) => Number(b.node.myself) - Number(a.node.myself))
    .filter((master) => master.slots.length > 0 || options.useEmptyMasters === true)
    .map((master: MasterSlots) => ({ ...master, weight: weights.get(master.node.id) ?? 1 }));
  if (participants.every((participant) => participant.weight === 0)) {
    const names = participants.map((participant) => describeNode(participant.node)).join(', ');
    throw new SlotfleetError(
      ErrorCode.InvalidRequest,
      `every master taking part (${names}) has weight 0: at least one must be able to hold slots`,
    );
  }
  const moves = keysPerSlot
    ? planByKeys(participants, keysPerSlot, threshold)
    : planBySlots(participants, threshold);
  return finishMoves(moves);
}

function validKeysPerSlot(keysPerSlot: ArrayLike<number> | undefined): ArrayLike<number> {
  if (keysPerSlot === undefined) {
    throw new SlotfleetError(
      ErrorCode.InvalidRequest,
      'keysPerSlot is required when by is "keys": give COUNTKEYSINSLOT of each of the 16384 slots',
    );
  }
  if (keysPerSlot.length !== SLOT_COUNT) {
    throw new SlotfleetError(
      ErrorCode.InvalidRequest,
      `keysPerSlot has ${keysPerSlot.length} entries: it needs one per slot (${SLOT_COUNT})`,
    );
  }
  for (let slot = 0; slot < SLOT_COUNT; slot++) {
    const keys = keysPerSlot[slot];
    if (typeof keys !== 'number' || !Number.isInteger(keys) || keys < 0) {
      throw new SlotfleetError(
        ErrorCode.InvalidRequest,
        `keysPerSlot[${slot}] is ${String(keys)}: key counts are integers >= 0`,
      );
    }
  }
  return keysPerSlot;
}

function planBySlots(participants: readonly Participant[], threshold: number): SlotMove[] {
  // redis-cli keeps weights, their total and the percentages in C floats: Math.fround mirrors that,
  // so `expected` truncates to the same integer.
  const totalWeight = participants.reduce(
    (sum, participant) => Math.fround(sum + Math.fround(participant.weight)),
    0,
  );
  const slotsPerWeight = Math.fround(SLOT_COUNT / totalWeight);
  // Weights that round to 0 in single precision (1e-50, say) make every balance NaN, and the loop
  // below would never meet its end: refuse them here, whatever the caller validated.
  if (!Number.isFinite(slotsPerWeight) || totalWeight <= 0) {
    throw new SlotfleetError(
      ErrorCode.InvalidRequest,
      'weights are too small to plan with: their total rounds to 0 in single precision (as in redis-cli)',
    );
  }
  const floatThreshold = Math.fround(threshold);
  let totalBalance = 0;
  let thresholdReached = false;
  const balances = participants.map((participant) => {
    const held = participant.slots.length;
    const expected = Math.trunc(Math.fround(slotsPerWeight * Math.fround(participant.weight)));
    const balance = held - expected;
    totalBalance += balance;
    if (threshold === 0) {
      if (balance !== 0) thresholdReached = true;
    } else if (held > 0) {
      const errorPercent = Math.fround(Math.abs(100 - (100 * expected) / held));
      if (errorPercent > floatThreshold) thresholdReached = true;
    } else if (expected > 1) {
      thresholdReached = true;
    }
    return { participant, balance, nextSlot: 0 };
  });
  if (!thresholdReached) return [];
  let lowered = true;
  // redis-cli loops forever if no balance is <= 0; float rounding could in theory get there.
  while (totalBalance > 0 && lowered) {
    lowered = false;
    for (const entry of balances) {
      if (entry.balance <= 0 && totalBalance > 0) {
        entry.balance--;
        totalBalance--;
        lowered = true;
      }
    }
  }
  const sorted = [...balances].sort((a, b) => a.balance - b.balance);
  const moves: SlotMove[] = [];
  let receiverIndex = 0;
  let senderIndex = sorted.length - 1;
  while (receiverIndex < senderIndex) {
    const receiver = sorted[receiverIndex]!;
    const sender = sorted[senderIndex]!;
    // Only reachable with balances that do not sum to 0, which truncation cannot produce; stop
    // rather than move a master away from its share.
    if (receiver.balance > 0 || sender.balance < 0) break;
    const count = Math.min(-receiver.balance, sender.balance);
    const source = nodeRef(sender.participant.node);
    const target = nodeRef(receiver.participant.node);
    for (let taken = 0; taken < count; taken++) {
      const slot = sender.participant.slots[sender.nextSlot++];
      if (slot === undefined) break;
      moves.push({ slot, source, target });
    }
    receiver.balance += count;
    sender.balance -= count;
    if (receiver.balance === 0) receiverIndex++;
    if (sender.balance === 0) senderIndex--;
  }
  return moves;
}

interface KeyLoad {
  readonly node: ClusterNode;
  readonly weight: number;
  readonly target: number;
  keys: number;
  slotCount: number;
  /** Slots still here, for emptying a weight-0 master. */
  readonly remaining: Set<number>;
  /** Slots with keys still here, ascending by key count: what a sender can offer. */
  readonly offer: number[];
}

/**
 * Evens out KEYS per master by moving whole slots (redis-cli has no such mode). Greedy:
 *  1. target = totalKeys * weight / totalWeight. Nothing moves when every master is within
 *     `threshold` percent of its target and no weight-0 master holds slots.
 *  2. Senders are fixed up front: masters above target, and weight-0 masters holding slots.
 *     Receivers: every other master with weight > 0. So no master both gives and takes.
 *  3. Repeatedly take the most over-loaded sender and the most under-loaded receiver (falling back
 *     to the next pairs when that one has no useful slot) and move the sender's slot whose key count
 *     best closes the gap: moving k keys when the sender is e over and the receiver d under lowers
 *     the total distance from target by 2 * min(k, e, d, e + d - k), so the best k lies in
 *     [min(e, d), max(e, d)], and among those the smallest (fewest keys to MIGRATE). Key-less slots
 *     are never moved here: they change nothing.
 *  4. Stop when every master is within threshold, or when no pair has a slot that lowers the distance
 *     (each slot moves at most once, so this ends).
 *  5. A weight-0 master then gives away whatever it still holds: slots with keys largest first to
 *     the receiver furthest below its target, key-less slots to the receiver holding fewest slots.
 */
function planByKeys(
  participants: readonly Participant[],
  keysPerSlot: ArrayLike<number>,
  threshold: number,
): SlotMove[] {
  const totalWeight = participants.reduce((sum, participant) => sum + participant.weight, 0);
  const totalKeys = participants.reduce(
    (sum, participant) => sum + participant.slots.reduce((keys, slot) => keys + keysPerSlot[slot]!, 0),
    0,
  );
  const loads: KeyLoad[] = participants.map((participant) => ({
    node: participant.node,
    weight: participant.weight,
    target: (totalKeys * participant.weight) / totalWeight,
    keys: participant.slots.reduce((keys, slot) => keys + keysPerSlot[slot]!, 0),
    slotCount: participant.slots.length,
    remaining: new Set(participant.slots),
    offer: participant.slots
      .filter((slot) => keysPerSlot[slot]! > 0)
      .sort((a, b) => keysPerSlot[a]! - keysPerSlot[b]! || a - b),
  }));
  const withinThreshold = (load: KeyLoad): boolean =>
    Math.abs(load.keys - load.target) <= (threshold / 100) * load.target;
  const mustEmpty = (load: KeyLoad): boolean => load.weight === 0 && load.slotCount > 0;
  if (loads.every(withinThreshold) && !loads.some(mustEmpty)) return [];

  const senders = loads.filter((load) => load.keys > load.target || mustEmpty(load));
  const receivers = loads.filter((load) => load.weight > 0 && !senders.includes(load));
  const moves: SlotMove[] = [];
  const move = (slot: number, sender: KeyLoad, receiver: KeyLoad): void => {
    const keys = keysPerSlot[slot]!;
    sender.keys -= keys;
    sender.slotCount--;
    sender.remaining.delete(slot);
    receiver.keys += keys;
    receiver.slotCount++;
    moves.push({ slot, source: nodeRef(sender.node), target: nodeRef(receiver.node) });
  };

  while (!loads.every(withinThreshold)) {
    const over = senders
      .filter((load) => load.keys > load.target)
      .sort((a, b) => b.keys - b.target - (a.keys - a.target));
    const under = receivers
      .filter((load) => load.keys < load.target)
      .sort((a, b) => b.target - b.keys - (a.target - a.keys));
    let chosen: { sender: KeyLoad; receiver: KeyLoad; index: number } | undefined;
    search: for (const sender of over) {
      for (const receiver of under) {
        const index = bestSlotFor(
          sender.offer,
          keysPerSlot,
          sender.keys - sender.target,
          receiver.target - receiver.keys,
        );
        if (index >= 0) {
          chosen = { sender, receiver, index };
          break search;
        }
      }
    }
    if (!chosen) break;
    const [slot] = chosen.sender.offer.splice(chosen.index, 1) as [number];
    move(slot, chosen.sender, chosen.receiver);
  }

  for (const sender of senders.filter(mustEmpty)) {
    const leftovers = [...sender.remaining].sort((a, b) => keysPerSlot[b]! - keysPerSlot[a]! || a - b);
    for (const slot of leftovers) {
      const receiver =
        keysPerSlot[slot]! > 0
          ? maxBy(receivers, (load) => load.target - load.keys)
          : maxBy(receivers, (load) => -load.slotCount);
      move(slot, sender, receiver);
    }
  }
  return moves;
}

/**
 * Index in `offer` (slots ascending by key count) of the slot whose move lowers the distance from
 * target the most when the sender is `excess` over and the receiver `deficit` under; -1 if none does.
 */
function bestSlotFor(
  offer: readonly number[],
  keysPerSlot: ArrayLike<number>,
  excess: number,
  deficit: number,
): number {
  const low = Math.min(excess, deficit);
  const high = Math.max(excess, deficit);
  const gain = (keys: number): number => Math.min(keys, low, excess + deficit - keys);
  let first = 0;
  let last = offer.length;
  while (first < last) {
    const middle = (first + last) >>> 1;
    if (keysPerSlot[offer[middle]!]! < low) first = middle + 1;
    else last = middle;
  }
  if (first < offer.length && keysPerSlot[offer[first]!]! <= high) return first;
  const below = first - 1;
  const belowGain = below >= 0 ? gain(keysPerSlot[offer[below]!]!) : 0;
  const aboveGain = first < offer.length ? gain(keysPerSlot[offer[first]!]!) : 0;
  if (belowGain <= 0 && aboveGain <= 0) return -1;
  return belowGain >= aboveGain ? below : first;
}

function maxBy<T>(items: readonly T[], score: (item: T) => number): T {
  let best = items[0] as T;
  for (const item of items) if (score(item) > score(best)) best = item;
  return best;
}
