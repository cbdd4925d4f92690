/**
 * Draining: every slot of one master spread over the other masters, before it is removed or
 * upgraded. Pure. (redis-cli has no such command; it is rebalance with the node's weight at 0, except
 * that only the drained master gives slots, so nothing else moves.)
 *
 * Receivers are the other masters not flagged failing with weight > 0, empty ones included. Slot by
 * slot, the receiver holding the fewest slots per unit of weight gets the next one, so the emptiest
 * fill first and the result is as even as whole slots allow. Each receiver then takes one contiguous
 * run of the drained master's slots, in ascending order: fewer ranges in CLUSTER NODES.
 */
import { ErrorCode, SlotfleetError } from '../../errors.js';
import { type ClusterSnapshot, nodeRef, type SlotMove } from '../plan.js';
import {
  assertSlotsClosed,
  describeNode,
  finishMoves,
  liveMasters,
  resolveMaster,
  resolveWeights,
} from './common.js';

export interface DrainOptions {
  /** Reference (id, 8+ character id prefix, host:port) of the master to empty. */
  readonly node: string;
  /** Receiver reference -> weight: its share of the drained slots grows with it. @defaultValue every master 1 */
  readonly weights?: Readonly<Record<string, number>>;
}

/** Returns [] when the master holds no slots: there is nothing to drain. */
export function planDrain(snapshot: ClusterSnapshot, options: DrainOptions): SlotMove[] {
  const drained = resolveMaster(snapshot, options.node, 'node to drain');
  const weights = resolveWeights(snapshot, options.weights);
  const masters = liveMasters(snapshot);
  const slots = masters.find((master) => master.node.id === drained.id)?.slots ?? [];
  if (slots.length === 0) return [];
  const receivers = masters
    .filter((master) => master.node.id !== drained.id)
    .map((master) => ({ master, weight: weights.get(master.node.id) ?? 1, gets: 0 }))
    .filter((receiver) => receiver.weight > 0);
  if (receivers.length === 0) {
    throw new SlotfleetError(
      ErrorCode.UnsafePlan,
      `no other master can take the ${slots.length} slots of ${describeNode(drained)}: ` +
        'add a master (or give one a weight above 0) first',
    );
  }
  assertSlotsClosed(snapshot, slots);
  for (let index = 0; index < slots.length; index++) {
    let emptiest = receivers[0]!;
    for (const receiver of receivers) {
      const fill = (receiver.master.slots.length + receiver.gets) / receiver.weight;
      const emptiestFill = (emptiest.master.slots.length + emptiest.gets) / emptiest.weight;
      if (fill < emptiestFill) emptiest = receiver;
    }
    emptiest.gets++;
  }
  const source = nodeRef(drained);
  const moves: SlotMove[] = [];
  let next = 0;
  for (const receiver of receivers) {
    const target = nodeRef(receiver.master.node);
    for (const slot of slots.slice(next, next + receiver.gets)) moves.push({ slot, source, target });
    next += receiver.gets;
  }
  return finishMoves(moves);
}
