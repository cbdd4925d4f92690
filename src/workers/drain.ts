/**
 * A slot's keys, moved key by key: MIGRATE batches chosen on the source until it holds none, paced
 * and throttled, with the recovery from the two errors a batch can end in and the drain survives
 * (BUSYKEY, IOERR). Used by the slot run's MigrateKeys action and by the repairs.
 */
import type { ClusterPort } from '../shared/cluster/port.js';
import type { MigrationLimits } from '../shared/domain/migration.js';
import { nodeAddress } from '../shared/domain/topology.js';
import { ErrorCode, errorCodeOf, SlotfleetError } from '../shared/errors.js';
import type { Logger } from '../shared/logger.js';
import type { Metrics } from '../shared/metrics.js';
import type { SlotRecords } from '../shared/queue/migration-store.js';
import type { SlotJobData } from '../shared/queue/names.js';
import type { Pacer } from './pacer.js';

export interface DrainSettings {
  readonly batchKeys: number;
  readonly batchesInFlight: number;
  /** Bytes per MIGRATE; 0: no limit. */
  readonly batchBytes: number;
  readonly migrateTimeoutMs: number;
}

export interface DrainDeps {
  readonly cluster: ClusterPort;
  readonly store: Pick<SlotRecords, 'addKeysMoved'>;
  readonly metrics: Metrics;
  readonly settings: DrainSettings;
  readonly log: Logger;
  /**
   * Limits the operator set on this migration (PATCH /v1/migrations/:id), read before every round
   * of a drain; unset fields fall back to the worker's settings.
   */
  readonly limitsOf?: (migrationId: string) => Promise<MigrationLimits>;
  /**
   * Called after every round of a drain with what it moved; resolves when the source's keys/bytes
   * per second limits allow the next round (a token bucket shared by the fleet).
   */
  readonly throttle?: (data: SlotJobData, moved: { keys: number; bytes: number }) => Promise<void>;
  /**
   * Taken before a slot's keys drain, given back once they have: bounds the slots draining at once
   * per source and target node across the fleet (node leases). acquire() may wait; it throws when
   * the slot must not drain now (the worker is stopping, the migration was paused).
   */
  readonly drainGate?: { acquire(): Promise<void>; release(): Promise<void> | undefined };
  /**
   * Paces drains to a migration's client-latency budget (limits.maxClientLatencyMs): gives each
   * batch's size and is told how long the source was busy. Unused for a migration without a budget.
   */
  readonly pacer?: Pacer;
  /** True when the operator paused the migration: draining stops after the batches in flight. */
  readonly isPaused?: () => Promise<boolean>;
}

/** Thrown between two batches when the migration was paused; the processor postpones the job. */
export class PauseRequested extends Error {
  constructor() {
    super('migration paused');
    this.name = 'PauseRequested';
  }
}

/**
 * A key bigger than the byte budget moves alone, with MIGRATE's timeout stretched by its size: the
 * target must read and RESTORE it before it answers. Assumes no less than 8 MB/s.
 */
export function bigKeyTimeoutMs(baseTimeoutMs: number, bytes: number): number {
  const BYTES_PER_MS = 8 * 1024;
  return baseTimeoutMs + Math.ceil(bytes / BYTES_PER_MS);
}

/**
 * MIGRATE batches until the source holds no key of the slot. Each batch is one script call on the
 * source (GETKEYSINSLOT + MIGRATE, see ClusterAdapter.migrateNextBatch), and several are in flight at
 * once on the source's connection, so the source never waits for a round trip between them. The
 * source runs them in order: the first one to find fewer keys than asked emptied the slot (a slot
 * MIGRATING on its source gets no new keys: writes of new keys are redirected with ASK).
 */
