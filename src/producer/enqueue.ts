/** Adds one migrate-slot job per slot; drained slots get their finalizer in batches (see queue/jobs.ts). */
import type { Queue } from 'bullmq';
import { interleaveByPair, type SlotMove } from '../shared/domain/plan.js';
import { migrateJob, type SlotJobPolicy, slotJobData } from '../shared/queue/jobs.js';

/** Jobs per addBulk call: bounds the size of one MULTI in the control Redis. */
const JOBS_PER_CALL = 2_000;

export async function enqueueSlotMoves(
  migrateQueue: Queue,
  migrationId: string,
  cluster: string,
  moves: readonly SlotMove[],
  policy: SlotJobPolicy,
  options: Parameters<typeof slotJobData>[3] = {},
): Promise<void> {
  // Round-robin over source -> target pairs: with per-node caps, every pair has jobs near the head.
  const jobs = interleaveByPair(moves).map((move) =>
    migrateJob(slotJobData(migrationId, cluster, move, options), policy),
  );
  for (let start = 0; start < jobs.length; start += JOBS_PER_CALL) {
    await migrateQueue.addBulk(jobs.slice(start, start + JOBS_PER_CALL));
  }
}
