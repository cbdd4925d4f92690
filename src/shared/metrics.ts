/**
 * Every Prometheus metric slotfleet exports, defined once. Names follow slotfleet_<thing>_<unit>,
 * counters end in _total. Labels carry cluster names, node addresses, migration ids and queue names,
 * never credentials.
 *
 * Workers feed the slot metrics (each process counts what it did; Prometheus sums the fleet). The
 * API process alone feeds keys_remaining and queue_jobs, read when it is scraped, so a fleet of N
 * workers does not report the same queue N times. Both kinds of process export every name (an
 * unfed one has no samples) plus the process default metrics. Both report whether they reach the
 * control Redis (trackControlRedis).
 */

import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import { MigrationEngine } from './domain/migration.js';

/** The end states a slot job counts in slotfleet_slots_finished_total. */
export const SlotResult = { Done: 'done', Failed: 'failed', Cancelled: 'cancelled' } as const;
export type SlotResult = (typeof SlotResult)[keyof typeof SlotResult];

export interface Metrics {
  readonly registry: Registry;
  readonly keysMigrated: Counter<'cluster' | 'source' | 'target'>;
  readonly keysRemaining: Gauge<'cluster' | 'migration'>;
  readonly migrationState: Gauge<'cluster' | 'migration' | 'state'>;
  readonly migrateTimeouts: Counter<'cluster' | 'source' | 'target'>;
  readonly migrateErrors: Counter<'cluster' | 'code'>;
  readonly slotsFinished: Counter<'cluster' | 'result' | 'engine'>;
  readonly slotsStranded: Counter<'cluster'>;
  readonly slotsInFlight: Gauge<'cluster' | 'source'>;
  readonly nodeSlotsInFlight: Gauge<'cluster' | 'node' | 'role'>;
  readonly slotsWaitingForLeases: Gauge;
  readonly leaseAttempts: Counter<'result'>;
  readonly nodeClientLatency: Gauge<'cluster' | 'node'>;
  readonly nodeClientLatencyBudget: Gauge<'cluster' | 'node'>;
  readonly paceSlots: Gauge<'cluster' | 'node'>;
  readonly paceBatchKeys: Gauge<'cluster' | 'node'>;
  readonly paceBatches: Gauge<'cluster' | 'node'>;
  readonly migrateBatchDuration: Histogram<'cluster'>;
  readonly slotDuration: Histogram<'cluster' | 'engine'>;
  readonly finalizeDuration: Histogram<'cluster'>;
  readonly queueJobs: Gauge<'queue' | 'state'>;
  readonly throttleWait: Counter<'cluster' | 'source'>;
  readonly controlRedisUp: Gauge;
}

