/**
 * Every 409 the API answers itself, worded in one place. A 409 means the request is well formed but
 * collides with what is going on: another migration holds the slots, the migration has ended or is
 * being cancelled, the cluster is not settled, a server-side slot migration holds the slots or the
 * cluster's state rules out the migration's engine, or there is nothing to do. The status comes from the
 * code (statusForCode in http-errors.ts); this module owns the words. (The planners in shared/domain raise their own 409s about the snapshot they plan on, such as
 * open or unowned slots: the domain does not import the producer.)
 */
import type { NodeDatabases, OpenSlotOnNode, TaskHolding } from '../shared/domain/engine-choice.js';
import { describeServerMigration } from '../shared/domain/server-migrations.js';
import { formatSlotRanges } from '../shared/domain/slots.js';
import { nodeAddress } from '../shared/domain/topology.js';
import { ErrorCode, SlotfleetError } from '../shared/errors.js';

export const ConflictKind = {
  /** Slots claimed by an active migration. */
  SlotsHeld: 'slots-held',
  /** An earlier request with the same Idempotency-Key has not finished creating its migration. */
  IdempotencyKeyInFlight: 'idempotency-key-in-flight',
  MigrationEnded: 'migration-ended',
  MigrationCancelling: 'migration-cancelling',
  /** A planning route found the cluster already as the request asks. */
  NothingToDo: 'nothing-to-do',
  /** A node reports cluster_state other than ok. */
  ClusterNotOk: 'cluster-not-ok',
  /** Masters disagree on the owner of slots the plan moves. */
  MastersDisagree: 'masters-disagree',
  /** A server-side slot migration in progress (Valkey 9 CLUSTER MIGRATESLOTS) holds slots the plan moves. */
  ServerTaskHoldsSlots: 'server-task-holds-slots',
  /** Engine atomic, and a node of the plan has slots IMPORTING/MIGRATING by hand. */
  OpenSlotsBlockAtomic: 'open-slots-block-atomic',
  /** Engine keys (database 0 only), and masters hold keys in other databases. */
  KeysInOtherDatabases: 'keys-in-other-databases',
} as const;

export type Conflict =
  | {
      readonly kind: typeof ConflictKind.SlotsHeld;
      /** slot -> id of the active migration holding it. */
      readonly holders: Iterable<readonly [slot: number, migrationId: string]>;
    }
  | { readonly kind: typeof ConflictKind.IdempotencyKeyInFlight; readonly key: string }
  | {
      readonly kind: typeof ConflictKind.MigrationEnded;
      readonly migrationId: string;
      readonly state: string;
      /** What the request cannot do now, e.g. "nothing to pause". */
      readonly consequence: string;
    }
  | {
      readonly kind: typeof ConflictKind.MigrationCancelling;
      readonly migrationId: string;
      readonly action: string;
    }
  | { readonly kind: typeof ConflictKind.NothingToDo; readonly action: string }
  | {
      readonly kind: typeof ConflictKind.ClusterNotOk;
      /** node -> its cluster_state, for the nodes that are not ok. */
      readonly states: readonly (readonly [node: string, state: string])[];
    }
  | { readonly kind: typeof ConflictKind.MastersDisagree; readonly slots: readonly number[] }
  | { readonly kind: typeof ConflictKind.ServerTaskHoldsSlots; readonly holdings: readonly TaskHolding[] }
  | { readonly kind: typeof ConflictKind.OpenSlotsBlockAtomic; readonly openSlots: readonly OpenSlotOnNode[] }
  | {
      readonly kind: typeof ConflictKind.KeysInOtherDatabases;
      readonly nodes: readonly NodeDatabases[];
      /** fix asked: it repairs with the keys engine only, so atomic is no way out. */
      readonly repairs: boolean;
    };

