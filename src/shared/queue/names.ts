/** Queue names, job payloads and job ids: the contract between the producer and the workers. */
import type { NodeRef, SlotRepair } from '../domain/plan.js';

export const QueueName = { MigrateSlot: 'migrate-slot', FinalizeSlot: 'finalize-slot' } as const;
export type QueueName = (typeof QueueName)[keyof typeof QueueName];

/** The payload of both slot jobs. Names the cluster, never its credentials. */
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
}

/** Job ids dedupe for free: enqueueing the same slot of the same migration twice adds nothing. */
export function migrateJobId(migrationId: string, slot: number): string {
  return `${migrationId}-slot-${slot}`;
}

export function finalizeJobId(migrationId: string, slot: number): string {
  return `${migrationId}-final-${slot}`;
}

/** "mig-<time base36>-<random hex>": sortable by creation, never all digits, never a colon. */
export function newMigrationId(now = Date.now(), random = Math.random): string {
  const suffix = Math.floor(random() * 0xffffffff)
    .toString(16)
    .padStart(8, '0');
  return `mig-${now.toString(36)}-${suffix}`;
}
