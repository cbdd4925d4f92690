/**
 * Everything between "here are the moves" and "202 Accepted", shared by every route that starts a
 * migration: pre-flight, Idempotency-Key, slot claims (409 on overlap), the record, the jobs.
 * Either all of it happens or none of it stays behind.
 */
import { createHash } from 'node:crypto';
import type { ClusterAdapter } from '../shared/cluster/adapter.js';
import type { ClusterSnapshot, SlotMove } from '../shared/domain/plan.js';
import { formatSlotRanges } from '../shared/domain/slots.js';
import { ErrorCode, SlotfleetError } from '../shared/errors.js';
import { groupMoves, type PlanGroup } from '../shared/queue/migration-store.js';
import { newMigrationId } from '../shared/queue/names.js';
import type { AppDeps } from './app.js';
import { enqueueSlotMoves } from './enqueue.js';

export interface CreateMigrationInput {
  readonly cluster: string;
  /** The route that asked: migrations, rebalance, reshard, drain, fix. */
  readonly kind: string;
  readonly request: unknown;
  readonly moves: readonly SlotMove[];
  readonly idempotencyKey?: string | undefined;
}

export interface CreatedMigration {
  readonly id: string;
  readonly plan: PlanGroup[];
  readonly slots: number;
  /** An earlier request with the same Idempotency-Key and body created it. */
  readonly reused: boolean;
}

/**
 * Refuses to plan on a cluster that is not ok or whose masters disagree on the slot map: moves
 * computed from one node's stale view would move the wrong slots.
 */
export async function preflight(adapter: ClusterAdapter, snapshot: ClusterSnapshot): Promise<void> {
  const states = await adapter.clusterStates();
  const notOk = [...states].filter(([, state]) => state !== 'ok');
  if (notOk.length > 0) {
    throw new SlotfleetError(
      ErrorCode.ClusterNotReady,
      `cluster is not ok: ${notOk.map(([node, state]) => `${node} reports cluster_state:${state}`).join(', ')}`,
    );
  }
  const disagreeing = snapshot.disagreeingSlots ?? [];
  if (disagreeing.length > 0) {
    throw new SlotfleetError(
      ErrorCode.ClusterNotReady,
      `masters disagree on the owner of slots ${formatSlotRanges(disagreeing)}: wait for the cluster to settle, or run fix`,
      { details: { slots: formatSlotRanges(disagreeing) } },
    );
  }
}

export function requestHash(kind: string, cluster: string, body: unknown): string {
  return createHash('sha256')
    .update(JSON.stringify({ kind, cluster, body: canonical(body) }))
    .digest('hex');
}

export async function createMigration(deps: AppDeps, input: CreateMigrationInput): Promise<CreatedMigration> {
  const { store } = deps;
  const bodyHash = requestHash(input.kind, input.cluster, input.request);
  if (input.idempotencyKey !== undefined) {
    const earlier = await store.reserveIdempotencyKey(input.idempotencyKey, bodyHash);
    if (earlier) return reuse(deps, input.idempotencyKey, earlier, bodyHash);
  }
  const id = newMigrationId();
  const slots = input.moves.map((move) => move.slot);
  let claimed = false;
  try {
    const conflicts = await store.claimSlots(input.cluster, id, slots);
    if (conflicts.length > 0) {
      const holders = [...new Set(conflicts.map((conflict) => conflict.migrationId))];
      throw new SlotfleetError(
        ErrorCode.SlotConflict,
        `slots ${formatSlotRanges(conflicts.map((conflict) => conflict.slot))} belong to active migration ` +
          `${holders.join(', ')}: wait for it to end, or cancel it`,
        {
          details: {
            slots: formatSlotRanges(conflicts.map((conflict) => conflict.slot)),
            migrations: holders,
          },
        },
      );
    }
    claimed = true;
    await store.create({
      id,
      cluster: input.cluster,
      kind: input.kind,
      request: input.request,
      moves: input.moves,
    });
    await enqueueSlotMoves(deps.flowProducer, id, input.cluster, input.moves, deps.config.jobs);
    if (input.idempotencyKey !== undefined)
      await store.completeIdempotencyKey(input.idempotencyKey, bodyHash, id);
  } catch (error) {
    // Leave nothing behind that a retry would trip over. (A record whose jobs were only partly
    // added stays visible, with its slots pending, for the operator to cancel.)
    if (claimed) await store.releaseSlots(input.cluster, id, slots).catch(() => undefined);
    if (input.idempotencyKey !== undefined)
      await store.forgetIdempotencyKey(input.idempotencyKey).catch(() => undefined);
    throw error;
  }
  return { id, plan: groupMoves(input.moves), slots: input.moves.length, reused: false };
}

async function reuse(
  deps: AppDeps,
  key: string,
  earlier: { bodyHash: string; migrationId: string | null },
  bodyHash: string,
): Promise<CreatedMigration> {
  if (earlier.bodyHash !== bodyHash) {
    throw new SlotfleetError(
      ErrorCode.IdempotencyMismatch,
      `Idempotency-Key "${key}" was used with a different request: use a new key for a new request`,
    );
  }
  if (earlier.migrationId === null) {
    throw new SlotfleetError(
      ErrorCode.SlotConflict,
      `a request with Idempotency-Key "${key}" is still being processed: retry in a moment`,
    );
  }
  const record = await deps.store.get(earlier.migrationId);
  if (!record)
    throw new SlotfleetError(ErrorCode.NotFound, `migration ${earlier.migrationId} no longer exists`);
  return { id: record.id, plan: [...record.plan], slots: record.slotsTotal, reused: true };
}

/** JSON with sorted keys, so {"a":1,"b":2} and {"b":2,"a":1} hash alike. */
function canonical(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(canonical);
  if (value && typeof value === 'object') {
    return Object.fromEntries(
      Object.entries(value as Record<string, unknown>)
        .sort(([a], [b]) => a.localeCompare(b))
        .map(([key, inner]) => [key, canonical(inner)]),
    );
  }
  return value;
}