export async function drainSlot(
  data: SlotJobData,
  deps: DrainDeps,
  onSecondRound?: () => void,
): Promise<{ moved: number; unrecorded: number }> {
  const { metrics } = deps;
  const labels = {
    cluster: data.cluster,
    source: nodeAddress(data.source),
    target: nodeAddress(data.target),
  };
  // Exported at zero before the first batch, so rate() and increase() see the first keys and timeouts.
  metrics.keysMigrated.inc(labels, 0);
  metrics.migrateTimeouts.inc(labels, 0);
  await deps.drainGate?.acquire();
  try {
    return await drainRounds(data, deps, labels, onSecondRound);
  } finally {
    await deps.drainGate?.release();
  }
}

async function drainRounds(
  data: SlotJobData,
  deps: DrainDeps,
  labels: { cluster: string; source: string; target: string },
  onSecondRound?: () => void,
): Promise<{ moved: number; unrecorded: number }> {
  const { cluster, store, metrics, settings } = deps;
  let moved = 0;
  const duty = new SourceDuty();
  for (let round = 0; ; round++) {
    if (round === 1) onSecondRound?.();
    if (round > 0 && (await deps.isPaused?.())) throw new PauseRequested();
    const limits = (await deps.limitsOf?.(data.migrationId)) ?? {};
    const maxBatchKeys = limits.batchKeys ?? settings.batchKeys;
    const budgetMs = limits.maxClientLatencyMs;
    const pacer = budgetMs !== undefined ? deps.pacer : undefined;
    const pace = pacer?.pace(data.cluster, data.source, maxBatchKeys);
    const batchKeys = pace?.batchKeys ?? maxBatchKeys;
    // The first round of a small slot needs one batch; later rounds send as many as allowed.
    const batches = round === 0 ? 1 : (pace?.batches ?? settings.batchesInFlight);
    const results = await Promise.allSettled(
      Array.from({ length: batches }, async () => {
        const stopTimer = metrics.migrateBatchDuration.startTimer({ cluster: data.cluster });
        try {
          return await cluster.migrateNextBatch(
            data.source,
            data.target,
            data.slot,
            { maxKeys: batchKeys, maxBytes: settings.batchBytes },
            { timeoutMs: settings.migrateTimeoutMs },
          );
        } finally {
          stopTimer();
        }
      }),
    );
    let roundMoved = 0;
    let roundBytes = 0;
    let emptied = false;
    let bigKey: { name: Buffer; bytes: number } | undefined;
    let firstError: unknown;
    duty.round(results.flatMap((result) => (result.status === 'fulfilled' ? [result.value.ranUs] : [])));
    for (const result of results) {
      if (result.status === 'fulfilled') {
        if (pacer && result.value.ranUs) {
          pacer.observe(data.cluster, data.source, result.value.ranUs, budgetMs!, maxBatchKeys);
        }
        roundMoved += result.value.moved;
        roundBytes += result.value.bytes;
        if (!result.value.more) emptied = true;
        bigKey ??= result.value.bigKey;
      } else {
        firstError ??= result.reason;
        if (result.reason instanceof SlotfleetError && result.reason.code === ErrorCode.IoError) {
          metrics.migrateTimeouts.inc(labels);
        }
      }
    }
    if (bigKey && firstError === undefined) {
      // Every batch behind it stopped at it too: it goes alone, then the drain goes on.
      const timeoutMs = bigKeyTimeoutMs(settings.migrateTimeoutMs, bigKey.bytes);
      deps.log.info(
        { bytes: bigKey.bytes, timeoutMs },
        'moving a key bigger than the batch byte budget alone',
      );
      try {
        const sent = await cluster.migrate(data.source, data.target, [bigKey.name], { timeoutMs });
        roundMoved += sent;
        if (sent > 0) roundBytes += bigKey.bytes;
      } catch (error) {
        firstError = error;
        if (error instanceof SlotfleetError && error.code === ErrorCode.IoError)
          metrics.migrateTimeouts.inc(labels);
      }
      emptied = false;
    }
    moved += roundMoved;
    if (roundMoved > 0) metrics.keysMigrated.inc(labels, roundMoved);
    if (roundMoved > 0 && deps.throttle) await deps.throttle(data, { keys: roundMoved, bytes: roundBytes });
    // The last round's count goes to the record with the slot's next step (one write for most
    // slots); a slot that takes more rounds shows its progress as it goes.
    if (emptied && firstError === undefined) {
      if (round > 0)
        deps.log.debug({ keysMoved: moved, ...duty.summary() }, 'slot drained: how busy the source was');
      return { moved, unrecorded: roundMoved };
    }
    if (roundMoved > 0) {
      // Not waited for: the slot's end step, written later on the same connection, is.
      store
        .addKeysMoved(data.migrationId, roundMoved)
        .catch((error: Error) => deps.log.warn({ err: error.message }, 'counting keys moved'));
    }
    if (firstError !== undefined) {
      // The error policy (src/shared/errors.ts ERROR_POLICY): BUSYKEY and IOERR are dealt with here,
      // key by key; anything else ends the attempt and BullMQ's retry policy decides.
      const recovered = await recoverFromBatchError(firstError, data, deps);
      moved += recovered;
      if (recovered > 0) {
        metrics.keysMigrated.inc(labels, recovered);
        store
          .addKeysMoved(data.migrationId, recovered)
          .catch((error: Error) => deps.log.warn({ err: error.message }, 'counting keys moved'));
      }
    }
  }
}

