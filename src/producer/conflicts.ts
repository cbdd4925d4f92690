/**
 * Every 409 the API answers itself, worded in one place. A 409 means the request is well formed but
 * collides with what is going on: another migration holds the slots, the migration has ended or is
 * being cancelled, the cluster is not settled, or there is nothing to do. The status comes from the
 * code (statusForCode in http-errors.ts); this module owns the words. (The planners in shared/domain raise their own 409s about the snapshot they plan on, such as
 * open or unowned slots: the domain does not import the producer.)
 */
import { formatSlotRanges } from '../shared/domain/slots.js';
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
  | { readonly kind: typeof ConflictKind.MastersDisagree; readonly slots: readonly number[] };

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
    default: {
      const never: never = conflict;
      throw new Error(`unhandled conflict: ${JSON.stringify(never)}`);
    }
  }
}
