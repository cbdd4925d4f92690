/**
 * How many keys a migration still has to move: COUNTKEYSINSLOT on the source of every slot that has
 * not ended. Read by GET /v1/migrations/:id and by the API's /metrics (slotfleet_keys_remaining).
 */
import type { ClusterAdapter } from '../shared/cluster/adapter.js';
import { ENDED_STEPS } from '../shared/domain/migration.js';
import { parseSlotRanges } from '../shared/domain/slots.js';
import type { MigrationRecord, MigrationStore } from '../shared/queue/migration-store.js';

export interface RemainingKeysDeps {
  readonly store: MigrationStore;
  /** The adapter of a configured cluster, or undefined when no cluster has that name. */
  readonly adapterFor: (cluster: string) => ClusterAdapter | undefined;
}

/** Keys left on the sources of the record's open slots; null if the cluster does not answer. */
export async function remainingKeys(
  deps: RemainingKeysDeps,
  record: MigrationRecord,
): Promise<number | null> {
  const ended = ENDED_STEPS.reduce((sum, step) => sum + record.slots[step], 0);
  if (ended === record.slotsTotal) return 0;
  const adapter = deps.adapterFor(record.cluster);
  if (!adapter) return null;
  try {
    const steps = await deps.store.slotSteps(record.id);
    let total = 0;
    for (const group of record.plan) {
      const open = parseSlotRanges(group.slots).filter(
        (slot) => !ENDED_STEPS.includes(steps.get(slot) as never),
      );
      if (open.length === 0) continue;
      const [host, port] = splitAddress(group.source);
      const counts = await adapter.countKeysInSlots({ host, port }, open);
      total += counts.reduce((sum, count) => sum + count, 0);
    }
    return total;
  } catch {
    return null;
  }
}

function splitAddress(address: string): [string, number] {
  const colon = address.lastIndexOf(':');
  return [address.slice(0, colon), Number(address.slice(colon + 1))];
}

/**
 * Keys per second since the first slot started (until the last update once ended) and the ETA from
 * the keys remaining; shared by GET /v1/migrations/:id and the status page.
 */
export function migrationRate(
  record: MigrationRecord,
  keysRemaining: number | null,
  nowMs = Date.now(),
): { keysPerSecond: number; etaSeconds: number | null } {
  const startedMs = record.startedAt ? Date.parse(record.startedAt) : null;
  const ended = ['done', 'failed', 'cancelled'].includes(record.state);
  const untilMs = ended ? Date.parse(record.updatedAt) : nowMs;
  const elapsedSeconds = startedMs === null ? 0 : Math.max((untilMs - startedMs) / 1000, 0.001);
  const keysPerSecond = startedMs === null ? 0 : record.keysMoved / elapsedSeconds;
  const etaSeconds = ended
    ? 0
    : keysRemaining !== null && keysPerSecond > 0
      ? keysRemaining / keysPerSecond
      : null;
  return { keysPerSecond, etaSeconds };
}
