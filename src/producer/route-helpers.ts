/**
 * What several routes do alike: find the cluster or the migration a URL names, refuse a migration that
 * has ended, read the Idempotency-Key, shape a record as a summary.
 */
import type { FastifyRequest } from 'fastify';
import type { ClusterAdapter } from '../shared/cluster/adapter.js';
import { migrationHasEnded } from '../shared/domain/migration.js';
import { ErrorCode, SlotfleetError } from '../shared/errors.js';
import type { MigrationRecord } from '../shared/queue/migration-store.js';
import { ConflictKind, conflictError } from './conflicts.js';
import type { AppDeps } from './deps.js';

/** Done, failed or cancelled: nothing will change it any more. */
export function hasEnded(record: Pick<MigrationRecord, 'state'>): boolean {
  return migrationHasEnded(record.state);
}

/** 409 when the migration has ended; `consequence` says what the request cannot do, e.g. "nothing to pause". */
export function assertNotEnded(record: MigrationRecord, consequence: string): void {
  if (hasEnded(record)) {
    throw conflictError({
      kind: ConflictKind.MigrationEnded,
      migrationId: record.id,
      state: record.state,
      consequence,
    });
  }
}

/** The fields of a record that every migration answer shows (MigrationSummary). */
export function migrationSummary(record: MigrationRecord) {
  return {
    id: record.id,
    cluster: record.cluster,
    kind: record.kind,
    state: record.state,
    control: record.control,
    slotsTotal: record.slotsTotal,
    slots: record.slots,
    keysMoved: record.keysMoved,
    createdAt: record.createdAt,
    updatedAt: record.updatedAt,
    startedAt: record.startedAt,
    limits: record.limits,
    engine: record.engine,
  };
}

/** The migration's record, or 404. */
export async function requireRecord(deps: AppDeps, id: string): Promise<MigrationRecord> {
  const record = await deps.store.get(id);
  if (!record) throw new SlotfleetError(ErrorCode.NotFound, `migration ${id} does not exist`);
  return record;
}

/**
 * The Idempotency-Key header as one string. The route schemas check its form already; it is checked
 * again because a header reaches a handler typed string | string[]: the first is taken, and it must
 * still be a key the schema would accept.
 */
export function idempotencyKey(request: FastifyRequest): string | undefined {
  const header = request.headers['idempotency-key'];
  if (header === undefined) return undefined;
  const key = Array.isArray(header) ? header[0] : header;
  if (!key || !/^[\x21-\x7e]{1,200}$/.test(key)) {
    throw new SlotfleetError(
      ErrorCode.InvalidRequest,
      'Idempotency-Key must be 1 to 200 visible ASCII characters',
    );
  }
  return key;
}

/** The adapter of a configured cluster, or 404 naming the clusters there are. */
export function clusterAdapter(deps: AppDeps, cluster: string): ClusterAdapter {
  const adapter = deps.adapterFor(cluster);
  if (!adapter) {
    const known = Object.keys(deps.config.clusters);
    throw new SlotfleetError(
      ErrorCode.UnknownCluster,
      `cluster "${cluster}" is not configured (configured: ${known.length ? known.join(', ') : 'none; set SLOTFLEET_CLUSTER_URL'})`,
    );
  }
  return adapter;
}
