/**
 * Drives one slot through the state machine of src/shared/domain/slot-migration.ts against the
 * cluster: observe, ask the machine for the next action, perform it, repeat. Used by both the
 * migrate job (up to drained) and the finalizer job (up to done); both are safe to re-run at any
 * point because every run starts from a fresh observation of the cluster.
 */
import type { ClusterAdapter } from '../shared/cluster/adapter.js';
import type { MigrationLimits } from '../shared/domain/migration.js';
import {
  afterAction,
  nextSlotAction,
  type SlotAction,
  SlotActionKind,
  type SlotObservation,
  SlotPhase,
  SlotStep,
  stepOf,
} from '../shared/domain/slot-migration.js';
import { ErrorCode, errorCodeOf, SlotfleetError } from '../shared/errors.js';
import type { Logger } from '../shared/logger.js';
import type { Metrics } from '../shared/metrics.js';
import type { MigrationStore } from '../shared/queue/migration-store.js';
import type { SlotJobData } from '../shared/queue/names.js';
import type { Pacer } from './pacer.js';

export interface SlotEngineSettings {
  readonly batchKeys: number;
  readonly batchesInFlight: number;
  /** Bytes per MIGRATE; 0: no limit. */
  readonly batchBytes: number;
  readonly migrateTimeoutMs: number;
}

/**
 * A key bigger than the byte budget moves alone, with MIGRATE's timeout stretched by its size: the
 * target must read and RESTORE it before it answers. Assumes no less than 8 MB/s.
 */
export function bigKeyTimeoutMs(baseTimeoutMs: number, bytes: number): number {
  const BYTES_PER_MS = 8 * 1024;
  return baseTimeoutMs + Math.ceil(bytes / BYTES_PER_MS);
}

export interface SlotEngineDeps {
  readonly adapter: ClusterAdapter;
  readonly store: MigrationStore;
  readonly metrics: Metrics;
  readonly settings: SlotEngineSettings;
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
   * batch's size and is told each batch's round trip. Unused for a migration without a budget.
   */
  readonly pacer?: Pacer;
  /** True when the operator paused the migration: draining stops after the batches in flight. */
  readonly isPaused?: () => Promise<boolean>;
  /** Called before each action is performed; tests use it to interrupt a slot between two steps. */
  readonly beforeAction?: (action: SlotAction, observation: SlotObservation) => void | Promise<void>;
}

/** Thrown between two batches when the migration was paused; the processor postpones the job. */
export class PauseRequested extends Error {
  constructor() {
    super('migration paused');
    this.name = 'PauseRequested';
  }
}

export interface SlotRunResult {
  readonly keysMoved: number;
  readonly step: SlotStep;
}

/** More actions than any honest run needs: a guard against a cluster that keeps changing under us. */
const MAX_ACTIONS = 64;
/** How long a finalizer waits in place for config epochs to settle before handing back to BullMQ. */
const EPOCH_WAIT_MS = 5_000;
const EPOCH_POLL_MS = 50;

