/** Queue names, job payloads and job ids: the contract between the producer and the workers. */
import { createHash } from 'node:crypto';
import type { MigrationEngine } from '../domain/migration.js';
import type { NodeRef, SlotRepair } from '../domain/plan.js';

export const QueueName = { MigrateSlot: 'migrate-slot', FinalizeSlot: 'finalize-slot' } as const;
export type QueueName = (typeof QueueName)[keyof typeof QueueName];

/** The payload of a migrate-slot job, and of each slot of a finalize-slot job. Names the cluster, never its credentials. */
export interface SlotJobData {
  readonly migrationId: string;
  readonly cluster: string;
  readonly slot: number;
  readonly source: NodeRef;
  readonly target: NodeRef;
  /** Only on fix jobs. */
  readonly repair?: SlotRepair;
  /**
   * The migration was posted with replace: true: a key the target already holds with another value
   * is overwritten (MIGRATE REPLACE) instead of failing the slot. Absent: false.
   */
  readonly replace?: boolean;
  /** How the slot moves (its migration's engine). Absent: keys, as for jobs added before engines. */
  readonly engine?: MigrationEngine;
  /**
   * How many times the stranded-slot sweep put this completed job back in the queue (absent: never).
   * Its finalize job then takes an id of its own (finalizeJobId): the one it had may have ended.
   */
  readonly rerun?: number;
}

/** Job ids dedupe for free: enqueueing the same slot of the same migration twice adds nothing. */
export function migrateJobId(migrationId: string, slot: number): string {
  return `${migrationId}-slot-${slot}`;
}

/**
 * The payload of a finalize-slot job: slots of one migration that drained within a few milliseconds
 * of each other, assigned together.
 */
export interface FinalizeJobData {
  readonly migrationId: string;
  readonly cluster: string;
  readonly slots: readonly SlotJobData[];
}

/**
 * Names the batch by its slots: adding the same batch again (a re-run) adds nothing, and two
 * different batches never share an id, even when they start with the same slot.
 */
export function finalizeJobId(
  migrationId: string,
  slots: readonly Pick<SlotJobData, 'slot' | 'rerun'>[],
): string {
  // A slot run again by the stranded-slot sweep counts its reruns in: the same slots' earlier job may
  // have completed (the control Redis lost the slot's end, not the job's), and adding a job under an
  // ended job's id adds nothing, so the slot would wait for good.
  const named = slots.map(({ slot, rerun }) => (rerun ? `${slot}.${rerun}` : String(slot)));
  const digest = createHash('sha1').update(named.join(',')).digest('hex').slice(0, 12);
  return `${migrationId}-final-${slots[0]?.slot}-${slots.length}-${digest}`;
}

/** "mig-<time base36>-<random hex>": sortable by creation, never all digits, never a colon. */
export function newMigrationId(now = Date.now(), random = Math.random): string {
  const suffix = Math.floor(random() * 0xffffffff)
    .toString(16)
    .padStart(8, '0');
  return `mig-${now.toString(36)}-${suffix}`;
}
