/**
 * BullMQ processors of the two slot jobs. migrate-slot: IMPORTING, MIGRATING, drain. finalize-slot
 * (the flow parent, run once its migrate child completed): SETSLOT NODE everywhere and the check.
 * Both only call driveSlot: all the protocol is there, all the bookkeeping is here.
 */
import { type Job, UnrecoverableError } from 'bullmq';
import type { ClusterAdapter } from '../shared/cluster/adapter.js';
import { SlotPhase, SlotStep } from '../shared/domain/slot-migration.js';
import { ErrorCode, errorCodeOf, isRetryable, SlotfleetError } from '../shared/errors.js';
import type { Logger } from '../shared/logger.js';
import type { Metrics } from '../shared/metrics.js';
import type { MigrationStore } from '../shared/queue/migration-store.js';
import type { SlotJobData } from '../shared/queue/names.js';
import { driveSlot, type SlotEngineDeps, type SlotEngineSettings } from './slot-engine.js';

export interface ProcessorDeps {
  readonly adapterFor: (cluster: string) => ClusterAdapter;
  readonly store: MigrationStore;
  readonly metrics: Metrics;
  readonly settings: SlotEngineSettings;
  readonly log: Logger;
  readonly beforeAction?: SlotEngineDeps['beforeAction'];
}

export function createSlotProcessor(phase: SlotPhase, deps: ProcessorDeps) {
  return async (job: Job<SlotJobData>): Promise<{ keysMoved: number }> => {
    const data = job.data;
    const source = `${data.source.host}:${data.source.port}`;
    const log = deps.log.child({
      migrationId: data.migrationId,
      slot: data.slot,
      source,
      target: `${data.target.host}:${data.target.port}`,
      phase,
      attempt: job.attemptsMade + 1,
    });
    const histogram = phase === SlotPhase.Migrate ? deps.metrics.slotDuration : deps.metrics.finalizeDuration;
    const stopTimer = histogram.startTimer({ cluster: data.cluster });
    const inFlight = { cluster: data.cluster, source };
    deps.metrics.slotsInFlight.inc(inFlight);
    try {
      let adapter: ClusterAdapter;
      try {
        adapter = deps.adapterFor(data.cluster);
      } catch (error) {
        throw new SlotfleetError(ErrorCode.UnknownCluster, (error as Error).message);
      }
      const result = await driveSlot(data, phase, { ...deps, adapter, log });
      if (phase === SlotPhase.Finalize) {
        await deps.store.clearSlotError(data.migrationId, data.slot);
        deps.metrics.slotsFinished.inc({ cluster: data.cluster, result: 'done' });
        log.info({ keysMoved: result.keysMoved }, 'slot done');
      } else {
        log.info({ keysMoved: result.keysMoved }, 'slot drained');
      }
      return { keysMoved: result.keysMoved };
    } catch (error) {
      const code = errorCodeOf(error);
      const message = error instanceof Error ? error.message : String(error);
      deps.metrics.migrateErrors.inc({ cluster: data.cluster, code });
      const retryable = isRetryable(error);
      const lastAttempt = job.attemptsMade + 1 >= (job.opts.attempts ?? 1);
      await deps.store.recordSlotError(data.migrationId, data.slot, { code, message });
      if (!retryable || lastAttempt) {
        await deps.store.setSlotStep(data.migrationId, data.slot, SlotStep.Failed);
        deps.metrics.slotsFinished.inc({ cluster: data.cluster, result: 'failed' });
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
      stopTimer();
      deps.metrics.slotsInFlight.dec(inFlight);
    }
  };
}
