/**
 * One BullMQ flow per slot: a finalize-slot parent whose only child is the migrate-slot job. BullMQ
 * moves the parent to the queue when the child completed, so a slot is finalized exactly after it
 * drained, by whichever worker is free; failParentOnFailure marks the parent failed with the child.
 */
import type { FlowJob, FlowProducer, JobsOptions } from 'bullmq';
import type { SlotMove } from '../shared/domain/plan.js';
import { finalizeJobId, migrateJobId, QueueName, type SlotJobData } from '../shared/queue/names.js';

export interface EnqueueOptions {
  readonly attempts: number;
  readonly backoffMs: number;
}

/** Flows per addBulk call: bounds the size of one MULTI in the control Redis. */
const FLOWS_PER_CALL = 2_000;
const DAY_SECONDS = 86_400;

export function slotFlows(
  migrationId: string,
  cluster: string,
  moves: readonly SlotMove[],
  options: EnqueueOptions,
): FlowJob[] {
  const common: JobsOptions = {
    attempts: options.attempts,
    backoff: { type: 'exponential', delay: options.backoffMs },
    removeOnComplete: { age: DAY_SECONDS },
    removeOnFail: { age: 7 * DAY_SECONDS },
  };
  return moves.map((move) => {
    const data: SlotJobData = {
      migrationId,
      cluster,
      slot: move.slot,
      source: move.source,
      target: move.target,
      ...(move.repair ? { repair: move.repair } : {}),
    };
    return {
      name: 'finalize',
      queueName: QueueName.FinalizeSlot,
      data,
      opts: { ...common, jobId: finalizeJobId(migrationId, move.slot) },
      children: [
        {
          name: 'migrate',
          queueName: QueueName.MigrateSlot,
          data,
          opts: { ...common, jobId: migrateJobId(migrationId, move.slot), failParentOnFailure: true },
        },
      ],
    };
  });
}

export async function enqueueSlotMoves(
  flowProducer: FlowProducer,
  migrationId: string,
  cluster: string,
  moves: readonly SlotMove[],
  options: EnqueueOptions,
): Promise<void> {
  const flows = slotFlows(migrationId, cluster, moves, options);
  for (let start = 0; start < flows.length; start += FLOWS_PER_CALL) {
    await flowProducer.addBulk(flows.slice(start, start + FLOWS_PER_CALL));
  }
}