export async function driveSlot(
  planned: SlotJobData,
  phase: SlotPhase,
  deps: SlotEngineDeps,
): Promise<SlotRunResult> {
  const { adapter, store, log } = deps;
  // The source and target as they are now: a failover replaces one by its promoted replica.
  let data = planned;
  const replaced: string[] = [];
  /**
   * A fresh observation, after adopting the successor of a source or target that failed over: the
   * node at the planned address answers as a replica of a master that the cluster knows, so that
   * master holds the slot's keys (replicated) and continues the migration. The state machine then
   * sets IMPORTING / MIGRATING again, naming the successor (Redis keeps neither across a failover).
   */
  const observe = async (options: {
    includeOthers: boolean;
    countKeys?: boolean;
  }): Promise<SlotObservation> => {
    for (let adoptions = 0; ; adoptions++) {
      // A migrate job needs no key count: emptiness is what its drain establishes (the batch script
      // that finds no key), and only the finalizer assigns the slot, from a counted observation.
      const observed = await adapter.observeSlot(data.slot, data.source, data.target, {
        ...options,
        countKeys: options.countKeys ?? phase !== SlotPhase.Migrate,
      });
      const stale = !observed.source.isMaster ? 'source' : !observed.target.isMaster ? 'target' : undefined;
      if (stale === undefined || adoptions >= 2) return { ...observed, replaced };
      const successorId = observed[stale].masterId;
      // A source that lost its last slot to the target follows the target (Redis 7.0 replica
      // migration): not a failover, the state machine knows it is done with that node.
      if (successorId === data.source.id || successorId === data.target.id) return { ...observed, replaced };
      const successor = observed.others.find((other) => other.nodeId === successorId);
      if (!successor) {
        // A replica whose master is not (yet) a healthy master in the source's view: gossip has not
        // settled since the failover. Retryable; the next attempt looks again.
        throw new SlotfleetError(
          ErrorCode.NotConverged,
          `the ${stale} of slot ${data.slot} (${data[stale].host}:${data[stale].port}) is now a replica of ` +
            `${successorId ?? 'no master'}, which the cluster does not list as a master yet`,
        );
      }
      log.warn(
        {
          role: stale,
          from: `${data[stale].host}:${data[stale].port}`,
          to: `${successor.host}:${successor.port}`,
        },
        'failed over: continuing with its promoted replica',
      );
      replaced.push(data[stale].id);
      data = { ...data, [stale]: { id: successor.nodeId, host: successor.host, port: successor.port } };
    }
  };
  // The other masters' opinions are read only to verify the end: before that, the finalizer sends
  // them SETSLOT NODE unconditionally (idempotent), which is cheaper than asking each first.
  const includeOthers = false;
  let observation = await observe({ includeOthers });
  if (phase === SlotPhase.Migrate && observation.target.owner === data.target.id) {
    // A re-run after the finalizer started: count, so that a finished slot gets no command at all.
    observation = await observe({ includeOthers, countKeys: true });
  }
  if (phase === SlotPhase.Finalize && observation.target.owner === data.target.id) {
    // A re-run of a slot the target already owns: ask the others instead of assigning blindly, so
    // that re-running a finished slot sends no command at all.
    observation = await observe({ includeOthers: true });
  }
  // True while `observation` came from the cluster rather than from our predictions.
  let fresh = true;
  // The record is written when a slot is about to wait (a drain, config epochs) and when the job
  // ends: steps that pass in a millisecond are not worth a control-Redis write each. A migrate job
  // starts from pending, a finalizer from the drained (migrating) step its migrate job wrote; a job
  // that observes anything else (a re-run after a crash) writes what it sees at its first wait or end.
  let recordedStep: SlotStep = phase === SlotPhase.Migrate ? SlotStep.Pending : SlotStep.Migrating;
  let keysMoved = 0;
  /** Keys moved whose count is not in the record yet: it goes with the next step written. */
  let keysToRecord = 0;
  const record = (step: SlotStep): Promise<boolean> | undefined => {
    if (step === recordedStep && keysToRecord === 0) return undefined;
    if (step !== recordedStep) log.info({ from: recordedStep, to: step }, 'slot step');
    const write = store.setSlotStep(data.migrationId, data.cluster, data.slot, step, keysToRecord);
    recordedStep = step;
    keysToRecord = 0;
    return write;
  };
  // Written without waiting (the control connection keeps them in order), except Done: the
  // migration's state is derived from it.
  const recordInBackground = (step: SlotStep) =>
    record(step)?.catch((error: Error) => log.warn({ err: error.message }, 'recording slot step'));
  let verified = false;
  const epochDeadline = Date.now() + EPOCH_WAIT_MS;
  for (let performed = 0; performed < MAX_ACTIONS; performed++) {
    const step = stepOf(observation);
    const action = nextSlotAction(observation, phase);
    if (action.kind === SlotActionKind.Drained) {
      recordInBackground(step);
      return { keysMoved, step };
    }
    if (action.kind === SlotActionKind.Done) {
      // Done is only believed from a fresh look at every master, not from our own predictions.
      if (verified) {
        await record(step);
        return { keysMoved, step };
      }
      observation = await observe({ includeOthers: true });
      fresh = true;
      verified = true;
      continue;
    }
    verified = false;
    if (action.kind === SlotActionKind.AwaitEpoch || action.kind === SlotActionKind.AwaitOwner) {
      recordInBackground(step);
      if (Date.now() > epochDeadline) throw new SlotfleetError(ErrorCode.NotConverged, action.reason);
      log.debug({ reason: action.reason }, 'waiting for the cluster to agree');
      await new Promise((resolve) => setTimeout(resolve, EPOCH_POLL_MS));
      performed--;
      observation = await observe({ includeOthers });
      fresh = true;
      continue;
    }
    await deps.beforeAction?.(action, observation);
    switch (action.kind) {
      case SlotActionKind.SetImporting:
        await adapter.setSlotImporting(data.target, data.slot, data.source.id);
        break;
      case SlotActionKind.SetMigrating:
        await adapter.setSlotMigrating(data.source, data.slot, data.target.id);
        break;
      case SlotActionKind.ResetImport:
        log.warn('closing an IMPORTING that names a failed-over source, to import from its successor');
        await adapter.setSlotStable(data.target, data.slot);
        break;
      case SlotActionKind.MigrateKeys: {
        // Most slots drain in one batch: the step is recorded only if the drain takes longer.
        const drained = await drainSlot(data, deps, () => recordInBackground(step));
        keysMoved += drained.moved;
        keysToRecord += drained.unrecorded;
        break;
      }
      case SlotActionKind.AssignTarget: {
        // The one irreversible step: only from a fresh observation, never from a prediction.
        if (!fresh) {
          observation = await observe({ includeOthers });
          fresh = true;
          continue;
        }
        log.info({ epochs: observation.epochs }, 'assigning slot to target');
        // SETSLOT NODE on the target first: it bumps the target's config epoch, so its claim wins.
        await adapter.setSlotNode(data.target, data.slot, data.target.id);
        break;
      }
      case SlotActionKind.AssignSource: {
        // The other masters need not wait for the source: assigning them is as safe now (the target
        // claimed the slot with the higher epoch) and saves a round trip per slot.
        const assigned = afterAction(observation, action);
        const following = nextSlotAction(assigned, phase);
        const others = following.kind === SlotActionKind.AssignOthers ? following : undefined;
        const sourceAssigned = adapter.setSlotNode(data.source, data.slot, data.target.id);
        // Awaited below; a throwing beforeAction must not leave its rejection unhandled.
        sourceAssigned.catch(() => undefined);
        if (others) await deps.beforeAction?.(others, assigned);
        await Promise.all([
          sourceAssigned,
          others ? assignOthers(data, observation, others.nodeIds, adapter) : undefined,
        ]);
        observation = others ? afterAction(assigned, others) : assigned;
        fresh = false;
        continue;
      }
      case SlotActionKind.AssignOthers:
        await assignOthers(data, observation, action.nodeIds, adapter);
        break;
      case SlotActionKind.Fail:
        throw new SlotfleetError(action.code, action.message);
      default: {
        const never: never = action;
        throw new Error(`unhandled slot action: ${JSON.stringify(never)}`);
      }
    }
    observation = afterAction(observation, action);
    fresh = false;
  }
  throw new SlotfleetError(
    ErrorCode.NotConverged,
    `slot ${data.slot} did not settle after ${MAX_ACTIONS} actions: the cluster keeps changing`,
  );
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
  deps: SlotEngineDeps,
  onSecondRound?: () => void,
): Promise<{ moved: number; unrecorded: number }> {
  const { metrics } = deps;
  const labels = { cluster: data.cluster, source: address(data.source), target: address(data.target) };
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
  deps: SlotEngineDeps,
  labels: { cluster: string; source: string; target: string },
  onSecondRound?: () => void,
): Promise<{ moved: number; unrecorded: number }> {
  const { adapter, store, metrics, settings } = deps;
  let moved = 0;
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
          return await adapter.migrateNextBatch(
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
        const sent = await adapter.migrate(data.source, data.target, [bigKey.name], { timeoutMs });
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
    if (emptied && firstError === undefined) return { moved, unrecorded: roundMoved };
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
async function recoverFromBatchError(
  error: unknown,
  data: SlotJobData,
  deps: SlotEngineDeps,
): Promise<number> {
  const code = errorCodeOf(error);
  if (code === ErrorCode.BusyKey) return replaceBusyKeys(data, deps);
  if (code !== ErrorCode.IoError) throw error;
  const { adapter, settings, log } = deps;
  const [key] = await adapter.getKeysInSlot(data.source, data.slot, 1);
  if (key === undefined) return 0;
  const timeoutMs = settings.migrateTimeoutMs * ALONE_TIMEOUT_FACTOR;
  log.warn(
    { key: printableKey(key), timeoutMs, err: (error as Error).message },
    'batch timed out: next key alone',
  );
  try {
    return await adapter.migrate(data.source, data.target, [key], { timeoutMs });
  } catch (alone) {
    const aloneCode = errorCodeOf(alone);
    if (aloneCode === ErrorCode.BusyKey) return replaceBusyKeys(data, deps);
    if (aloneCode === ErrorCode.IoError) {
      deps.metrics.migrateTimeouts.inc({
        cluster: data.cluster,
        source: address(data.source),
        target: address(data.target),
      });
      throw new SlotfleetError(
        ErrorCode.IoError,
        `key ${printableKey(key)} of slot ${data.slot} timed out in a batch and again alone (${timeoutMs} ms): ` +
          `${(alone as Error).message}. The slot stays open and safe (clients follow ASK); check the target ` +
          `${address(data.target)}, or raise SLOTFLEET_MIGRATE_TIMEOUT_MS`,
        { cause: alone, details: { key: printableKey(key) } },
      );
    }
    throw alone;
  }
}

/** Keys named in an error message at most. */
const KEYS_NAMED = 10;

async function replaceBusyKeys(data: SlotJobData, deps: SlotEngineDeps): Promise<number> {
  const { adapter, settings, log } = deps;
  const keys = await adapter.getKeysInSlot(data.source, data.slot, settings.batchKeys);
  const [sourceDumps, targetDumps] = await Promise.all([
    adapter.dumpKeys(data.source, keys, { asking: false }),
    adapter.dumpKeys(data.target, keys, { asking: true }),
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
      adapter.canonicalValues(data.source, dumpsDiffer, { asking: false }),
      adapter.canonicalValues(data.target, dumpsDiffer, { asking: true }),
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
      `BUSYKEY: target ${address(data.target)} already holds ${differing.length} key(s) of slot ${data.slot} with a ` +
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
  return adapter.migrate(data.source, data.target, busy, {
    timeoutMs: settings.migrateTimeoutMs,
    replace: true,
  });
}

/** A key name for messages: as text when it is valid UTF-8, else as hex. */
export function printableKey(key: Buffer): string {
  const text = key.toString('utf8');
  return Buffer.from(text, 'utf8').equals(key) ? JSON.stringify(text) : `0x${key.toString('hex')}`;
}

/** SETSLOT NODE on the other masters, at the addresses the source's view gave them. */
async function assignOthers(
  data: SlotJobData,
  observation: SlotObservation,
  nodeIds: readonly string[],
  adapter: ClusterAdapter,
): Promise<void> {
  await Promise.all(
    observation.others
      .filter((other) => nodeIds.includes(other.nodeId))
      .map((other) => adapter.setSlotNode(other, data.slot, data.target.id)),
  );
}

/** host:port, as logs, metrics labels and messages name a node. */
export function address(node: { host: string; port: number }): string {
  return `${node.host}:${node.port}`;
}
