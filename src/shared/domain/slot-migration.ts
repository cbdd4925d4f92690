/**
 * The slot migration state machine. Pure: it looks at what the cluster says about one slot and
 * answers with the single next action. The processors observe, act, and ask again, so a re-run
 * after any crash picks up from the cluster's real state and never from a remembered one.
 *
 * The protocol (the one redis-cli's clusterManagerMoveSlot follows, made restartable):
 *   pending    -> importing   CLUSTER SETSLOT s IMPORTING <source> on the target. First, so that the
 *                             ASK redirects the source is about to send land on a node that accepts them.
 *   importing  -> migrating   CLUSTER SETSLOT s MIGRATING <target> on the source. From here on the
 *                             source creates no new key in the slot: writes to missing keys get ASK.
 *   migrating  -> draining    GETKEYSINSLOT + MIGRATE ... KEYS in batches until the source holds none.
 *   draining   -> finalizing  CLUSTER SETSLOT s NODE <target> on the target first (it bumps its config
 *                             epoch, so its claim wins), then on the source, then on every other master.
 *   finalizing -> done        every master reports the target as owner.
 *   any        -> failed      a non-retryable error, or the retry budget is spent. The slot is left
 *                             open but safe (clients follow ASK); a re-run continues from the cluster.
 *   pending, importing -> cancelled   when the migration is cancelled before the source is MIGRATING:
 *                             no key has moved, so the target's IMPORTING is undone (SETSLOT STABLE).
 *                             A slot already MIGRATING when the cancel arrives is finished instead:
 *                             stopping it halfway would leave its keys split across two nodes.
 *
 * Two rules are never bent, because a node that loses a slot by gossip while it holds keys of it
 * deletes those keys (cluster.c clusterUpdateSlotsConfigWith, "dirty slots"):
 *  1. The target is assigned the slot only when the source holds no key of it AND is MIGRATING it to
 *     the target (so no new key can appear there).
 *  2. The target is assigned the slot only when its config epoch will end up above the source's.
 *     Otherwise any node still holding the old mapping rejects the target's claim and sends it an
 *     UPDATE with the source's (higher) epoch, and the target drops the slot and its keys. SETSLOT
 *     NODE bumps the target's epoch above every epoch the target knows, unless it already holds the
 *     highest: so we wait while the target has not yet heard the source's epoch, or ties with it.
 */
import { ErrorCode } from '../errors.js';

export const SlotStep = {
  Pending: 'pending',
  Importing: 'importing',
  Migrating: 'migrating',
  Draining: 'draining',
  Finalizing: 'finalizing',
  Done: 'done',
  Failed: 'failed',
  Cancelled: 'cancelled',
} as const;
export type SlotStep = (typeof SlotStep)[keyof typeof SlotStep];

export const SLOT_STEPS: readonly SlotStep[] = Object.values(SlotStep);

/** What the source and target masters say about the slot, each about itself. */
export interface SlotObservation {
  readonly slot: number;
  readonly sourceId: string;
  readonly targetId: string;
  /**
   * isMaster: false once the source turned into a replica. Redis makes a master that loses its last
   * slot by gossip a replica of the new owner; its keys are then the new owner's, replicated.
   */
  readonly source: NodeSlotState & { readonly keys: number } & NodeRole;
  readonly target: NodeSlotState & NodeRole;
  /**
   * Nodes this slot's migration used before a failover replaced them (see the engine's adoption of
   * the promoted replica): an IMPORTING or MIGRATING state naming one of them is stale, and is set
   * again naming its successor instead of being reported as a conflict.
   */
  readonly replaced?: readonly string[];
  /** Config epochs: each node's own, and the source's as the target last heard it. */
  readonly epochs: {
    readonly source: number;
    readonly target: number;
    readonly sourceSeenByTarget: number;
  };
  /** Other masters' opinion of the owner; only needed to finish finalizing. */
  readonly others: readonly {
    readonly nodeId: string;
    readonly host: string;
    readonly port: number;
    readonly owner: string | null;
  }[];
}