/** The SlotfleetError (answered 409) for a conflict. */
export function conflictError(conflict: Conflict): SlotfleetError {
  switch (conflict.kind) {
    case ConflictKind.SlotsHeld: {
      const holders = [...conflict.holders];
      const slots = formatSlotRanges(holders.map(([slot]) => slot));
      const migrations = [...new Set(holders.map(([, migrationId]) => migrationId))];
      return new SlotfleetError(
        ErrorCode.SlotConflict,
        `slots ${slots} belong to active migration ${migrations.join(', ')}: wait for it to end, or cancel it`,
        { details: { slots, migrations } },
      );
    }
    case ConflictKind.IdempotencyKeyInFlight:
      return new SlotfleetError(
        ErrorCode.SlotConflict,
        `a request with Idempotency-Key "${conflict.key}" is still being processed: retry in a moment`,
      );
    case ConflictKind.MigrationEnded:
      return new SlotfleetError(
        ErrorCode.InvalidState,
        `migration ${conflict.migrationId} has ended (${conflict.state}): ${conflict.consequence}`,
      );
    case ConflictKind.MigrationCancelling:
      return new SlotfleetError(
        ErrorCode.InvalidState,
        `migration ${conflict.migrationId} is being cancelled: it cannot ${conflict.action}`,
      );
    case ConflictKind.NothingToDo:
      return new SlotfleetError(
        ErrorCode.InvalidState,
        `nothing to ${conflict.action}: the cluster already matches the request`,
      );
    case ConflictKind.ClusterNotOk:
      return new SlotfleetError(
        ErrorCode.ClusterNotReady,
        `cluster is not ok: ${conflict.states.map(([node, state]) => `${node} reports cluster_state:${state}`).join(', ')}`,
      );
    case ConflictKind.MastersDisagree: {
      const slots = formatSlotRanges(conflict.slots);
      return new SlotfleetError(
        ErrorCode.ClusterNotReady,
        `masters disagree on the owner of slots ${slots}: wait for the cluster to settle, or run fix`,
        { details: { slots } },
      );
    }
    case ConflictKind.ServerTaskHoldsSlots: {
      const tasks = conflict.holdings.map(
        (holding) =>
          `slots ${formatSlotRanges(holding.slots)} are held by ${describeServerMigration(holding.task)}, listed by ${nodeAddress(holding.listedBy)}`,
      );
      return new SlotfleetError(
        ErrorCode.SlotMigrationBusy,
        `${tasks.join('; ')}: wait for it to end, or cancel it (CLUSTER CANCELSLOTMIGRATIONS on its source)`,
        {
          details: {
            slots: formatSlotRanges(conflict.holdings.flatMap((holding) => holding.slots)),
            serverMigrations: conflict.holdings.map((holding) => holding.task.name),
          },
        },
      );
    }
    case ConflictKind.OpenSlotsBlockAtomic: {
      const byNode = new Map<string, string[]>();
      for (const open of conflict.openSlots) {
        const address = nodeAddress(open.node);
        const peer = open.state === 'importing' ? 'from' : 'to';
        byNode.set(address, [
          ...(byNode.get(address) ?? []),
          `${open.slot} ${open.state} ${peer} ${open.peerId}`,
        ]);
      }
      const nodes = [...byNode].map(([address, slots]) => `${address} (${slots.join(', ')})`);
      const slots = formatSlotRanges(conflict.openSlots.map((open) => open.slot));
      return new SlotfleetError(
        ErrorCode.SlotMigrationBusy,
        `engine atomic cannot start: slots are IMPORTING/MIGRATING by hand on ${nodes.join(', ')}, and Valkey ` +
          'refuses CLUSTER MIGRATESLOTS on a node with manually migrated slots: run fix first, or use engine keys',
        { details: { slots, nodes: [...byNode.keys()] } },
      );
    }
    case ConflictKind.KeysInOtherDatabases: {
      const nodes = conflict.nodes.map(
        (entry) =>
          `${nodeAddress(entry.node)} (${entry.databases.map((db) => `db${db.database}: ${db.keys} keys`).join(', ')})`,
      );
      const wayOut = conflict.repairs
        ? 'fix repairs with the keys engine only: move or delete those keys first'
        : 'use engine atomic (Valkey 9), which moves every database, or auto';
      return new SlotfleetError(
        ErrorCode.InvalidState,
        `engine keys moves database 0 only, and keys are in other databases on ${nodes.join(', ')}: ${wayOut}`,
        {
          details: {
            nodes: conflict.nodes.map((entry) => ({
              node: nodeAddress(entry.node),
              id: entry.node.id,
              databases: entry.databases.map((db) => db.database),
            })),
          },
        },
      );
    }
    default: {
      const never: never = conflict;
      throw new Error(`unhandled conflict: ${JSON.stringify(never)}`);
    }
  }
}
