/**
 * How many keys a migration still has to move: COUNTKEYSINSLOT on the source of every slot that has
 * not ended. Read by GET /v1/migrations/:id and by the API's /metrics (slotfleet_keys_remaining).
 */
import type { ClusterAdapter } from '../shared/cluster/adapter.js';
import { ENDED_STEPS, migrationHasEnded, slotHasEnded } from '../shared/domain/migration.js';
import { SlotStep } from '../shared/domain/slot-migration.js';
import { parseSlotRanges } from '../shared/domain/slots.js';
import type { MigrationRecord, MigrationStore } from '../shared/queue/migration-store.js';

export interface RemainingKeysDeps {
  readonly store: MigrationStore;
  /** The adapter of a configured cluster, or undefined when no cluster has that name. */
  readonly adapterFor: (cluster: string) => ClusterAdapter | undefined;
}

/**
 * How long a count is reused. Pollers (the CLI's --wait, the status page, dashboards) ask several
 * times a second, and counting costs a COUNTKEYSINSLOT per open slot on the very nodes that migrate.
 */
export const REMAINING_KEYS_CACHE_MS = 1_000;
/**
 * How long the count of a slot no job has started is reused. Only clients change those (slowly, for
 * a progress figure), while a big migration has thousands: a 4096-slot rebalance polled every 200 ms
 * cost the API about 1 CPU-s of the 10 s it ran. Slots in progress are counted afresh every time.
 */
export const PENDING_SLOT_COUNT_MS = 30_000;
const cachedCounts = new Map<string, { atMs: number; count: Promise<number | null> }>();
const pendingSlotCounts = new Map<string, Map<number, { atMs: number; keys: number }>>();
/** When each migration's pending counts were last used: a migration nobody asks about is forgotten. */
const pendingCountsUsedMs = new Map<string, number>();

/** Keys left on the sources of the record's open slots; null if the cluster does not answer. */
export async function remainingKeys(
  deps: RemainingKeysDeps,
  record: MigrationRecord,
  nowMs = Date.now(),
): Promise<number | null> {
  const ended = ENDED_STEPS.reduce((sum, step) => sum + record.slots[step], 0);
  if (ended === record.slotsTotal) {
    pendingSlotCounts.delete(record.id);
    pendingCountsUsedMs.delete(record.id);
    return 0;
  }
  for (const [id, entry] of cachedCounts) {
    if (nowMs - entry.atMs >= REMAINING_KEYS_CACHE_MS) cachedCounts.delete(id);
  }
  for (const [id, usedMs] of pendingCountsUsedMs) {
    if (nowMs - usedMs < PENDING_SLOT_COUNT_MS) continue;
    pendingCountsUsedMs.delete(id);
    pendingSlotCounts.delete(id);
  }
  const cached = cachedCounts.get(record.id);
  if (cached) return cached.count;
  const count = countRemainingKeys(deps, record, nowMs);
  cachedCounts.set(record.id, { atMs: nowMs, count });
  return count;
}

async function countRemainingKeys(
  deps: RemainingKeysDeps,
  record: MigrationRecord,
  nowMs: number,
): Promise<number | null> {
  const adapter = deps.adapterFor(record.cluster);
  if (!adapter) return null;
  const pendingCounts = pendingSlotCounts.get(record.id) ?? new Map<number, { atMs: number; keys: number }>();
  pendingSlotCounts.set(record.id, pendingCounts);
  pendingCountsUsedMs.set(record.id, nowMs);
  try {
    const steps = await deps.store.slotSteps(record.id);
    let total = 0;
    for (const group of record.plan) {
      const toCount: number[] = [];
      for (const slot of parseSlotRanges(group.slots)) {
        const step = steps.get(slot);
        if (slotHasEnded(step)) {
          pendingCounts.delete(slot);
          continue;
        }
        const known = pendingCounts.get(slot);
        const pending = step === undefined || step === SlotStep.Pending;
        if (pending && known && nowMs - known.atMs < PENDING_SLOT_COUNT_MS) total += known.keys;
        else {
          if (!pending) pendingCounts.delete(slot);
          toCount.push(slot);
        }
      }
      if (toCount.length === 0) continue;
      const [host, port] = splitAddress(group.source);
      const counts = await adapter.countKeysInSlots({ host, port }, toCount);
      for (const [index, slot] of toCount.entries()) {
        const keys = counts[index]!;
        total += keys;
        const step = steps.get(slot);
        if (step === undefined || step === SlotStep.Pending) pendingCounts.set(slot, { atMs: nowMs, keys });
      }
    }
    return total;
  } catch {
    return null;
  }
}

/** "host:port" (the plan's form; the host may be IPv6, so split on the last colon). */
export function splitAddress(address: string): [string, number] {
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
  const ended = migrationHasEnded(record.state);
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