/** Whether the node still is a master, and if not, which master it follows now. */
export interface NodeRole {
  readonly isMaster: boolean;
  readonly masterId: string | null;
}

export interface NodeSlotState {
  readonly owner: string | null;
  readonly importingFrom: string | null;
  readonly migratingTo: string | null;
}

export const SlotActionKind = {
  SetImporting: 'set-importing',
  ResetImport: 'reset-import',
  AwaitOwner: 'await-owner',
  AwaitEpoch: 'await-epoch',
  SetMigrating: 'set-migrating',
  MigrateKeys: 'migrate-keys',
  Drained: 'drained',
  AssignTarget: 'assign-target',
  AssignSource: 'assign-source',
  AssignOthers: 'assign-others',
  Done: 'done',
  Fail: 'fail',
} as const;

export type SlotAction =
  | { readonly kind: typeof SlotActionKind.SetImporting }
  | { readonly kind: typeof SlotActionKind.SetMigrating }
  | { readonly kind: typeof SlotActionKind.ResetImport }
  | { readonly kind: typeof SlotActionKind.AwaitOwner; readonly reason: string }
  | { readonly kind: typeof SlotActionKind.AwaitEpoch; readonly reason: string }
  | { readonly kind: typeof SlotActionKind.MigrateKeys }
  | { readonly kind: typeof SlotActionKind.Drained }
  | { readonly kind: typeof SlotActionKind.AssignTarget }
  | { readonly kind: typeof SlotActionKind.AssignSource }
  | { readonly kind: typeof SlotActionKind.AssignOthers; readonly nodeIds: readonly string[] }
  | { readonly kind: typeof SlotActionKind.Done }
  | { readonly kind: typeof SlotActionKind.Fail; readonly code: ErrorCode; readonly message: string };

/** The migrate job stops at Drained; the finalizer job goes on to Done. */
export const SlotPhase = { Migrate: 'migrate', Finalize: 'finalize' } as const;
export type SlotPhase = (typeof SlotPhase)[keyof typeof SlotPhase];

