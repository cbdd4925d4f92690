/**
 * BullMQ processors of the two slot jobs. migrate-slot: IMPORTING, MIGRATING, drain, then it hands
 * the slot to the worker's finalize batcher, which adds one finalize-slot job for the slots drained
 * within a few milliseconds of each other (deterministic id: a re-run of the same batch adds nothing).
 * finalize-slot: SETSLOT NODE everywhere and the check, for every slot of its batch at once, so the
 * commands of all of them reach each node in one write (one cluster-config save per node, not one
 * per slot). The protocol lives in driveSlot; here is the bookkeeping, and what the operator asked for:
 *   pause  - a job that starts, or reaches the end of a batch, is postponed (moved to delayed) and
 *            looks again later; the slot stays open but safe.
 *   cancel - a slot not yet MIGRATING is dropped (the target's IMPORTING undone); one already
 *            MIGRATING is finished, so no slot is ever left with its keys split.
 */
import { DelayedError, type Job, UnrecoverableError } from 'bullmq';
import type { ClusterPort } from '../shared/cluster/port.js';
import { MigrationControl, MigrationEngine } from '../shared/domain/migration.js';
import { FixKind } from '../shared/domain/planners/index.js';
import { SlotPhase, SlotStep } from '../shared/domain/slot-migration.js';
import { nodeAddress } from '../shared/domain/topology.js';
import { ErrorCode, errorCodeOf, isRetryable, SlotfleetError } from '../shared/errors.js';
import type { Logger } from '../shared/logger.js';
import { type Metrics, SlotResult } from '../shared/metrics.js';
import type { SlotOpenings, SlotRecords } from '../shared/queue/migration-store.js';
import type { FinalizeJobData, SlotJobData } from '../shared/queue/names.js';
import {
  type AcquireHooks,
  BUSY_RECHECK_MS,
  type LeaseRequest,
  type NodeCaps,
  type NodeLease,
  type NodeLeases,
} from '../shared/queue/node-leases.js';
import { type DrainSettings, PauseRequested } from './drain.js';
import type { AtomicRuntime } from './movers/atomic-mover.js';
import { type MoverDeps, moverFor } from './movers/slot-mover.js';
import type { Pacer } from './pacer.js';
import { runRepair } from './repair.js';
import type { SlotRunDeps } from './slot-run.js';

export interface ProcessorDeps {
  readonly adapterFor: (cluster: string) => ClusterPort;
  readonly store: SlotRecords;
  readonly metrics: Metrics;
  readonly settings: DrainSettings;
  readonly log: Logger;
  /** The operator's current wish for a migration (cached briefly by the worker). */
  readonly controlOf: (migrationId: string) => Promise<MigrationControl>;
  /** Resolves once a finalize-slot job holding this drained slot was added. */
  readonly enqueueFinalize: (data: SlotJobData) => Promise<void>;
  readonly beforeAction?: SlotRunDeps['beforeAction'];
  /** Engine keys: blocks of slots moved by the job of each block's first slot (keys-mover.ts). */
  readonly openAhead?: SlotRunDeps['openAhead'];
  /** Passed on to the engine as they are (per-migration limits, the fleet-wide throttle). */
  readonly limitsOf?: SlotRunDeps['limitsOf'];
  readonly throttle?: SlotRunDeps['throttle'];
  /** Caps slots in flight per source and target node across the fleet; none: no cap. */
  readonly nodeLeases?: NodeLeases;
  /**
   * Told when a migrate job starts and stops waiting for its node leases, so that the worker lets a
   * waiting job not count against its concurrency (see worker.ts).
   */
  readonly leaseWait?: AcquireHooks;
  /** The workers' caps of slots draining per source and target (node leases). */
  readonly nodeCaps?: NodeCaps;
  readonly pacer?: Pacer;
  /** The atomic engine's per-process state (server tasks, their records); absent: keys only. */
  readonly atomic?: AtomicRuntime;
  /** Told when a migrate job starts and stops waiting for a server task (see worker.ts). */
  readonly taskWait?: { onWait(): void; onWaitEnd(): void };
  /** Slots another job may still be opening (keys engine); absent: none ever are. */
  readonly openings?: Pick<SlotOpenings, 'openingsInFlight'>;
}

/** How often a slot that another job is opening looks again (an opening takes milliseconds). */
const OPENING_POLL_MS = 20;

/**
 * Before slots of the keys engine are assigned or dropped: waits until no job that opened them ahead
 * (SlotRunDeps.openAhead) may still be writing IMPORTING or MIGRATING for them, so that no such write
 * reaches a node after the slot is closed there (SlotOpenings says what Valkey's replicas make of
 * one). Bounded by the claims' grace: a dead opener's stamps stop counting then.
 */
