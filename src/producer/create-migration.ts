/**
 * Everything between "here are the moves" and "202 Accepted", shared by every route that starts a
 * migration: pre-flight, Idempotency-Key, slot claims (409 on overlap), the record, the jobs.
 * Either all of it happens or none of it stays behind.
 */
import { createHash } from 'node:crypto';
import type { ClusterAdapter } from '../shared/cluster/adapter.js';
import { checkEngine } from '../shared/domain/engine-choice.js';
import type { EngineChoice, MigrationEngine, MigrationLimits } from '../shared/domain/migration.js';
import type { ClusterSnapshot, SlotMove } from '../shared/domain/plan.js';
import { ErrorCode, SlotfleetError } from '../shared/errors.js';
import { groupMoves, type PlanGroup } from '../shared/queue/migration-store.js';
import { newMigrationId } from '../shared/queue/names.js';
import { ConflictKind, conflictError } from './conflicts.js';
import type { AppDeps } from './deps.js';
import { engineOrRefuse, liveMasters, readMasterFacts } from './engine-check.js';
import { enqueueSlotMoves } from './enqueue.js';

/**
 * What starting a migration reads of the request body (see schemas.ts). The whole body is kept in the
 * record and hashed for the Idempotency-Key, so a route passes its body, not just these fields.
 */
export interface MigrationRequest {
  /** Overwrite keys the target holds with another value (MIGRATE REPLACE). @defaultValue false */
  readonly replace?: boolean;
  /** Limits from the request body; PATCH /v1/migrations/:id changes them later. */
  readonly limits?: MigrationLimits;
  /** How the slots move: auto (atomic where every master has it), keys or atomic. @defaultValue auto */
  readonly engine?: EngineChoice;
}

/** What planning a request yields: the moves, and the engine they run with (resolved and checked). */
export interface PlannedMigration {
  readonly moves: readonly SlotMove[];
  readonly engine: MigrationEngine;
}

export interface CreateMigrationInput {
  readonly cluster: string;
  /** The route that asked: migrations, rebalance, reshard, drain, fix. */
  readonly kind: string;
  readonly request: MigrationRequest;
  readonly moves: readonly SlotMove[];
  readonly engine: MigrationEngine;
  /** Limits from the request body; PATCH /v1/migrations/:id changes them later. */
  readonly limits?: MigrationLimits;
}

export interface CreatedMigration {
  readonly id: string;
  readonly engine: MigrationEngine;
  readonly plan: PlanGroup[];
  readonly slots: number;
  /** An earlier request with the same Idempotency-Key and body created it. */
  readonly reused: boolean;
}

/**
 * Refuses to plan on a cluster that is not ok or whose masters disagree on the slot map: moves
 * computed from one node's stale view would move the wrong slots. Then resolves the engine the moves
 * run with and refuses what the cluster rules out for it (engine-check.ts): every master is read
 * once, alongside the cluster states.
 */
export async function preflight(
  adapter: ClusterAdapter,
  snapshot: ClusterSnapshot,
  moves: readonly SlotMove[],
  choice: EngineChoice,
): Promise<MigrationEngine> {
  const [states, masters] = await Promise.allSettled([
    adapter.clusterStates(),
    readMasterFacts(adapter, liveMasters(snapshot.nodes)),
  ]);
  if (states.status === 'rejected') throw states.reason;
  const notOk = [...states.value].filter(([, state]) => state !== 'ok');
  if (notOk.length > 0) throw conflictError({ kind: ConflictKind.ClusterNotOk, states: notOk });
  // Only the slots this plan moves: other migrations may be changing other slots right now, and
  // gossip lags behind them.
  const moving = new Set(moves.map((move) => move.slot));
  const disagreeing = (snapshot.disagreeingSlots ?? []).filter((slot) => moving.has(slot));
  if (disagreeing.length > 0) throw conflictError({ kind: ConflictKind.MastersDisagree, slots: disagreeing });
  if (masters.status === 'rejected') throw masters.reason;
  const check = checkEngine({
    choice,
    repairsByHand: false,
    masters: masters.value,
    moves,
    openSlots: snapshot.openSlots,
  });
  return engineOrRefuse(check, { repairs: false });
}