/**
 * How a drain of many rounds used its source, by the source's clock (the batch script's TIME): time
 * in batches, when the source served nobody else, and time between a round's end and the next one's
 * start (the worker's round trip, and the clients' turn). A slow drain of a hot slot shows which of
 * the two it is.
 */
export class SourceDuty {
  private rounds = 0;
  private batches = 0;
  private busyUs = 0;
  private betweenUs = 0;
  private lastEndUs: number | undefined;

  /** One round's batches; those without the source's clock (no +time ACL rule) are not counted. */
  round(ran: readonly ({ readonly start: number; readonly end: number } | undefined)[]): void {
    const timed = ran.filter((run) => run !== undefined);
    this.rounds++;
    if (timed.length === 0) return;
    const start = Math.min(...timed.map((run) => run.start));
    if (this.lastEndUs !== undefined) this.betweenUs += Math.max(0, start - this.lastEndUs);
    this.lastEndUs = Math.max(...timed.map((run) => run.end));
    for (const run of timed) this.busyUs += run.end - run.start;
    this.batches += timed.length;
  }

  summary(): { rounds: number; batches: number; sourceBusyMs: number; betweenRoundsMs: number } {
    return {
      rounds: this.rounds,
      batches: this.batches,
      sourceBusyMs: Math.round(this.busyUs / 1000),
      betweenRoundsMs: Math.round(this.betweenUs / 1000),
    };
  }
}

/** How much longer a key that timed out in a batch may take when it is retried alone. */
const ALONE_TIMEOUT_FACTOR = 4;

/**
 * After a batch failed:
 *  - BUSYKEY: the target already holds some of the keys (typically restored by a MIGRATE that then
 *    timed out, before the source could delete them). Their DUMP payloads are compared: same value,
 *    MIGRATE REPLACE is safe (the source's copy, with its TTL, wins); another value fails the slot
 *    naming the keys, unless the migration was posted with replace: true.
 *  - IOERR (a timeout towards the target): the next key moves alone with a longer timeout; if it
 *    times out again, the attempt fails naming the key (retried with backoff, then the slot fails).
 * @returns keys moved while recovering; throws when it cannot recover.
 */