async function waitForOpeners(
  deps: ProcessorDeps,
  migrationId: string,
  slots: readonly number[],
  log: Logger,
): Promise<void> {
  if (!deps.openings) return;
  let waiting = slots;
  for (let polls = 0; ; polls++) {
    waiting = await deps.openings.openingsInFlight(migrationId, waiting);
    if (waiting.length === 0) return;
    if (polls === 0) log.debug({ slots: waiting.length }, 'waiting for the job that opened slots ahead');
    await new Promise((resolve) => setTimeout(resolve, OPENING_POLL_MS));
  }
}

/**
 * For a migration with a client-latency budget, the source's cap of slots draining is its pace, read
 * at every attempt (it moves while a job waits); otherwise the workers' caps hold.
 */
async function pacedCaps(deps: ProcessorDeps, data: SlotJobData): Promise<Pick<LeaseRequest, 'caps'>> {
  const { pacer, nodeCaps } = deps;
  if (!pacer || !nodeCaps) return {};
  const limits = (await deps.limitsOf?.(data.migrationId)) ?? {};
  if (limits.maxClientLatencyMs === undefined) return {};
  const maxBatchKeys = limits.batchKeys ?? deps.settings.batchKeys;
  return {
    caps: () => ({ ...nodeCaps, perSource: pacer.pace(data.cluster, data.source, maxBatchKeys).slots }),
  };
}

/** The engine a slot job runs with, for metric labels: jobs added before engines existed move keys. */
function engineOf(data: SlotJobData): MigrationEngine {
  return moverFor(data).engine;
}

/** How long a paused slot job waits before it looks at the migration again. */
export const PAUSE_RECHECK_MS = 1_000;

/** Thrown by a migrate job that got no lease because its worker is stopping: postponed, not failed. */
class NodesBusy extends Error {}

/**
 * One slot, one phase, one attempt: the cancel decision, a repair, or the state machine.
 * @returns the keys moved, or cancelled: true when the slot was dropped.
 */
async function attemptSlot(
  phase: SlotPhase,
  data: SlotJobData,
  control: MigrationControl,
  deps: ProcessorDeps,
  log: Logger,
  drainGate?: SlotRunDeps['drainGate'],
): Promise<{ keysMoved: number; cancelled?: boolean }> {
  let cluster: ClusterPort;
  try {
    cluster = deps.adapterFor(data.cluster);
  } catch (error) {
    throw new SlotfleetError(ErrorCode.UnknownCluster, (error as Error).message);
  }
  const engine: MoverDeps = {
    ...deps,
    cluster,
    log,
    isPaused: async () => (await deps.controlOf(data.migrationId)) === MigrationControl.Pause,
    controlNow: () => deps.controlOf(data.migrationId),
    logOf: (slot, bindings) =>
      slotLog(deps, { ...data, slot }, phase, undefined, { openedBy: data.slot, ...bindings }),
    ...(drainGate ? { drainGate } : {}),
  };
  if (control === MigrationControl.Cancel) {
    if (moverFor(data).engine === MigrationEngine.Keys) {
      await waitForOpeners(deps, data.migrationId, [data.slot], log);
    }
    if ((await moverFor(data).onCancel(data, engine)) === 'cancelled') {
      // The finalizer of a slot its migrate job cancelled comes here too: count the slot once.
      if (await deps.store.setSlotStep(data.migrationId, data.cluster, data.slot, SlotStep.Cancelled)) {
        deps.metrics.slotsFinished.inc({
          cluster: data.cluster,
          result: SlotResult.Cancelled,
          engine: engineOf(data),
        });
      }
      return { keysMoved: 0, cancelled: true };
    }
    log.info('migration cancelled, but this slot has moved or is moving: finishing it');
  }
  const repairKind = data.repair?.kind;
  let keysMoved = 0;
  // A mover may finish the slot in its migrate phase (the atomic engine: the servers hand the slot
  // over, nothing is left for a finalizer): then no finalize job is added.
  let finished = phase === SlotPhase.Finalize;
  // Drained by the job that opened it (keys engine blocks), which added its finalize job too.
  let handedOn = false;
  if (repairKind !== undefined && repairKind !== FixKind.FinishMigration) {
    if (phase === SlotPhase.Migrate) keysMoved = (await runRepair(data, engine)).keysMoved;
    else await deps.store.setSlotStep(data.migrationId, data.cluster, data.slot, SlotStep.Done);
  } else {
    const result = await moverFor(data).moveSlot(data, phase, engine);
    keysMoved = result.keysMoved;
    finished ||= result.step === SlotStep.Done;
    handedOn = result.handedOn === true;
    if (phase === SlotPhase.Finalize && data.repair) {
      await Promise.all(data.repair.closeOn.map((node) => cluster.setSlotStable(node, data.slot)));
    }
  }
  if (finished) {
    deps.metrics.slotsFinished.inc({
      cluster: data.cluster,
      result: SlotResult.Done,
      engine: engineOf(data),
    });
    log.info({ keysMoved }, 'slot done');
  } else if (!handedOn) {
    // Added before this job completes: a crash in between re-runs the (drained) migrate job,
    // which adds it then.
    await deps.enqueueFinalize(data);
    log.debug({ keysMoved }, 'slot drained');
  }
  return { keysMoved };
}

