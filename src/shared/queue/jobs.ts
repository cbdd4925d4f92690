/**
 * The two slot jobs as BullMQ adds them. The API adds every migrate-slot job; a migrate job that
 * drained its slot has its worker add a finalize-slot job for it and the slots drained with it, with a
 * deterministic id, so a re-run of the same batch adds nothing new. (A BullMQ flow per slot did the same with a parent job, but cost twice the
 * control-Redis work: 3.6 s to enqueue 16384 slots against 1.7 s.)
 */
import type { JobsOptions } from 'bullmq';
import type { MigrationEngine } from '../domain/migration.js';
import type { SlotMove } from '../domain/plan.js';
import { type FinalizeJobData, finalizeJobId, migrateJobId, type SlotJobData } from './names.js';

export interface SlotJobPolicy {
  readonly attempts: number;
  readonly backoffMs: number;
}

const DAY_SECONDS = 86_400;

/** Kept a day when done (job ids dedupe meanwhile), a week when failed (for the operator). */
function commonOptions(policy: SlotJobPolicy): JobsOptions {
  return {
    attempts: policy.attempts,
    backoff: { type: 'exponential', delay: policy.backoffMs },
    removeOnComplete: { age: DAY_SECONDS },
    removeOnFail: { age: 7 * DAY_SECONDS },
  };
}

export function slotJobData(
  migrationId: string,
  cluster: string,
  move: SlotMove,
  options: { readonly replace?: boolean; readonly engine?: MigrationEngine } = {},
): SlotJobData {
  return {
    migrationId,
    cluster,
    slot: move.slot,
    source: move.source,
    target: move.target,
    ...(move.repair ? { repair: move.repair } : {}),
    ...(options.replace ? { replace: true } : {}),
    ...(options.engine ? { engine: options.engine } : {}),
  };
}

export function migrateJob(data: SlotJobData, policy: SlotJobPolicy) {
  return {
    name: 'migrate',
    data,
    opts: { ...commonOptions(policy), jobId: migrateJobId(data.migrationId, data.slot) },
  };
}

export function finalizeJob(data: FinalizeJobData, policy: SlotJobPolicy) {
  return {
    name: 'finalize',
    data,
    opts: {
      ...commonOptions(policy),
      jobId: finalizeJobId(data.migrationId, data.slots),
    },
  };
}