async function recoverFromBatchError(error: unknown, data: SlotJobData, deps: DrainDeps): Promise<number> {
  const code = errorCodeOf(error);
  if (code === ErrorCode.BusyKey) return replaceBusyKeys(data, deps);
  if (code !== ErrorCode.IoError) throw error;
  const { cluster, settings, log } = deps;
  const [key] = await cluster.getKeysInSlot(data.source, data.slot, 1);
  if (key === undefined) return 0;
  const timeoutMs = settings.migrateTimeoutMs * ALONE_TIMEOUT_FACTOR;
  log.warn(
    { key: printableKey(key), timeoutMs, err: (error as Error).message },
    'batch timed out: next key alone',
  );
  try {
    return await cluster.migrate(data.source, data.target, [key], { timeoutMs });
  } catch (alone) {
    const aloneCode = errorCodeOf(alone);
    if (aloneCode === ErrorCode.BusyKey) return replaceBusyKeys(data, deps);
    if (aloneCode === ErrorCode.IoError) {
      deps.metrics.migrateTimeouts.inc({
        cluster: data.cluster,
        source: nodeAddress(data.source),
        target: nodeAddress(data.target),
      });
      throw new SlotfleetError(
        ErrorCode.IoError,
        `key ${printableKey(key)} of slot ${data.slot} timed out in a batch and again alone (${timeoutMs} ms): ` +
          `${(alone as Error).message}. The slot stays open and safe (clients follow ASK); check the target ` +
          `${nodeAddress(data.target)}, or raise SLOTFLEET_MIGRATE_TIMEOUT_MS`,
        { cause: alone, details: { key: printableKey(key) } },
      );
    }
    throw alone;
  }
}

/** Keys named in an error message at most. */
const KEYS_NAMED = 10;

async function replaceBusyKeys(data: SlotJobData, deps: DrainDeps): Promise<number> {
  const { cluster, settings, log } = deps;
  const keys = await cluster.getKeysInSlot(data.source, data.slot, settings.batchKeys);
  const [sourceDumps, targetDumps] = await Promise.all([
    cluster.dumpKeys(data.source, keys, { asking: false }),
    cluster.dumpKeys(data.target, keys, { asking: true }),
  ]);
  const busy = keys.filter((_, index) => targetDumps[index] !== null && sourceDumps[index] !== null);
  if (busy.length === 0) return 0;
  // Equal DUMP payloads are the same value. Different payloads may still be (RESTORE can choose
  // another encoding), so those keys are compared by content.
  const dumpsDiffer = busy.filter((key) => {
    const index = keys.indexOf(key);
    return !sourceDumps[index]!.equals(targetDumps[index]!);
  });
  let differing = dumpsDiffer;
  try {
    const [sourceValues, targetValues] = await Promise.all([
      cluster.canonicalValues(data.source, dumpsDiffer, { asking: false }),
      cluster.canonicalValues(data.target, dumpsDiffer, { asking: true }),
    ]);
    differing = dumpsDiffer.filter((_, index) => sourceValues[index] !== targetValues[index]);
  } catch (error) {
    // An ACL user without read commands cannot compare contents: such keys count as different.
    log.warn({ err: (error as Error).message }, 'cannot compare key contents: treating them as different');
  }
  if (differing.length > 0 && !data.replace) {
    const named = differing.slice(0, KEYS_NAMED).map(printableKey);
    throw new SlotfleetError(
      ErrorCode.BusyKey,
      `BUSYKEY: target ${nodeAddress(data.target)} already holds ${differing.length} key(s) of slot ${data.slot} with a ` +
        `value other than the source's: ${named.join(', ')}${differing.length > KEYS_NAMED ? ', ...' : ''}. ` +
        'Nothing was overwritten and the slot stays open and safe. Remove them from the target, or post the ' +
        "migration again with replace: true to overwrite them with the source's values",
      { details: { keys: named, count: differing.length } },
    );
  }
  log.warn(
    { identical: busy.length - differing.length, overwritten: differing.length },
    'target already held keys of the slot: replacing them with the source copy',
  );
  return cluster.migrate(data.source, data.target, busy, {
    timeoutMs: settings.migrateTimeoutMs,
    replace: true,
  });
}

/** A key name for messages: as text when it is valid UTF-8, else as hex. */
export function printableKey(key: Buffer): string {
  const text = key.toString('utf8');
  return Buffer.from(text, 'utf8').equals(key) ? JSON.stringify(text) : `0x${key.toString('hex')}`;
}