export function nextSlotAction(observation: SlotObservation, phase: SlotPhase): SlotAction {
  const { slot, sourceId, targetId, source, target } = observation;
  if (sourceId === targetId) return { kind: SlotActionKind.Done };

  if (target.owner === targetId) {
    // The target has claimed the slot: finalizing started. Keys left on the source would be deleted
    // by gossip, so moving them comes before anything else (the owner accepts them without ASKING).
    // A source that became a replica holds copies of the target's keys, nothing of its own.
    if (source.isMaster && source.keys > 0) return { kind: SlotActionKind.MigrateKeys };
    if (phase === SlotPhase.Migrate) return { kind: SlotActionKind.Drained };
    // An owner still importing is open: clients of it get no ASK-less answer for missing keys and
    // tools see the slot as unfinished. SETSLOT NODE on itself closes it (cluster.c: "n == myself
    // && importing"). Valkey keeps an IMPORTING it took before ownership reached it some other way.
    if (target.importingFrom !== null) return { kind: SlotActionKind.AssignTarget };
    if (source.isMaster && (source.owner !== targetId || source.migratingTo !== null)) {
      return { kind: SlotActionKind.AssignSource };
    }
    const lagging = observation.others
      .filter((other) => other.owner !== targetId)
      .map((other) => other.nodeId);
    if (lagging.length > 0) return { kind: SlotActionKind.AssignOthers, nodeIds: lagging };
    return { kind: SlotActionKind.Done };
  }

  if (!source.isMaster) {
    return fail(
      ErrorCode.OwnerChanged,
      `source ${sourceId} of slot ${slot} is no longer a master (failed over or demoted): re-plan, or run fix`,
    );
  }
  if (source.owner === targetId) {
    // The source has handed the slot to the target, which is told first: this read of the target
    // is older than that of the source (each node is read on its own, and a finalizer may run
    // meanwhile, as when a job re-runs after the control Redis lost its record). Read both again.
    return {
      kind: SlotActionKind.AwaitOwner,
      reason: `source sees target ${targetId} as owner of slot ${slot}, the target's view is older; reading again`,
    };
  }
  if (source.owner !== sourceId) {
    return fail(
      ErrorCode.OwnerChanged,
      `slot ${slot} is no longer owned by source ${sourceId} (source sees owner ${source.owner ?? 'none'}, ` +
        `target sees ${target.owner ?? 'none'}): the cluster changed since the plan; re-plan or run fix`,
    );
  }
  if (!target.isMaster) {
    return fail(
      ErrorCode.OwnerChanged,
      `target ${targetId} of slot ${slot} is no longer a master (failed over or demoted): re-plan, or run fix`,
    );
  }
  // An open state naming a node a failover replaced is stale. A stale IMPORTING is closed first:
  // when the old source turned replica, the target dropped its slots, and while it imports it ignores
  // the successor's claim (cluster.c clusterUpdateSlotsConfigWith), so it would answer the
  // successor's RESTORE-ASKING with CLUSTERDOWN. Once it sees the successor as owner, it imports
  // again. A stale MIGRATING is simply set again, naming the target's successor.
  const replaced = observation.replaced ?? [];
  if (target.importingFrom !== null && replaced.includes(target.importingFrom)) {
    return { kind: SlotActionKind.ResetImport };
  }
  const importingFrom = target.importingFrom;
  const migratingTo =
    source.migratingTo !== null && replaced.includes(source.migratingTo) ? null : source.migratingTo;
  if (importingFrom !== null && importingFrom !== sourceId) {
    return fail(
      ErrorCode.SlotConflict,
      `target ${targetId} is importing slot ${slot} from ${target.importingFrom}, not from ${sourceId}: ` +
        'another migration has this slot open; run fix',
    );
  }
  if (migratingTo !== null && migratingTo !== targetId) {
    return fail(
      ErrorCode.SlotConflict,
      `source ${sourceId} is migrating slot ${slot} to ${source.migratingTo}, not to ${targetId}: ` +
        'another migration has this slot open; run fix',
    );
  }
  if (importingFrom === null && target.owner !== sourceId) {
    return {
      kind: SlotActionKind.AwaitOwner,
      reason: `target sees ${target.owner ?? 'no node'} as owner of slot ${slot}, not ${sourceId}; waiting for gossip`,
    };
  }
  if (importingFrom === null) return { kind: SlotActionKind.SetImporting };
  if (migratingTo === null) return { kind: SlotActionKind.SetMigrating };
  if (source.keys > 0) return { kind: SlotActionKind.MigrateKeys };
  if (phase === SlotPhase.Migrate) return { kind: SlotActionKind.Drained };
  const epochProblem = epochUnsafeReason(observation);
  if (epochProblem) return { kind: SlotActionKind.AwaitEpoch, reason: epochProblem };
  return { kind: SlotActionKind.AssignTarget };
}

/**
 * Why assigning the slot to the target now could let the source's epoch win (rule 2), or null when
 * it cannot: the target's epoch is above the source's already, or the target knows the source's
 * epoch is above its own and will bump past it.
 */
export function epochUnsafeReason(observation: SlotObservation): string | null {
  const { source, target, sourceSeenByTarget } = observation.epochs;
  if (target > source) return null;
  if (target < source && sourceSeenByTarget >= source) return null;
  if (target === source)
    return `target and source share config epoch ${target}; waiting for Redis to resolve the collision`;
  return `target has seen source config epoch ${sourceSeenByTarget}, the source is at ${source}; waiting for gossip`;
}

/** The step an operator sees for a slot in a given observation (for the migration record). */
export function stepOf(observation: SlotObservation): SlotStep {
  const { source, target, targetId, sourceId } = observation;
  if (target.owner === targetId) {
    const sourceSettled = !source.isMaster || (source.owner === targetId && source.keys === 0);
    const settled = sourceSettled && observation.others.every((other) => other.owner === targetId);
    return settled ? SlotStep.Done : SlotStep.Finalizing;
  }
  // Handed over by the source, the target's view older than the source's (nextSlotAction).
  if (source.owner === targetId) return SlotStep.Finalizing;
  if (target.importingFrom !== sourceId) return SlotStep.Pending;
  if (source.migratingTo !== targetId) return SlotStep.Importing;
  return source.keys > 0 ? SlotStep.Draining : SlotStep.Migrating;
}

