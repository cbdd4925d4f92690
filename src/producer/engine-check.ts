/**
 * The engine of a new migration, at creation: each master is read once, in parallel (the server slot
 * migrations it lists, the databases holding keys), the domain decides (checkEngine in
 * shared/domain/engine-choice.ts), and a refusal becomes the 4xx that names it. Nothing is touched.
 */
import type { ClusterAdapter } from '../shared/cluster/adapter.js';
import { type EngineCheck, EngineRefusalKind, type MasterFacts } from '../shared/domain/engine-choice.js';
import type { MigrationEngine } from '../shared/domain/migration.js';
import type { NodeRef } from '../shared/domain/plan.js';
import { type ClusterNode, NodeRole, nodeAddress } from '../shared/domain/topology.js';
import { ErrorCode, SlotfleetError } from '../shared/errors.js';
import { ConflictKind, conflictError } from './conflicts.js';

/** The masters a migration's engine must suit: every live one, empty ones included. */
export function liveMasters(nodes: readonly ClusterNode[]): NodeRef[] {
  return nodes
    .filter((node) => node.role === NodeRole.Master && !node.failed)
    .map((node) => ({ id: node.id, host: node.host, port: node.port }));
}

/** CLUSTER GETSLOTMIGRATIONS and INFO keyspace of every master, all at once. */
export async function readMasterFacts(
  adapter: ClusterAdapter,
  masters: readonly NodeRef[],
): Promise<MasterFacts[]> {
  const [serverMigrations, databases] = await Promise.all([
    Promise.all(masters.map((master) => adapter.serverMigrations(master))),
    adapter.databasesWithKeys(masters),
  ]);
  return masters.map((node, index) => ({
    node,
    serverMigrations: serverMigrations[index],
    databases: databases[index] ?? [],
  }));
}

/** The engine checked, or the error that refuses the request. */
export function engineOrRefuse(check: EngineCheck, options: { repairs: boolean }): MigrationEngine {
  if (check.refusal === undefined) return check.engine;
  const { refusal } = check;
  switch (refusal.kind) {
    case EngineRefusalKind.AtomicForRepairs:
      throw new SlotfleetError(
        ErrorCode.InvalidRequest,
        'fix cannot run with engine atomic: it repairs open slots with hand-made CLUSTER SETSLOT, which ' +
          "Valkey refuses alongside the servers' own slot migrations; use engine keys or auto (keys for fix)",
      );
    case EngineRefusalKind.AtomicUnsupported: {
      const nodes = refusal.lacking.map(nodeAddress);
      throw new SlotfleetError(
        ErrorCode.AtomicUnsupported,
        `engine atomic needs atomic slot migration (Valkey 9 CLUSTER MIGRATESLOTS) on every master, and ` +
          `${nodes.join(', ')} ${nodes.length === 1 ? 'does' : 'do'} not have it: use engine keys, or auto ` +
          '(keys on this cluster)',
        { details: { nodes, ids: refusal.lacking.map((node) => node.id) } },
      );
    }
    case EngineRefusalKind.ServerTask:
      throw conflictError({ kind: ConflictKind.ServerTaskHoldsSlots, holdings: refusal.holdings });
    case EngineRefusalKind.OpenSlots:
      throw conflictError({ kind: ConflictKind.OpenSlotsBlockAtomic, openSlots: refusal.openSlots });
    case EngineRefusalKind.OtherDatabases:
      throw conflictError({
        kind: ConflictKind.KeysInOtherDatabases,
        nodes: refusal.nodes,
        repairs: options.repairs,
      });
    default: {
      const never: never = refusal;
      throw new Error(`unhandled engine refusal: ${JSON.stringify(never)}`);
    }
  }
}