/**
 * Records a failed attempt of one slot: its error, and its end when the error is not retryable or
 * the attempts are spent.
 * @returns whether the slot may be tried again.
 */
async function recordFailure(
  data: SlotJobData,
  error: unknown,
  lastAttempt: boolean,
  deps: ProcessorDeps,
  log: Logger,
): Promise<{ retry: boolean; code: ErrorCode; message: string }> {
  const code = errorCodeOf(error);
  const message = error instanceof Error ? error.message : String(error);
  deps.metrics.migrateErrors.inc({ cluster: data.cluster, code });
  const retryable = isRetryable(error);
  await deps.store.recordSlotError(data.migrationId, data.slot, { code, message });
  if (!retryable || lastAttempt) {
    await deps.store.setSlotStep(data.migrationId, data.cluster, data.slot, SlotStep.Failed);
    deps.metrics.slotsFinished.inc({
      cluster: data.cluster,
      result: SlotResult.Failed,
      engine: engineOf(data),
    });
    log.error({ code, err: message }, 'slot failed: left open and safe, clients follow ASK; re-run or fix');
    return { retry: false, code, message };
  }
  log.warn({ code, err: message }, 'slot attempt failed, will retry');
  return { retry: true, code, message };
}

/**
 * A slot's logger; attempt: its job's (absent for a slot its block's opener moves); bindings: more
 * fields, in the same child (each child serializes and redacts its fields: a few per slot add up).
 */
function slotLog(
  deps: ProcessorDeps,
  data: SlotJobData,
  phase: SlotPhase,
  attempt?: number,
  bindings: Record<string, unknown> = {},
): Logger {
  return deps.log.child({
    migrationId: data.migrationId,
    slot: data.slot,
    source: nodeAddress(data.source),
    target: nodeAddress(data.target),
    phase,
    ...(attempt !== undefined ? { attempt } : {}),
    ...(data.repair ? { repair: data.repair.kind } : {}),
    ...bindings,
  });
}

/** Moves the job to delayed (a pause, or busy nodes) and ends the attempt without failing it. */
async function postpone(
  job: Job,
  token: string | undefined,
  log: Logger,
  nodesBusy: boolean,
): Promise<never> {
  const recheckMs = nodesBusy ? BUSY_RECHECK_MS : PAUSE_RECHECK_MS;
  // Busy nodes are routine under the caps: acquire() says so at debug level.
  if (!nodesBusy) log.info({ recheckMs }, 'migration paused: slot job postponed');
  await job.moveToDelayed(Date.now() + recheckMs, token);
  throw new DelayedError();
}

/** The migrate-slot processor: one slot, up to drained. */
export function createMigrateProcessor(deps: ProcessorDeps) {
  return async (
    job: Job<SlotJobData>,
    token?: string,
  ): Promise<{ keysMoved: number; cancelled?: boolean }> => {
    const data = job.data;
    const log = slotLog(deps, data, SlotPhase.Migrate, job.attemptsMade + 1);
    const stopTimer = deps.metrics.slotDuration.startTimer({ cluster: data.cluster, engine: engineOf(data) });
    const inFlight = { cluster: data.cluster, source: nodeAddress(data.source) };
    deps.metrics.slotsInFlight.inc(inFlight);
    // An attempt postponed by a pause (or by busy nodes) ends when the operator says, not when the
    // work is done: it is not timed, or the histogram would fill with short, meaningless durations.
    let postponed = false;
    // Held while the slot's keys drain: MIGRATE blocks the source (see node-leases.ts). The slot's
    // other steps need no lease: their commands share each node's writes with other slots'.
    let held: NodeLease | undefined;
    const release = () => {
      const releasing = held?.release();
      held = undefined;
      return releasing;
    };
    const leases = deps.nodeLeases;
    const drainGate: SlotRunDeps['drainGate'] = leases && {
      acquire: async () => {
        const request = { ...data, holder: `${job.id}@${token}`, ...(await pacedCaps(deps, data)) };
        held = await leases.acquire(request, log, deps.leaseWait);
        if (!held) throw new NodesBusy();
        // The wait can be long: the operator may have paused meanwhile. (A cancel does not matter
        // here: the slot is MIGRATING, and a MIGRATING slot is finished.)
        if ((await deps.controlOf(data.migrationId)) === MigrationControl.Pause) {
          await release();
          throw new PauseRequested();
        }
      },
      release,
    };
    try {
      const control = await deps.controlOf(data.migrationId);
      if (control === MigrationControl.Pause) {
        postponed = true;
        return await postpone(job, token, log, false);
      }
      return await attemptSlot(SlotPhase.Migrate, data, control, deps, log, drainGate);
    } catch (error) {
      if (error instanceof DelayedError) throw error;
      if (error instanceof PauseRequested || error instanceof NodesBusy) {
        postponed = true;
        return await postpone(job, token, log, error instanceof NodesBusy);
      }
      const lastAttempt = job.attemptsMade + 1 >= (job.opts.attempts ?? 1);
      const { code, message } = await recordFailure(data, error, lastAttempt, deps, log);
      if (!isRetryable(error)) throw new UnrecoverableError(`${code}: ${message}`);
      throw error;
    } finally {
      await release();
      if (!postponed) stopTimer();
      deps.metrics.slotsInFlight.dec(inFlight);
    }
  };
}