/** 409 naming the active migrations that hold any of these slots. */
export async function assertSlotsFree(
  deps: AppDeps,
  cluster: string,
  slots: readonly number[],
): Promise<void> {
  const holders = await deps.store.holdersOf(cluster, slots);
  if (holders.size > 0) throw conflictError({ kind: ConflictKind.SlotsHeld, holders });
}

export function requestHash(kind: string, cluster: string, body: unknown): string {
  return createHash('sha256')
    .update(JSON.stringify({ kind, cluster, body: canonical(body) }))
    .digest('hex');
}

/**
 * Runs `plan` and creates the migration it returns, honouring an Idempotency-Key: a key seen
 * before with the same body returns that migration without looking at the cluster again (its plan
 * would differ by now); with another body, 422. The key is reserved before planning so that two
 * identical requests racing each other create one migration.
 */
export async function createIdempotently(
  deps: AppDeps,
  request: { cluster: string; kind: string; body: MigrationRequest; idempotencyKey: string | undefined },
  plan: () => Promise<PlannedMigration>,
): Promise<CreatedMigration> {
  const { idempotencyKey } = request;
  const bodyHash = requestHash(request.kind, request.cluster, request.body);
  if (idempotencyKey !== undefined) {
    const earlier = await deps.store.reserveIdempotencyKey(idempotencyKey, bodyHash);
    if (earlier) return reuse(deps, idempotencyKey, earlier, bodyHash);
  }
  try {
    const { moves, engine } = await plan();
    const { limits } = request.body;
    const created = await createMigration(deps, {
      cluster: request.cluster,
      kind: request.kind,
      request: request.body,
      moves,
      engine,
      ...(limits ? { limits } : {}),
    });
    if (idempotencyKey !== undefined)
      await deps.store.completeIdempotencyKey(idempotencyKey, bodyHash, created.id);
    return created;
  } catch (error) {
    if (idempotencyKey !== undefined)
      await deps.store.forgetIdempotencyKey(idempotencyKey).catch(() => undefined);
    throw error;
  }
}

export async function createMigration(deps: AppDeps, input: CreateMigrationInput): Promise<CreatedMigration> {
  const { store } = deps;
  const id = newMigrationId();
  const slots = input.moves.map((move) => move.slot);
  let claimed = false;
  try {
    const conflicts = await store.claimSlots(input.cluster, id, slots);
    if (conflicts.length > 0) {
      throw conflictError({
        kind: ConflictKind.SlotsHeld,
        holders: conflicts.map((conflict) => [conflict.slot, conflict.migrationId] as const),
      });
    }
    claimed = true;
    await store.create({
      id,
      cluster: input.cluster,
      kind: input.kind,
      request: input.request,
      moves: input.moves,
      engine: input.engine,
      ...(input.limits ? { limits: input.limits } : {}),
    });
    await enqueueSlotMoves(deps.migrateQueue, id, input.cluster, input.moves, deps.config.jobs, {
      replace: input.request.replace === true,
      engine: input.engine,
    });
  } catch (error) {
    // Leave nothing behind that a retry would trip over. (A record whose jobs were only partly
    // added stays visible, with its slots pending, for the operator to cancel.)
    if (claimed) await store.releaseSlots(input.cluster, id, slots).catch(() => undefined);
    throw error;
  }
  return {
    id,
    engine: input.engine,
    plan: groupMoves(input.moves),
    slots: input.moves.length,
    reused: false,
  };
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
  if (earlier.migrationId === null) throw conflictError({ kind: ConflictKind.IdempotencyKeyInFlight, key });
  const record = await deps.store.get(earlier.migrationId);
  if (!record)
    throw new SlotfleetError(ErrorCode.NotFound, `migration ${earlier.migrationId} no longer exists`);
  return {
    id: record.id,
    engine: record.engine,
    plan: [...record.plan],
    slots: record.slotsTotal,
    reused: true,
  };
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
