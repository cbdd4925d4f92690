/**
 * A worker process' side of pacing (src/shared/domain/pacing.ts). It keeps when the source ran each
 * MIGRATE batch of this process in the current window (the source's own clock, from the batch
 * script) and, once a window, decides the node's next pace with the rest of the fleet (PaceStore:
 * whoever reports first decides, the others adopt it). Drains read the pace from here without any
 * I/O: its slots are the source's lease cap, its batchKeys the size of their next batch.
 *
 * The wait of the window is its longest busy run: batches the source ran back to back (the next one
 * began within BACK_TO_BACK_US of the last one's end). A client's command that arrived as such a run
 * began waited for all of it. The run is read from the source's clock, so neither the network nor a
 * busy worker process inflates it.
 */

import {
  initialPace,
  nextPace,
  PACE_WINDOW_MS,
  type Pace,
  type PaceCeilings,
  PaceChange,
  slotsCeiling,
} from '../shared/domain/pacing.js';
import type { NodeRef } from '../shared/domain/plan.js';
import { nodeAddress } from '../shared/domain/topology.js';
import type { Logger } from '../shared/logger.js';
import type { Metrics } from '../shared/metrics.js';
import type { PaceStore } from '../shared/queue/pace-store.js';

export interface PacerDeps {
  /** Slots per source at most (SLOTFLEET_MAX_SLOTS_PER_SOURCE; 0: none, see UNCAPPED_SLOTS). */
  readonly maxSlots: number;
  /** Batches of a slot in flight at most (SLOTFLEET_BATCHES_IN_FLIGHT). */
  readonly maxBatches: number;
  readonly store: PaceStore;
  readonly metrics: Metrics;
  readonly log: Logger;
  /** A node's slots pace rose: slot jobs waiting for its lease may go now. */
  readonly onFaster?: (cluster: string, node: NodeRef) => void;
}

/** Two batches this close (µs) ran back to back: a client's command found no gap between them. */
export const BACK_TO_BACK_US = 200;

/** When the source ran one batch, by its clock (µs). */
export interface BatchRun {
  readonly start: number;
  readonly end: number;
}

/** The longest time (ms) the source ran batches back to back, with no gap a client could use. */
export function longestBusyRunMs(runs: readonly BatchRun[]): number {
  const sorted = [...runs].sort((a, b) => a.start - b.start);
  let longest = 0;
  let runStart = 0;
  let runEnd = Number.NEGATIVE_INFINITY;
  for (const batch of sorted) {
    if (batch.start - runEnd > BACK_TO_BACK_US) runStart = batch.start;
    runEnd = Math.max(runEnd, batch.end);
    longest = Math.max(longest, runEnd - runStart);
  }
  return longest / 1000;
}

interface NodePacing {
  pace: Pace;
  /** Version of the stored pace this process last saw (0: none stored). */
  version: number;
  windowStartedAt: number;
  runs: BatchRun[];
  deciding: boolean;
  readonly labels: { readonly cluster: string; readonly node: string };
}

export class Pacer {
  private readonly nodes = new Map<string, NodePacing>();

  constructor(private readonly deps: PacerDeps) {}

  /** The pace to drain from this source at now, within the ceilings (maxBatchKeys: the batch size set). */
  pace(cluster: string, source: NodeRef, maxBatchKeys: number): Pace {
    const ceilings = this.ceilings(maxBatchKeys);
    const state = this.nodes.get(`${cluster}\n${source.id}`);
    if (!state) return initialPace(ceilings);
    const within = (value: number, ceiling: number) => Math.max(1, Math.min(value, ceiling));
    return {
      slots: within(state.pace.slots, slotsCeiling(ceilings)),
      batches: within(state.pace.batches, ceilings.batches),
      batchKeys: within(state.pace.batchKeys, ceilings.batchKeys),
    };
  }

  /** The source ran one batch of a migration with this budget. */
  observe(cluster: string, source: NodeRef, ran: BatchRun, budgetMs: number, maxBatchKeys: number): void {
    const ceilings = this.ceilings(maxBatchKeys);
    const state = this.stateOf(cluster, source, ceilings);
    state.runs.push(ran);
    const now = Date.now();
    if (state.deciding || now - state.windowStartedAt < PACE_WINDOW_MS) return;
    const worstMs = longestBusyRunMs(state.runs);
    state.runs = [];
    state.windowStartedAt = now;
    const { metrics, log } = this.deps;
    metrics.nodeClientLatency.set(state.labels, worstMs / 1000);
    metrics.nodeClientLatencyBudget.set(state.labels, budgetMs / 1000);
    const { pace, change } = nextPace(state.pace, worstMs, budgetMs, ceilings);
    state.deciding = true;
    this.deps.store
      .decide(cluster, source.id, state.version, pace, worstMs)
      .then(
        (stored) => {
          if (!stored) return;
          const before = state.pace;
          state.pace = { slots: stored.slots, batches: stored.batches, batchKeys: stored.batchKeys };
          state.version = stored.version;
          metrics.paceSlots.set(state.labels, stored.slots);
          metrics.paceBatchKeys.set(state.labels, stored.batchKeys);
          metrics.paceBatches.set(state.labels, stored.batches);
          const ours =
            stored.slots === pace.slots &&
            stored.batches === pace.batches &&
            stored.batchKeys === pace.batchKeys;
          if (ours && change !== PaceChange.Same) {
            log.debug({ ...state.labels, worstMs, budgetMs, from: before, to: state.pace }, `pace ${change}`);
          }
          if (stored.slots > before.slots) this.deps.onFaster?.(cluster, source);
        },
        (error: Error) => log.warn({ ...state.labels, err: error.message }, 'sharing the pace of a node'),
      )
      .finally(() => {
        state.deciding = false;
      });
  }

  private ceilings(maxBatchKeys: number): PaceCeilings {
    return { slots: this.deps.maxSlots, batches: this.deps.maxBatches, batchKeys: maxBatchKeys };
  }

  private stateOf(cluster: string, source: NodeRef, ceilings: PaceCeilings): NodePacing {
    const key = `${cluster}\n${source.id}`;
    let state = this.nodes.get(key);
    if (!state) {
      state = {
        pace: initialPace(ceilings),
        version: 0,
        windowStartedAt: Date.now(),
        runs: [],
        deciding: false,
        labels: { cluster, node: nodeAddress(source) },
      };
      this.nodes.set(key, state);
    }
    return state;
  }
}
