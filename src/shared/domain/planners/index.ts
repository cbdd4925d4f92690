/**
 * The producer API's planners: requests in, slot moves (or fix repairs) out. Pure: no I/O, every
 * input is data read elsewhere. Each planner returns moves sorted by slot, and no node both gives
 * and receives slots in one plan (see assertOneWayNodes in plan.ts).
 */
export { type DrainOptions, planDrain } from './drain.js';
export {
  type FixInput,
  FixKind,
  type FixNodeView,
  type FixPlan,
  type FixRepair,
  fixViewFrom,
  planFix,
  type UnrepairableSlot,
} from './fix.js';
export {
  DEFAULT_REBALANCE_THRESHOLD,
  planRebalance,
  RebalanceBy,
  type RebalanceOptions,
} from './rebalance.js';
export { ALL_SOURCES, planReshard, proportionalShares, type ReshardOptions } from './reshard.js';
