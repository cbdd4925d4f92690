/**
 * The server tasks of an atomic migration, as GET /v1/migrations/:id shows them: what each source
 * of the plan lists in CLUSTER GETSLOTMIGRATIONS (its exports, running and recently ended) for the
 * migration's slots. The workers start and watch these tasks; this view only reads them, so an
 * operator can see which task holds which slots and what the servers say it is doing.
 *
 * Read like remaining-keys.ts reads counts: cached per migration for a second, since pollers ask
 * several times a second and every read is a command on the very nodes that move the slots; null
 * when the cluster does not answer, never an error. A keys-engine migration has no server tasks,
 * and a migration that has ended none to follow: both answer [] without a read.
 */
import type { Static } from 'typebox';
import type { ClusterAdapter } from '../shared/cluster/adapter.js';
import { MigrationEngine, migrationHasEnded } from '../shared/domain/migration.js';
import {
  isInProgress,
  type ServerMigration,
  ServerMigrationOperation,
} from '../shared/domain/server-migrations.js';
import { formatSlotRanges, parseSlotRanges } from '../shared/domain/slots.js';
import type { MigrationRecord, PlanGroup } from '../shared/queue/migration-store.js';
import { splitAddress } from './remaining-keys.js';
import type { ServerTask } from './schemas.js';

/** One task as the view shows it: the API's schema (ServerTask) says what each field is. */
export type ServerTaskView = Static<typeof ServerTask>;

/** What one source of the plan listed. */
export interface SourceTasks {
  /** host:port, as the plan names it. */
  readonly source: string;
  readonly tasks: readonly ServerMigration[];
}

/** Tasks a view shows at most: those in progress first, then the most recently ended. @defaultValue 20 */
export const MAX_SERVER_TASKS = 20;

/** How long one read of the sources' lists is reused, per migration. */
export const SERVER_TASKS_CACHE_MS = 1_000;

/**
 * How far before the migration's creation an ended task may have last changed and still be shown.
 * The servers stamp tasks with their own clock, which need not be the API's; the slack keeps the
 * migration's first tasks in view on a node whose clock is a little behind, while a source's log of
 * older tasks (Valkey keeps up to 1000) stays out.
 */
export const CLOCK_SLACK_SECONDS = 60;

/**
 * The tasks of a migration from what its sources listed: exports whose slots overlap the slots the
 * plan moves off that source. Every task in progress is shown (one started by hand holds the
 * migration's slots just the same); an ended one only if it last changed after the migration was
 * created (less the clock slack). In progress first, oldest first; then ended, newest first.
 */
export function selectServerTasks(
  plan: readonly PlanGroup[],
  listed: readonly SourceTasks[],
  options: { readonly createdAtMs: number; readonly limit?: number },
): ServerTaskView[] {
  const slotsOfSource = new Map<string, Set<number>>();
  const targetAddresses = new Map<string, string>();
  for (const group of plan) {
    const slots = slotsOfSource.get(group.source) ?? new Set<number>();
    for (const slot of parseSlotRanges(group.slots)) slots.add(slot);
    slotsOfSource.set(group.source, slots);
    targetAddresses.set(group.targetId, group.target);
  }
  const oldestEndedSeconds = options.createdAtMs / 1000 - CLOCK_SLACK_SECONDS;
  const chosen: { task: ServerMigration; source: string }[] = [];
  for (const { source, tasks } of listed) {
    const slots = slotsOfSource.get(source);
    if (!slots) continue;
    for (const task of tasks) {
      if (task.operation !== ServerMigrationOperation.Export) continue;
      if (!isInProgress(task) && task.updatedAtSeconds < oldestEndedSeconds) continue;
      if (!task.ranges.some((range) => overlaps(range, slots))) continue;
      chosen.push({ task, source });
    }
  }
  chosen.sort((a, b) => {
    const running = Number(isInProgress(b.task)) - Number(isInProgress(a.task));
    if (running !== 0) return running;
    return isInProgress(a.task)
      ? a.task.createdAtSeconds - b.task.createdAtSeconds
      : b.task.updatedAtSeconds - a.task.updatedAtSeconds;
  });
  return chosen.slice(0, options.limit ?? MAX_SERVER_TASKS).map(({ task, source }) => ({
    name: task.name,
    source,
    target:
      (task.targetNodeId === undefined ? undefined : targetAddresses.get(task.targetNodeId)) ??
      task.targetNodeId ??
      '',
    slots: formatSlotRanges(
      task.ranges.flatMap((range) =>
        Array.from({ length: range.end - range.start + 1 }, (_, offset) => range.start + offset),
      ),
    ),
    state: task.state,
    outcome: task.outcome,
    message: task.message,
  }));
}

function overlaps(
  range: { readonly start: number; readonly end: number },
  slots: ReadonlySet<number>,
): boolean {
  for (let slot = range.start; slot <= range.end; slot++) if (slots.has(slot)) return true;
  return false;
}

export interface ServerTasksDeps {
  /** The adapter of a configured cluster, or undefined when no cluster has that name. */
  readonly adapterFor: (cluster: string) => Pick<ClusterAdapter, 'serverMigrations'> | undefined;
}

const cachedTasks = new Map<string, { atMs: number; tasks: Promise<ServerTaskView[] | null> }>();

/**
 * The server tasks of the record's migration: [] for a keys-engine migration or one that has ended
 * (no read), null when a source does not answer.
 */
export function serverTasks(
  deps: ServerTasksDeps,
  record: Pick<MigrationRecord, 'id' | 'cluster' | 'engine' | 'state' | 'plan' | 'createdAt'>,
  nowMs = Date.now(),
): Promise<ServerTaskView[] | null> {
  if (record.engine !== MigrationEngine.Atomic || migrationHasEnded(record.state)) {
    return Promise.resolve([]);
  }
  for (const [id, entry] of cachedTasks) {
    if (nowMs - entry.atMs >= SERVER_TASKS_CACHE_MS) cachedTasks.delete(id);
  }
  const cached = cachedTasks.get(record.id);
  if (cached) return cached.tasks;
  const tasks = readServerTasks(deps, record);
  cachedTasks.set(record.id, { atMs: nowMs, tasks });
  return tasks;
}

async function readServerTasks(
  deps: ServerTasksDeps,
  record: Pick<MigrationRecord, 'cluster' | 'plan' | 'createdAt'>,
): Promise<ServerTaskView[] | null> {
  const adapter = deps.adapterFor(record.cluster);
  if (!adapter) return null;
  const sources = [...new Set(record.plan.map((group) => group.source))];
  try {
    const listed = await Promise.all(
      sources.map(async (source) => {
        const [host, port] = splitAddress(source);
        // undefined: the node has no atomic slot migration (any more), so it lists no task.
        return { source, tasks: (await adapter.serverMigrations({ host, port })) ?? [] };
      }),
    );
    return selectServerTasks(record.plan, listed, { createdAtMs: Date.parse(record.createdAt) });
  } catch {
    return null;
  }
}
