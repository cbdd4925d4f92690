/**
 * Slot migrations that run inside the servers (atomic slot migration): Valkey 9's
 * `CLUSTER MIGRATESLOTS`, as `CLUSTER GETSLOTMIGRATIONS` reports them. Pure: parsing the reply and
 * the questions the atomic engine, the planner and the keys engine ask of it.
 *
 * A server task moves a set of slot ranges from one source to one target. The source forks a
 * snapshot of those slots, streams it (as commands) to the target, then the later writes; it pauses
 * writes to those slots, the target takes them over (a new epoch, like a manual failover) and the
 * source drops its copies. Both ends list the task, the source as EXPORT, the target as IMPORT, while
 * it runs and for a while after it ended (success, failed or cancelled, with a message). A task that
 * fails rolls back by itself: the source keeps owning the slots, the target deletes what it got.
 *
 * Valkey refuses CLUSTER SETSLOT on a node while any task imports or exports there, and refuses
 * MIGRATESLOTS while any slot is IMPORTING or MIGRATING by hand: the two engines never share a node.
 */
import { type SlotRange, toRanges } from './slots.js';

export const ServerMigrationOperation = { Import: 'import', Export: 'export' } as const;
export type ServerMigrationOperation =
  (typeof ServerMigrationOperation)[keyof typeof ServerMigrationOperation];

/** How a task ended, or that it has not. */
export const ServerMigrationOutcome = {
  InProgress: 'in-progress',
  Succeeded: 'succeeded',
  Failed: 'failed',
  Cancelled: 'cancelled',
} as const;
export type ServerMigrationOutcome = (typeof ServerMigrationOutcome)[keyof typeof ServerMigrationOutcome];

export interface ServerMigration {
  /** The task's name (40 hex characters), the same on both ends. */
  readonly name: string;
  readonly operation: ServerMigrationOperation;
  readonly ranges: readonly SlotRange[];
  /** Absent on a replica's tracking-only entry. */
  readonly sourceNodeId?: string;
  readonly targetNodeId?: string;
  /** The server's state name, e.g. `snapshotting`, `replicating`, `success`. */
  readonly state: string;
  readonly outcome: ServerMigrationOutcome;
  /** Why it failed or was cancelled; often empty otherwise. */
  readonly message: string;
  /** Unix seconds. */
  readonly createdAtSeconds: number;
  readonly updatedAtSeconds: number;
  /** When the two ends last acknowledged each other (they do every second or so while it runs). */
  readonly ackedAtSeconds?: number;
}

/** Valkey 9.1's terminal state names (slotMigrationJobStateToString in cluster_migrateslots.c). */
const OUTCOME_OF_STATE: Readonly<Record<string, ServerMigrationOutcome>> = {
  success: ServerMigrationOutcome.Succeeded,
  failed: ServerMigrationOutcome.Failed,
  cancelled: ServerMigrationOutcome.Cancelled,
};

/**
 * The reply of CLUSTER GETSLOTMIGRATIONS: an array of maps, which RESP2 sends as flat
 * [field, value, ...] arrays. Unknown fields are ignored; a malformed entry throws, naming it.
 */
export function parseServerMigrations(reply: unknown): ServerMigration[] {
  if (!Array.isArray(reply))
    throw new Error(`CLUSTER GETSLOTMIGRATIONS: expected an array, got ${typeof reply}`);
  return reply.map((entry, index) => {
    const fields = new Map<string, string>();
    if (Array.isArray(entry)) {
      for (let i = 0; i + 1 < entry.length; i += 2) fields.set(String(entry[i]), String(entry[i + 1]));
    } else if (entry !== null && typeof entry === 'object') {
      for (const [key, value] of Object.entries(entry)) fields.set(key, String(value));
    }
    const name = fields.get('name');
    const operation = fields.get('operation')?.toLowerCase();
    const state = fields.get('state');
    if (!name || (operation !== 'import' && operation !== 'export') || state === undefined) {
      throw new Error(`CLUSTER GETSLOTMIGRATIONS: entry ${index} lacks name, operation or state`);
    }
    return {
      name,
      operation,
      ranges: parseServerRanges(fields.get('slot_ranges') ?? ''),
      ...(fields.has('source_node') ? { sourceNodeId: fields.get('source_node')! } : {}),
      ...(fields.has('target_node') ? { targetNodeId: fields.get('target_node')! } : {}),
      state,
      outcome: OUTCOME_OF_STATE[state] ?? ServerMigrationOutcome.InProgress,
      message: fields.get('message') ?? '',
      createdAtSeconds: Number(fields.get('create_time') ?? 0),
      updatedAtSeconds: Number(fields.get('last_update_time') ?? 0),
      ackedAtSeconds: Number(fields.get('last_ack_time') ?? 0),
    };
  });
}

/** "0-99 200-200" (Valkey's form, space-separated) into ranges. */
export function parseServerRanges(text: string): SlotRange[] {
  return text
    .split(/[\s,]+/)
    .filter((part) => part !== '')
    .map((part) => {
      const [start, end = start] = part.split('-').map(Number);
      if (!Number.isInteger(start) || !Number.isInteger(end)) throw new Error(`bad slot range "${part}"`);
      return { start: start!, end: end! };
    });
}

/** MIGRATESLOTS' arguments for these slots: SLOTSRANGE s e [s e ...]. */
export function slotsRangeArguments(slots: Iterable<number>): number[] {
  return toRanges(slots).flatMap((range) => [range.start, range.end]);
}

export function coversSlot(migration: Pick<ServerMigration, 'ranges'>, slot: number): boolean {
  return migration.ranges.some((range) => range.start <= slot && slot <= range.end);
}

export function isInProgress(migration: Pick<ServerMigration, 'outcome'>): boolean {
  return migration.outcome === ServerMigrationOutcome.InProgress;
}

/** The task in progress that holds this slot, if any. */
export function taskHolding(
  migrations: readonly ServerMigration[],
  slot: number,
): ServerMigration | undefined {
  return migrations.find((migration) => isInProgress(migration) && coversSlot(migration, slot));
}

/**
 * The most recent ended task that covered this slot (the log keeps ended tasks for a while): why a
 * slot that is neither moved nor in a task is not moved.
 */
export function lastEndedTask(
  migrations: readonly ServerMigration[],
  slot: number,
): ServerMigration | undefined {
  return migrations
    .filter((migration) => !isInProgress(migration) && coversSlot(migration, slot))
    .sort((a, b) => b.updatedAtSeconds - a.updatedAtSeconds)[0];
}

/** For an operator: "task 1a2b... (export 0-99 to 5f3c...: snapshotting)". */
export function describeServerMigration(migration: ServerMigration): string {
  const ranges = migration.ranges
    .map((range) => (range.start === range.end ? `${range.start}` : `${range.start}-${range.end}`))
    .join(',');
  const peer =
    migration.operation === ServerMigrationOperation.Export
      ? migration.targetNodeId && ` to ${migration.targetNodeId}`
      : migration.sourceNodeId && ` from ${migration.sourceNodeId}`;
  const why = migration.message ? `, ${migration.message}` : '';
  return `server slot migration ${migration.name} (${migration.operation} ${ranges}${peer ?? ''}: ${migration.state}${why})`;
}