/**
 * The finalize-slot processor: every slot of the batch at once (their commands share each node's
 * writes and CLUSTER NODES reads, see ClusterAdapter). Slots fail on their own: an attempt that
 * leaves some to retry keeps only those in the job's data, so a retry never touches the others. A
 * slot that fails for good is marked failed in the migration record, with its error, at once; the
 * job itself ends failed (naming it) when no slot of it is left to retry, and otherwise goes on with
 * the retryable ones.
 */
export function createFinalizeProcessor(deps: ProcessorDeps) {
  return async (job: Job<FinalizeJobData>, token?: string): Promise<{ keysMoved: number; slots: number }> => {
    const { migrationId, cluster, slots } = job.data;
    const attempt = job.attemptsMade + 1;
    const log = deps.log.child({ migrationId, phase: SlotPhase.Finalize, slots: slots.length, attempt });
    const control = await deps.controlOf(migrationId);
    if (control === MigrationControl.Pause) return await postpone(job, token, log, false);
    const stopTimer = deps.metrics.finalizeDuration.startTimer({ cluster });
    await waitForOpeners(
      deps,
      migrationId,
      slots.map((data) => data.slot),
      log,
    );
    const outcomes = await Promise.allSettled(
      slots.map(async (data) => {
        const inFlight = { cluster: data.cluster, source: nodeAddress(data.source) };
        deps.metrics.slotsInFlight.inc(inFlight);
        try {
          const slotLogger = slotLog(deps, data, SlotPhase.Finalize, attempt);
          return await attemptSlot(SlotPhase.Finalize, data, control, deps, slotLogger);
        } finally {
          deps.metrics.slotsInFlight.dec(inFlight);
        }
      }),
    );
    const lastAttempt = attempt >= (job.opts.attempts ?? 1);
    const again: SlotJobData[] = [];
    let paused = false;
    let firstFailure: { code: ErrorCode; message: string; slot: number } | undefined;
    let keysMoved = 0;
    for (const [index, outcome] of outcomes.entries()) {
      const data = slots[index]!;
      if (outcome.status === 'fulfilled') {
        keysMoved += outcome.value.keysMoved;
        continue;
      }
      if (outcome.reason instanceof PauseRequested) {
        paused = true;
        again.push(data);
        continue;
      }
      const failure = await recordFailure(
        data,
        outcome.reason,
        lastAttempt,
        deps,
        slotLog(deps, data, SlotPhase.Finalize, attempt),
      );
      firstFailure ??= { code: failure.code, message: failure.message, slot: data.slot };
      if (failure.retry) again.push(data);
    }
    stopTimer();
    if (again.length > 0 && again.length < slots.length) {
      // What is done stays done: the retry (or the resumed job) carries only the others.
      await job.updateData({ migrationId, cluster, slots: again });
    }
    if (paused) return await postpone(job, token, log, false);
    if (firstFailure) {
      const failed = outcomes.filter((outcome) => outcome.status === 'rejected').length;
      const summary =
        `${failed} of ${slots.length} slots failed, first slot ${firstFailure.slot}: ` +
        `${firstFailure.code}: ${firstFailure.message}`;
      if (again.length === 0) throw new UnrecoverableError(summary);
      throw new SlotfleetError(firstFailure.code, summary);
    }
    return { keysMoved, slots: slots.length };
  };
}
