/**
 * Stranded slots: not ended, their migrate job completed, and no finalize job waiting or running
 * holds them. The fleet does not make them: a migrate job completes only once a finalize job holding
 * its slot exists, and a finalize job ends its slots (done or failed) before it completes. Writes the
 * control Redis loses do: a restart from an AOF short of its last second, or a Sentinel failover. A job
 * that runs across the loss keeps its lock (taken before it) and completes afterwards, while its
 * finalize job and its steps went with the lost writes. Nothing would run the slot again, and its
 * migration would never end. (So can a block opener's "handed on" stamp sent across the restart: it
 * arrives, the finalize job added just before it does not. The job run again does not trust the
 * stamp, see keys-mover.ts.)
 *
 * So one worker of the fleet at a time (a lock in the control Redis) looks every SWEEP_MS. The
 * active-slots hash of each cluster names every slot that a migration has not ended; those whose
 * migrate job is in the completed set, in no live finalize job, and not ended in the record, twice
 * CONFIRM_MS apart, have their migrate job put back in the queue (BullMQ's retry of a completed job,
 * which checks that it still is). The job re-derives the slot's position from the cluster, as after
 * any crash.
 *
 * A slot whose migrate job failed is found the same way. That job failed outside the slot's own
 * handling, which records the failure before the job fails: BullMQ failed it after too many stalls
 * (a worker died on it each time), or the record of its failure was lost. Running it again could kill
 * workers again, so the record takes the job's reason (JOB_FAILED): the slot ends failed, open but
 * safe, and the migration can end for the operator to re-run or fix.
 *
 * The reads go in that order so that a slot moving on normally is never taken for stranded: its
 * migrate job completed after its finalize job was added, and that job ends the slot's step before it
 * completes. A completed migrate job, then no live finalize job, then a step not ended: something
 * was lost.
 */
