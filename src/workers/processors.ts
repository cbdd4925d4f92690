/**
 * BullMQ processors of the two slot jobs. migrate-slot: IMPORTING, MIGRATING, drain, then it adds
 * the slot's finalize-slot job (deterministic id: a re-run adds nothing). finalize-slot: SETSLOT
 * NODE everywhere and the check.
 * The protocol lives in driveSlot; here is the bookkeeping, and what the operator asked for:
 *   pause  - a job that starts, or reaches the end of a batch, is postponed (moved to delayed) and
 *            looks again later; the slot stays open but safe.
 *   cancel - a slot not yet MIGRATING is dropped (the target's IMPORTING undone); one already
 *            MIGRATING is finished, so no slot is ever left with its keys split.
 */
import { DelayedError, type Job, UnrecoverableError } from 'bullmq';
import type { ClusterAdapter } from '../shared/cluster/adapter.js';
import { MigrationControl } from '../shared/domain/migration.js';
import { FixKind } from '../shared/domain/planners/index.js';
import { CancelDecision, cancelDecision, SlotPhase, SlotStep } from '../shared/domain/slot-migration.js';
import { ErrorCode, errorCodeOf, isRetryable, SlotfleetError } from '../shared/errors.js';
import type { Logger } from '../shared/logger.js';
import { type Metrics, SlotResult } from '../shared/metrics.js';
import type { MigrationStore } from '../shared/queue/migration-store.js';
import type { SlotJobData } from '../shared/queue/names.js';
import { BUSY_RECHECK_MS, type NodeLease, type NodeLeases } from '../shared/queue/node-leases.js';
import { runRepair } from './repair.js';
import { driveSlot, PauseRequested, type SlotEngineDeps, type SlotEngineSettings } from './slot-engine.js';

export interface ProcessorDeps {
  readonly adapterFor: (cluster: string) => ClusterAdapter;
  readonly store: MigrationStore;
  readonly metrics: Metrics;
  readonly settings: SlotEngineSettings;
  readonly log: Logger;
  /** The operator's current wish for a migration (cached briefly by the worker). */
  readonly controlOf: (migrationId: string) => Promise<MigrationControl>;
  /** Adds the slot's finalize-slot job once its migrate job drained it. */
  readonly enqueueFinalize: (data: SlotJobData) => Promise<void>;
  readonly beforeAction?: SlotEngineDeps['beforeAction'];
  /** Passed on to the engine as they are (per-migration limits, the fleet-wide throttle). */
  readonly limitsOf?: SlotEngineDeps['limitsOf'];
  readonly throttle?: SlotEngineDeps['throttle'];
  /** Caps slots in flight per source and target node across the fleet; none: no cap. */
  readonly nodeLeases?: NodeLeases;
}

/** How long a paused slot job waits before it looks at the migration again. */
export const PAUSE_RECHECK_MS = 1_000;