/** How far along a step is; draining and migrating are one stage (with and without keys left). */
const STEP_RANK: Readonly<Record<SlotStep, number>> = {
  [SlotStep.Pending]: 0,
  [SlotStep.Importing]: 1,
  [SlotStep.Migrating]: 2,
  [SlotStep.Draining]: 2,
  [SlotStep.Finalizing]: 3,
  [SlotStep.Done]: 4,
  [SlotStep.Failed]: 4,
  [SlotStep.Cancelled]: 4,
};

/**
 * Whether a predicted observation (afterAction) takes the slot back to an earlier step. Only
 * ResetImport may: it closes a stale IMPORTING so that the slot is imported again from a successor.
 * The cluster itself may move a slot back (a failover drops IMPORTING and MIGRATING); a prediction
 * never should, so an engine that sees one has a bug and must stop rather than act on it.
 */
export function predictionRegresses(
  before: SlotObservation,
  after: SlotObservation,
  action: SlotAction,
): boolean {
  if (action.kind === SlotActionKind.ResetImport) return false;
  return STEP_RANK[stepOf(after)] < STEP_RANK[stepOf(before)];
}

function fail(code: ErrorCode, message: string): SlotAction {
  return { kind: SlotActionKind.Fail, code, message };
}

/**
 * The observation a successful action leads to, so a job need not ask the cluster again after each
 * command it saw succeed. Safety never rests on it: the finalizer observes afresh before it assigns
 * the slot, and checks every master afterwards.
 */
export function afterAction(observation: SlotObservation, action: SlotAction): SlotObservation {
  const { targetId, sourceId } = observation;
  switch (action.kind) {
    case SlotActionKind.SetImporting:
      return { ...observation, target: { ...observation.target, importingFrom: sourceId } };
    case SlotActionKind.SetMigrating:
      return { ...observation, source: { ...observation.source, migratingTo: targetId } };
    case SlotActionKind.ResetImport:
      return { ...observation, target: { ...observation.target, importingFrom: null } };
    case SlotActionKind.MigrateKeys:
      return { ...observation, source: { ...observation.source, keys: 0 } };
    case SlotActionKind.AssignTarget:
      return {
        ...observation,
        target: { ...observation.target, owner: targetId, importingFrom: null, migratingTo: null },
      };
    case SlotActionKind.AssignSource:
      return { ...observation, source: { ...observation.source, owner: targetId, migratingTo: null } };
    case SlotActionKind.AssignOthers: {
      const assigned = new Set(action.nodeIds);
      const others = observation.others.map((other) =>
        assigned.has(other.nodeId) ? { ...other, owner: targetId } : other,
      );
      return { ...observation, others };
    }
    case SlotActionKind.AwaitEpoch:
    case SlotActionKind.AwaitOwner:
    case SlotActionKind.Drained:
    case SlotActionKind.Done:
    case SlotActionKind.Fail:
      return observation;
    default: {
      const never: never = action;
      throw new Error(`unhandled slot action: ${JSON.stringify(never)}`);
    }
  }
}

export const CancelDecision = {
  /** Nothing is open and the target does not own the slot: record it as cancelled. */
  Drop: 'drop',
  /** The target is IMPORTING but the source is not MIGRATING: no key moved; undo the import. */
  UndoImport: 'undo-import',
  /** The source is MIGRATING (keys may have moved) or the target owns the slot: finish it. */
  Finish: 'finish',
} as const;
export type CancelDecision = (typeof CancelDecision)[keyof typeof CancelDecision];

export function cancelDecision(observation: SlotObservation): CancelDecision {
  const { source, target, sourceId, targetId } = observation;
  if (target.owner === targetId || source.migratingTo === targetId) return CancelDecision.Finish;
  if (target.importingFrom === sourceId) return CancelDecision.UndoImport;
  return CancelDecision.Drop;
}