import { randomUUID } from 'node:crypto';
import { Job, type Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { slotHasEnded } from '../shared/domain/migration.js';
import { SlotStep } from '../shared/domain/slot-migration.js';
import { formatSlotRanges } from '../shared/domain/slots.js';
import { ErrorCode } from '../shared/errors.js';
import type { Logger } from '../shared/logger.js';
import { type Metrics, SlotResult } from '../shared/metrics.js';
import type { MigrationStore } from '../shared/queue/migration-store.js';
import { type FinalizeJobData, migrateJobId, type SlotJobData } from '../shared/queue/names.js';
import { moverFor } from './movers/slot-mover.js';

/** How often the fleet looks: lost writes are rare, and a stranded slot waits this long at most. */
export const SWEEP_MS = 30_000;
/** A slot is stranded only if it still is this much later: whatever was on its way has arrived. */
export const CONFIRM_MS = 5_000;
/** Job ids per ZMSCORE. */
const IDS_PER_CALL = 1_000;

/** Where a stranded slot's migrate job ended. */
export type EndedJob = 'completed' | 'failed';

export interface StrandedSlots {
  readonly migrationId: string;
  readonly cluster: string;
  readonly job: EndedJob;
  readonly slots: readonly number[];
}

export interface StrandedSlotDeps {
  readonly control: Redis;
  readonly store: Pick<MigrationStore, 'activeSlots' | 'slotSteps' | 'recordSlotError' | 'setSlotStep'>;
  readonly migrateQueue: Queue<SlotJobData>;
  readonly finalizeQueue: Queue<FinalizeJobData>;
  readonly clusters: readonly string[];
  /** The key that lets one worker of the fleet sweep per period. */
  readonly lockKey: string;
  readonly log: Logger;
  readonly metrics: Pick<Metrics, 'slotsStranded' | 'slotsFinished'>;
}

/** One look at every cluster's slots not ended: the stranded ones, by migration. */
export async function findStrandedSlots(deps: StrandedSlotDeps): Promise<StrandedSlots[]> {
  const completed: StrandedSlots[] = [];
  for (const cluster of deps.clusters) {
    const bySlot = await deps.store.activeSlots(cluster);
    const byMigration = new Map<string, number[]>();
    for (const [slot, migrationId] of bySlot) {
      const slots = byMigration.get(migrationId) ?? [];
      slots.push(slot);
      byMigration.set(migrationId, slots);
    }
    for (const [migrationId, slots] of byMigration) {
      for (const job of ['completed', 'failed'] as const) {
        const ended = await endedJobs(deps, job, migrationId, slots);
        if (ended.length > 0) completed.push({ migrationId, cluster, job, slots: ended });
      }
    }
  }
  if (completed.length === 0) return [];

  const live = new Set<string>();
  const finalizers = await deps.finalizeQueue.getJobs(['active', 'waiting', 'delayed', 'prioritized']);
  for (const job of finalizers) {
    for (const slot of job.data?.slots ?? []) live.add(`${job.data.migrationId}:${slot.slot}`);
  }
  const stranded: StrandedSlots[] = [];
  for (const entry of completed) {
    const steps = await deps.store.slotSteps(entry.migrationId);
    const slots = entry.slots.filter(
      (slot) => !live.has(`${entry.migrationId}:${slot}`) && !slotHasEnded(steps.get(slot)),
    );
    if (slots.length > 0) stranded.push({ ...entry, slots });
  }
  return stranded;
}

/** The slots whose migrate job is in the completed (or failed) set. */
async function endedJobs(
  deps: StrandedSlotDeps,
  job: EndedJob,
  migrationId: string,
  slots: readonly number[],
): Promise<number[]> {
  const done: number[] = [];
  for (let start = 0; start < slots.length; start += IDS_PER_CALL) {
    const chunk = slots.slice(start, start + IDS_PER_CALL);
    const scores = await deps.control.zmscore(
      deps.migrateQueue.keys[job]!,
      ...chunk.map((slot) => migrateJobId(migrationId, slot)),
    );
    chunk.forEach((slot, index) => {
      if (scores[index] !== null) done.push(slot);
    });
  }
  return done;
}

/**
 * One sweep, if this worker holds the fleet's lock for the period: finds stranded slots, looks again
 * confirmMs later, puts the completed migrate jobs of those found both times back in the queue and
 * records the failed ones' reason.
 * @returns the slots acted on.
 */
export async function sweepStrandedSlots(
  deps: StrandedSlotDeps,
  periodMs = SWEEP_MS,
  confirmMs = CONFIRM_MS,
): Promise<StrandedSlots[]> {
  const locked = await deps.control.set(deps.lockKey, randomUUID(), 'PX', periodMs, 'NX');
  if (locked === null) return [];
  const first = await findStrandedSlots(deps);
  if (first.length === 0) return [];
  await new Promise((resolve) => setTimeout(resolve, confirmMs));
  const again = new Set(
    (await findStrandedSlots(deps)).flatMap((entry) =>
      entry.slots.map((slot) => `${entry.job}:${entry.migrationId}:${slot}`),
    ),
  );
  const handled: StrandedSlots[] = [];
  for (const entry of first) {
    const slots: number[] = [];
    for (const slot of entry.slots) {
      if (!again.has(`${entry.job}:${entry.migrationId}:${slot}`)) continue;
      const job = await Job.fromId<SlotJobData>(deps.migrateQueue, migrateJobId(entry.migrationId, slot));
      if (!job) continue;
      if (entry.job === 'failed') {
        await recordJobFailure(deps, job, entry.cluster);
        slots.push(slot);
        continue;
      }
      // Counted in its data first, so that its finalize job does not take the id of one that ended.
      const counted = await job.updateData({ ...job.data, rerun: (job.data.rerun ?? 0) + 1 }).then(
        () => true,
        () => false,
      );
      if (!counted) continue;
      // Refused when the job left the completed set meanwhile: then something else runs it.
      const retried = await job.retry('completed').then(
        () => true,
        () => false,
      );
      if (retried) slots.push(slot);
    }
    if (slots.length === 0) continue;
    deps.metrics.slotsStranded.inc({ cluster: entry.cluster }, slots.length);
    const fields = { migrationId: entry.migrationId, cluster: entry.cluster, slots: formatSlotRanges(slots) };
    if (entry.job === 'failed') {
      deps.log.error(
        fields,
        "slots whose migrate job failed outside their own handling: recorded failed with the job's reason; re-run or fix",
      );
    } else {
      deps.log.warn(
        fields,
        'slots whose migrate job completed but which never ended (the control Redis lost writes): running their jobs again',
      );
    }
    handled.push({ ...entry, slots });
  }
  return handled;
}

/** The slot of a failed migrate job ends failed, with the job's reason (JOB_FAILED). */
async function recordJobFailure(
  deps: StrandedSlotDeps,
  job: Job<SlotJobData>,
  cluster: string,
): Promise<void> {
  const { migrationId, slot } = job.data;
  const message = `its migrate job failed outside the slot's own handling: ${job.failedReason || 'no reason given'}`;
  await deps.store.recordSlotError(migrationId, slot, { code: ErrorCode.JobFailed, message });
  if (await deps.store.setSlotStep(migrationId, cluster, slot, SlotStep.Failed)) {
    deps.metrics.slotsFinished.inc({ cluster, result: SlotResult.Failed, engine: moverFor(job.data).engine });
  }
}

/** How often the sweep looks, and how long it waits to confirm (WorkerOptions.strandedSweep). */
export interface SweepTiming {
  readonly periodMs: number;
  readonly confirmMs: number;
}

/** Sweeps every periodMs until stopped; an error (the control Redis away) waits for the next period. */
export function startStrandedSlotSweep(
  deps: StrandedSlotDeps,
  { periodMs, confirmMs }: SweepTiming = { periodMs: SWEEP_MS, confirmMs: CONFIRM_MS },
): { stop(): void } {
  let running = false;
  const timer = setInterval(() => {
    if (running) return;
    running = true;
    sweepStrandedSlots(deps, periodMs, confirmMs)
      .catch((error: Error) => deps.log.debug({ err: error.message }, 'looking for stranded slots'))
      .finally(() => {
        running = false;
      });
  }, periodMs);
  timer.unref();
  return { stop: () => clearInterval(timer) };
}