export function createSlotProcessor(phase: SlotPhase, deps: ProcessorDeps) {
  return async (
    job: Job<SlotJobData>,
    token?: string,
  ): Promise<{ keysMoved: number; cancelled?: boolean }> => {
    const data = job.data;
    const source = `${data.source.host}:${data.source.port}`;
    const log = deps.log.child({
      migrationId: data.migrationId,
      slot: data.slot,
      source,
      target: `${data.target.host}:${data.target.port}`,
      phase,
      attempt: job.attemptsMade + 1,
      ...(data.repair ? { repair: data.repair.kind } : {}),
    });
    const histogram = phase === SlotPhase.Migrate ? deps.metrics.slotDuration : deps.metrics.finalizeDuration;
    const stopTimer = histogram.startTimer({ cluster: data.cluster });
    const inFlight = { cluster: data.cluster, source };
    deps.metrics.slotsInFlight.inc(inFlight);
    // An attempt postponed by a pause (or by busy nodes) ends when the operator says, not when the
    // work is done: it is not timed, or the histogram would fill with short, meaningless durations.
    let postponed = false;
    const postpone = async (nodesBusy = false) => {
      postponed = true;
      const recheckMs = nodesBusy ? BUSY_RECHECK_MS : PAUSE_RECHECK_MS;
      // Busy nodes are routine under the caps: acquire() says so at debug level.
      if (!nodesBusy) log.info({ recheckMs }, 'migration paused: slot job postponed');
      await job.moveToDelayed(Date.now() + recheckMs, token);
      throw new DelayedError();
    };
    // Held while the migrate job drains: MIGRATE blocks the source (see node-leases.ts).
    let lease: NodeLease | undefined;
    try {
      let adapter: ClusterAdapter;
      try {
        adapter = deps.adapterFor(data.cluster);
      } catch (error) {
        throw new SlotfleetError(ErrorCode.UnknownCluster, (error as Error).message);
      }
      const engine: SlotEngineDeps = {
        ...deps,
        adapter,
        log,
        isPaused: async () => (await deps.controlOf(data.migrationId)) === MigrationControl.Pause,
      };
      const control = await deps.controlOf(data.migrationId);
      if (control === MigrationControl.Pause) return await postpone();
      if (control === MigrationControl.Cancel) {
        const observation = await adapter.observeSlot(data.slot, data.source, data.target, {
          includeOthers: false,
        });
        const decision = cancelDecision(observation);
        if (decision !== CancelDecision.Finish) {
          if (decision === CancelDecision.UndoImport) await adapter.setSlotStable(data.target, data.slot);
          // The finalizer of a slot its migrate job cancelled comes here too: count the slot once.
          if (await deps.store.setSlotStep(data.migrationId, data.cluster, data.slot, SlotStep.Cancelled)) {
            deps.metrics.slotsFinished.inc({ cluster: data.cluster, result: SlotResult.Cancelled });
          }
          log.info({ decision }, 'slot cancelled: no key had moved');
          return { keysMoved: 0, cancelled: true };
        }
        log.info('migration cancelled, but this slot is already MIGRATING: finishing it');
      }
      if (phase === SlotPhase.Migrate && deps.nodeLeases) {
        lease = await deps.nodeLeases.acquire({ ...data, holder: `${job.id}@${token}` }, log);
        if (!lease) return await postpone(true);
      }
      const repairKind = data.repair?.kind;
      let keysMoved = 0;
      if (repairKind !== undefined && repairKind !== FixKind.FinishMigration) {
        if (phase === SlotPhase.Migrate) keysMoved = (await runRepair(data, engine)).keysMoved;
        else await deps.store.setSlotStep(data.migrationId, data.cluster, data.slot, SlotStep.Done);
      } else {
        keysMoved = (await driveSlot(data, phase, engine)).keysMoved;
        if (phase === SlotPhase.Finalize && data.repair) {
          await Promise.all(data.repair.closeOn.map((node) => adapter.setSlotStable(node, data.slot)));
        }
      }
      if (phase === SlotPhase.Finalize) {
        await deps.store.clearSlotError(data.migrationId, data.slot);
        deps.metrics.slotsFinished.inc({ cluster: data.cluster, result: SlotResult.Done });
        log.info({ keysMoved }, 'slot done');
      } else {
        // Drained: the nodes are free for the next slot while the finalizer is added.
        void lease?.release();
        // Added before this job completes: a crash in between re-runs the (drained) migrate job,
        // which adds it then.
        await deps.enqueueFinalize(data);
        log.info({ keysMoved }, 'slot drained');
      }
      return { keysMoved };
    } catch (error) {
      if (error instanceof DelayedError) throw error;
      if (error instanceof PauseRequested) return await postpone();
      const code = errorCodeOf(error);
      const message = error instanceof Error ? error.message : String(error);
      deps.metrics.migrateErrors.inc({ cluster: data.cluster, code });
      const retryable = isRetryable(error);
      const lastAttempt = job.attemptsMade + 1 >= (job.opts.attempts ?? 1);
      await deps.store.recordSlotError(data.migrationId, data.slot, { code, message });
      if (!retryable || lastAttempt) {
        await deps.store.setSlotStep(data.migrationId, data.cluster, data.slot, SlotStep.Failed);
        deps.metrics.slotsFinished.inc({ cluster: data.cluster, result: SlotResult.Failed });
        log.error(
          { code, err: message },
          'slot failed: left open and safe, clients follow ASK; re-run or fix',
        );
        if (!retryable) throw new UnrecoverableError(`${code}: ${message}`);
      } else {
        log.warn({ code, err: message }, 'slot attempt failed, will retry');
      }
      throw error;
    } finally {
      await lease?.release();
      if (!postponed) stopTimer();
      deps.metrics.slotsInFlight.dec(inFlight);
    }
  };
}