export function createMetrics(options: { defaultMetrics?: boolean } = {}): Metrics {
  const registry = new Registry();
  if (options.defaultMetrics ?? true) collectDefaultMetrics({ register: registry });
  const registers = [registry];
  return {
    registry,
    keysMigrated: new Counter({
      name: 'slotfleet_keys_migrated_total',
      help: 'Keys moved by MIGRATE from source to target.',
      labelNames: ['cluster', 'source', 'target'],
      registers,
    }),
    keysRemaining: new Gauge({
      name: 'slotfleet_keys_remaining',
      help: "Keys still to move in a running migration's open slots (COUNTKEYSINSLOT on their sources), read when the API is scraped.",
      labelNames: ['cluster', 'migration'],
      registers,
    }),
    migrationState: new Gauge({
      name: 'slotfleet_migration_state',
      help: '1 for each migration keys_remaining is reported for, labelled with its state (pending, running, paused), read when the API is scraped.',
      labelNames: ['cluster', 'migration', 'state'],
      registers,
    }),
    migrateTimeouts: new Counter({
      name: 'slotfleet_migrate_timeouts_total',
      help: 'MIGRATE commands that timed out (IOERR) towards the target.',
      labelNames: ['cluster', 'source', 'target'],
      registers,
    }),
    migrateErrors: new Counter({
      name: 'slotfleet_migrate_errors_total',
      help: 'Errors while moving slots, by slotfleet error code.',
      labelNames: ['cluster', 'code'],
      registers,
    }),
    slotsFinished: new Counter({
      name: 'slotfleet_slots_finished_total',
      help: 'Slots that reached an end state, by result (done, failed, cancelled) and engine (keys, atomic).',
      labelNames: ['cluster', 'result', 'engine'],
      registers,
    }),
    slotsStranded: new Counter({
      name: 'slotfleet_slots_stranded_total',
      help: 'Slots not ended that no job would run any more (their migrate job completed, as after writes the control Redis lost, or failed outside their handling): run again, or recorded failed.',
      labelNames: ['cluster'],
      registers,
    }),
    slotsInFlight: new Gauge({
      name: 'slotfleet_slots_in_flight',
      help: 'Slot jobs this process is running, by source node.',
      labelNames: ['cluster', 'source'],
      registers,
    }),
    nodeSlotsInFlight: new Gauge({
      name: 'slotfleet_node_slots_in_flight',
      help: 'Slots this process is draining under a node lease, by node and its role (source, target); summed over the fleet, at most the cap.',
      labelNames: ['cluster', 'node', 'role'],
      registers,
    }),
    slotsWaitingForLeases: new Gauge({
      name: 'slotfleet_slots_waiting_for_lease',
      help: 'Slot jobs of this process asleep until a node lease frees (their source or target is at its cap); they hold no unit of concurrency.',
      registers,
    }),
    leaseAttempts: new Counter({
      name: 'slotfleet_node_lease_attempts_total',
      help: 'Attempts to take the node leases of a slot, by result (taken, refused: its source or target was at its cap). A refused attempt sleeps until a lease frees; about one refusal per slot is normal under the caps.',
      labelNames: ['result'],
      registers,
    }),
    nodeClientLatency: new Gauge({
      name: 'slotfleet_node_client_latency_seconds',
      help: "What a client of a source node waited behind the migration's MIGRATEs, as this process measured it: the longest run of batches the source ran back to back in the last pacing window, by the source's own clock (see docs/operations.md, pacing).",
      labelNames: ['cluster', 'node'],
      registers,
    }),
    nodeClientLatencyBudget: new Gauge({
      name: 'slotfleet_node_client_latency_budget_seconds',
      help: 'The client-latency budget (limits.maxClientLatencyMs) of the migration whose batches this process last paced on a source node, set with slotfleet_node_client_latency_seconds.',
      labelNames: ['cluster', 'node'],
      registers,
    }),
    paceSlots: new Gauge({
      name: 'slotfleet_pace_slots',
      help: 'Slots the fleet drains from a source node at once, as paced to the client-latency budget (at most SLOTFLEET_MAX_SLOTS_PER_SOURCE).',
      labelNames: ['cluster', 'node'],
      registers,
    }),
    paceBatchKeys: new Gauge({
      name: 'slotfleet_pace_batch_keys',
      help: 'Keys per MIGRATE from a source node, as paced to the client-latency budget (at most the batch size set).',
      labelNames: ['cluster', 'node'],
      registers,
    }),
    paceBatches: new Gauge({
      name: 'slotfleet_pace_batches',
      help: 'MIGRATE batches of one slot in flight on a source node, as paced to the client-latency budget (at most SLOTFLEET_BATCHES_IN_FLIGHT).',
      labelNames: ['cluster', 'node'],
      registers,
    }),
    migrateBatchDuration: new Histogram({
      name: 'slotfleet_migrate_batch_duration_seconds',
      help: 'Duration of one MIGRATE batch.',
      labelNames: ['cluster'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    }),
    slotDuration: new Histogram({
      name: 'slotfleet_slot_duration_seconds',
      help: 'Duration of one migrate-slot job attempt, from claim to drained (keys) or handed to a server task (atomic), or to its error (not postponed ones).',
      labelNames: ['cluster', 'engine'],
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
      registers,
    }),
    finalizeDuration: new Histogram({
      name: 'slotfleet_finalize_duration_seconds',
      help: 'Duration of one finalizer job attempt: SETSLOT NODE on every master and the check, for the slots drained together.',
      labelNames: ['cluster'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers,
    }),
    queueJobs: new Gauge({
      name: 'slotfleet_queue_jobs',
      help: 'Jobs in each slotfleet queue by BullMQ state, read from the control Redis when the API is scraped.',
      labelNames: ['queue', 'state'],
      registers,
    }),
    throttleWait: new Counter({
      name: 'slotfleet_throttle_wait_seconds_total',
      help: "Seconds slot jobs waited for a migration's keys/bytes per second limits on a source node.",
      labelNames: ['cluster', 'source'],
      registers,
    }),
    controlRedisUp: new Gauge({
      name: 'slotfleet_control_redis_up',
      help: "1 while this process' connection to the control Redis is ready, 0 from its loss (and before it first connects).",
      registers,
    }),
  };
}

/** The events of an ioredis connection trackControlRedis listens to. */
export interface ControlConnectionEvents {
  readonly status: string;
  on(event: 'ready' | 'close', listener: () => void): unknown;
}

/**
 * Follows the control Redis connection in slotfleet_control_redis_up. ioredis emits 'close' on every
 * loss, before it reconnects, and 'ready' once a connection serves commands again.
 */
export function trackControlRedis(metrics: Metrics, connection: ControlConnectionEvents): void {
  metrics.controlRedisUp.set(connection.status === 'ready' ? 1 : 0);
  connection.on('ready', () => metrics.controlRedisUp.set(1));
  connection.on('close', () => metrics.controlRedisUp.set(0));
}

/**
 * Starts a cluster's slot results at zero. A counter that first appears at 1 loses that event to
 * rate() and increase(), so label sets known in advance are exported before anything happens.
 */
export function startClusterSeries(metrics: Metrics, cluster: string): void {
  for (const result of Object.values(SlotResult)) {
    for (const engine of Object.values(MigrationEngine))
      metrics.slotsFinished.inc({ cluster, result, engine }, 0);
  }
  metrics.slotsStranded.inc({ cluster }, 0);
}
