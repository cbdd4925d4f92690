/**
 * The operator's limits as a drain runs with them (SlotEngineDeps.limitsOf) and the wait between
 * two drain rounds that keeps a source node within them (SlotEngineDeps.throttle). The rates are
 * counted in token buckets in the control Redis (src/shared/queue/token-bucket.ts), one per
 * migration and source node, so they hold for the whole fleet however many workers share a source.
 */
import type { MigrationLimits } from '../shared/domain/migration.js';
import type { Logger } from '../shared/logger.js';
import type { Metrics } from '../shared/metrics.js';
import type { SlotJobData } from '../shared/queue/names.js';
import type { BucketTake } from '../shared/queue/token-bucket.js';

/**
 * The longest a throttled round sleeps before it looks again: a limit raised or cleared, or a pause,
 * takes effect on a waiting job within this (plus the worker's cache of the record).
 */
export const THROTTLE_RECHECK_MS = 500;

/**
 * The limits a drain round runs with. A batch is never bigger than one second's worth of the keys
 * limit: a bucket holds one second, and a round that overdraws it by much leaves the next round of
 * every job on that source waiting as long.
 */
export function drainLimits(limits: MigrationLimits, workerBatchKeys: number): MigrationLimits {
  const batchKeys = limits.batchKeys ?? workerBatchKeys;
  if (limits.maxKeysPerSecond === undefined || batchKeys <= limits.maxKeysPerSecond) return limits;
  return { ...limits, batchKeys: limits.maxKeysPerSecond };
}

export function isLimited(limits: MigrationLimits): boolean {
  return limits.maxKeysPerSecond !== undefined || limits.maxBytesPerSecond !== undefined;
}

export interface ThrottleDeps {
  /** The limits the worker read last for a migration, without any I/O; undefined if never read. */
  readonly knownLimitsOf: (migrationId: string) => MigrationLimits | undefined;
  /** The limits, read again when the worker's cached read is stale. */
  readonly limitsOf: (migrationId: string) => Promise<MigrationLimits>;
  readonly isPaused: (migrationId: string) => Promise<boolean>;
  /** Takes from the buckets of a migration's source (see TokenBuckets.take); ms to wait. */
  readonly take: (
    migrationId: string,
    source: string,
    keys: BucketTake,
    bytes: BucketTake,
  ) => Promise<number>;
  readonly metrics: Pick<Metrics, 'throttleWait'>;
  readonly log: Logger;
  /** SLOTFLEET_BATCH_BYTES: 0 means batches are not weighed, so a bytes limit cannot hold. */
  readonly batchBytes: number;
  readonly sleep?: (ms: number) => Promise<void>;
  readonly now?: () => number;
}

/**
 * The throttle hook: after a round that moved keys, takes them (and their bytes) from the source's
 * buckets and sleeps until the buckets are back at zero, in pieces of at most THROTTLE_RECHECK_MS,
 * looking at the limits and the pause between pieces. An unlimited migration costs a map lookup.
 */
export function createThrottle(
  deps: ThrottleDeps,
): (data: SlotJobData, moved: { keys: number; bytes: number }) => Promise<void> {
  const sleep = deps.sleep ?? ((ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms)));
  const now = deps.now ?? Date.now;
  const exported = new Set<string>();
  const warned = new Set<string>();
  return async (data, moved) => {
    const labels = { cluster: data.cluster, source: `${data.source.host}:${data.source.port}` };
    const series = `${labels.cluster} ${labels.source}`;
    if (!exported.has(series)) {
      // Exported at zero, so rate() sees the first wait and the dashboard has a line to draw.
      exported.add(series);
      deps.metrics.throttleWait.inc(labels, 0);
    }
    let limits = deps.knownLimitsOf(data.migrationId) ?? (await deps.limitsOf(data.migrationId));
    if (!isLimited(limits)) return;
    if (limits.maxBytesPerSecond !== undefined && deps.batchBytes === 0 && !warned.has(data.migrationId)) {
      warned.add(data.migrationId);
      deps.log.warn(
        { migrationId: data.migrationId, maxBytesPerSecond: limits.maxBytesPerSecond },
        'maxBytesPerSecond is set but SLOTFLEET_BATCH_BYTES=0: batches are not weighed, only the keys limit holds',
      );
    }
    let taken = moved;
    try {
      for (;;) {
        const waitMs = await deps.take(
          data.migrationId,
          labels.source,
          { perSecond: limits.maxKeysPerSecond, taken: taken.keys },
          { perSecond: limits.maxBytesPerSecond, taken: taken.bytes },
        );
        taken = { keys: 0, bytes: 0 };
        if (waitMs <= 0) return;
        const sleptFrom = now();
        await sleep(Math.min(waitMs, THROTTLE_RECHECK_MS));
        deps.metrics.throttleWait.inc(labels, Math.max(0, now() - sleptFrom) / 1000);
        if (waitMs <= THROTTLE_RECHECK_MS) return;
        // The engine stops between rounds when paused: no need to wait out the debt first.
        if (await deps.isPaused(data.migrationId)) return;
        limits = await deps.limitsOf(data.migrationId);
        if (!isLimited(limits)) return;
      }
    } catch (error) {
      // The keys of this round moved and are not counted yet: the drain must go on to count them.
      // It goes on a little later, so a bucket that cannot be read slows the source, never floods it.
      deps.log.warn(
        { migrationId: data.migrationId, source: labels.source, err: (error as Error).message },
        'throttle: token bucket not readable',
      );
      await sleep(THROTTLE_RECHECK_MS);
    }
  };
}
