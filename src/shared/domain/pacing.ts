/**
 * Pacing: how hard the fleet drains one source node, so that the node's clients wait no longer than a
 * migration's client-latency budget (limits.maxClientLatencyMs).
 *
 * What a client waits. MIGRATE is synchronous: the source serves nobody from the moment it starts a
 * batch until the target has restored it, and it runs the batches queued on its connections back to
 * back. A client's command that arrives meanwhile waits for what is ahead of it. The batch script
 * reads the source's clock (TIME) as it begins and as its MIGRATE returns; batches that ran back to
 * back form a busy run, and a command that arrived as one began waited for all of it. So the longest
 * busy run per window is the measure (src/workers/pacer.ts). It costs no command, and neither the
 * network nor a busy worker process inflates it (a batch's round trip, as the worker sees it, does).
 *
 * The pace of a node is three numbers, each bounded by the workers' settings (the ceilings):
 *   slots     - slots draining from the node at once, fleet-wide (the node lease cap of the source);
 *   batches   - MIGRATE batches of one slot in flight at once (SLOTFLEET_BATCHES_IN_FLIGHT);
 *   batchKeys - keys per MIGRATE.
 * Once per window, from the worst wait of that window (AIMD, as TCP paces a link):
 *   over the budget          - halve slots; at one slot, halve batches; at one batch, shrink
 *                              batchKeys (not below MIN_BATCH_KEYS). Fewer batches queued costs
 *                              less speed than smaller ones, whose fixed cost is per batch;
 *   under HEADROOM x budget  - the other way round: grow batchKeys up to its ceiling, then add a
 *                              batch, then a slot;
 *   in between               - keep the pace.
 * batchKeys moves in proportion to the wait: a batch's time on the source grows with its keys, so
 * the next size is what would have taken AIM_SHARE of the budget, by at most half either way (one
 * window's wait can be a stall that says nothing about the batch). Halving it instead left a single
 * slot's batches on a saw between half and all of the size the budget allows (docs/performance.md,
 * the hot slot). Slots and batches are few and whole: they halve and grow by one. Decrease is fast
 * (a burst of waits is cut within a window), increase one step per window, so the pace settles just
 * under the budget. A node starts slow (one slot, one batch, STARTING_BATCH_KEYS keys), as a
 * TCP connection does: the first batches of a migration never hit clients with a ceiling-sized
 * stall before anything was measured. Reaching 1000 keys takes 6 windows at the quickest, each
 * further slot one. The store keeps a node's pace between migrations (PACE_TTL_MS), so the next one
 * starts where the last one ended.
 */

export interface Pace {
  readonly slots: number;
  readonly batches: number;
  readonly batchKeys: number;
}

export interface PaceCeilings {
  /** Slots draining per source at most (SLOTFLEET_MAX_SLOTS_PER_SOURCE; 0 there: no cap, see below). */
  readonly slots: number;
  /** Batches of a slot in flight at most (SLOTFLEET_BATCHES_IN_FLIGHT). */
  readonly batches: number;
  /** Keys per MIGRATE at most (the migration's batchKeys or SLOTFLEET_BATCH_KEYS). */
  readonly batchKeys: number;
}

/** Smallest batch the pace goes down to: below it, a batch's fixed cost dominates its keys. */
export const MIN_BATCH_KEYS = 16;
/** Keys per MIGRATE of a node's first batches, before anything was measured. */
export const STARTING_BATCH_KEYS = 128;
/** Under this share of the budget, the pace may grow. */
export const HEADROOM = 0.7;
/** The share of the budget a change of batchKeys aims the next window's wait at (within HEADROOM..1). */
export const AIM_SHARE = 0.85;
/** batchKeys changes by at most this factor per window, down or up. */
const MAX_BATCH_KEYS_STEP = 1.5;
const MIN_BATCH_KEYS_STEP = 0.5;
/** One decision per window per node, fleet-wide. */
export const PACE_WINDOW_MS = 100;
/** The slots ceiling when the workers set no cap on sources: pacing needs a bound to grow to. */
export const UNCAPPED_SLOTS = 64;

export const PaceChange = { Slower: 'slower', Faster: 'faster', Same: 'same' } as const;
export type PaceChange = (typeof PaceChange)[keyof typeof PaceChange];

/** Where a node starts: one slot, small batches. */
export function initialPace(ceilings: PaceCeilings): Pace {
  return { slots: 1, batches: 1, batchKeys: Math.min(STARTING_BATCH_KEYS, ceilings.batchKeys) };
}

/** The pace after one window whose worst client wait was observedMs. */
export function nextPace(
  pace: Pace,
  observedMs: number,
  budgetMs: number,
  ceilings: PaceCeilings,
): { pace: Pace; change: PaceChange } {
  const maxSlots = slotsCeiling(ceilings);
  const maxBatchKeys = ceilings.batchKeys;
  const minBatchKeys = Math.min(MIN_BATCH_KEYS, maxBatchKeys);
  // Ceilings lowered since the pace was set (PATCH of batchKeys, a new worker setting) hold at once.
  const current = {
    slots: clamp(pace.slots, 1, maxSlots),
    batches: clamp(pace.batches, 1, ceilings.batches),
    batchKeys: clamp(pace.batchKeys, minBatchKeys, maxBatchKeys),
  };
  if (observedMs > budgetMs) {
    if (current.slots > 1) {
      return { pace: { ...current, slots: Math.floor(current.slots / 2) }, change: PaceChange.Slower };
    }
    if (current.batches > 1) {
      return { pace: { ...current, batches: Math.floor(current.batches / 2) }, change: PaceChange.Slower };
    }
    const factor = clamp((AIM_SHARE * budgetMs) / observedMs, MIN_BATCH_KEYS_STEP, AIM_SHARE);
    const batchKeys = Math.max(minBatchKeys, Math.floor(current.batchKeys * factor));
    return {
      pace: { ...current, batchKeys },
      change: batchKeys < current.batchKeys ? PaceChange.Slower : PaceChange.Same,
    };
  }
  if (observedMs < HEADROOM * budgetMs) {
    if (current.batchKeys < maxBatchKeys) {
      // Under HEADROOM the aim is at least AIM_SHARE / HEADROOM (1.21x) above the current size.
      const factor = Math.min(MAX_BATCH_KEYS_STEP, (AIM_SHARE * budgetMs) / Math.max(observedMs, 0.001));
      const batchKeys = Math.min(maxBatchKeys, Math.ceil(current.batchKeys * factor));
      return { pace: { ...current, batchKeys }, change: PaceChange.Faster };
    }
    if (current.batches < ceilings.batches) {
      return { pace: { ...current, batches: current.batches + 1 }, change: PaceChange.Faster };
    }
    if (current.slots < maxSlots) {
      return { pace: { ...current, slots: current.slots + 1 }, change: PaceChange.Faster };
    }
  }
  return { pace: current, change: PaceChange.Same };
}

export function slotsCeiling(ceilings: PaceCeilings): number {
  return ceilings.slots > 0 ? ceilings.slots : UNCAPPED_SLOTS;
}

function clamp(value: number, low: number, high: number): number {
  return Math.min(high, Math.max(low, value));
}
