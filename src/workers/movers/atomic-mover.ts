/**
 * The atomic engine: the servers move whole slots themselves (Valkey 9 CLUSTER MIGRATESLOTS, see
 * src/shared/domain/server-migrations.ts), and the fleet plans, groups, paces, watches and records.
 * One BullMQ job per slot stays the unit of work and record:
 *   migrate  - the slot goes into a server task (a new one with the other slots of its source ->
 *              target pair, see server-tasks.ts), unless one holds it already or it has moved; the
 *              job waits until the slot has moved (the source itself says the target owns it) and
 *              records it done with the keys its source held when the task started. There is no
 *              finalize job: a finalize batch's per-slot wait for its window cost each job ~20 ms,
 *              most of a rebalance's time once the servers had moved everything in one task per pair.
 *              A slot whose task failed or was cancelled (the server rolled it back) gets a new task;
 *              when the attempt has already started one, it fails retryable, naming the message.
 * Every step reads where the slot is from the cluster (owner, tasks listed by the source): a worker
 * that dies mid-task leaves the task running on the servers, and the next one adopts it by seeing
 * it in the list; nothing is started twice, because the server refuses a slot another task holds.
 *   pause  - no new task starts; tasks in progress finish (a server task cannot be held).
 *   cancel - CLUSTER CANCELSLOTMIGRATIONS on the source when every task it exports belongs to this
 *            migration (it cancels them all); slots that moved before are done, the others cancelled.
 * Ownership changes hands inside the servers, atomically: there is no SETSLOT NODE to send, and no
 * slot is ever open by hand.
 */
import type { ClusterPort } from '../../shared/cluster/port.js';
import { MigrationControl, MigrationEngine } from '../../shared/domain/migration.js';
import {
  describeServerMigration,
  isInProgress,
  lastEndedTask,
  type ServerMigration,
  ServerMigrationOperation,
  ServerMigrationOutcome,
  taskHolding,
} from '../../shared/domain/server-migrations.js';
import { SlotStep } from '../../shared/domain/slot-migration.js';
import { parseSlotRanges } from '../../shared/domain/slots.js';
import { nodeAddress } from '../../shared/domain/topology.js';
import { ErrorCode, errorCodeOf, SlotfleetError } from '../../shared/errors.js';
import {
  type PlanGroup,
  type ServerTaskRecords,
  TASK_CLAIM_GRACE_MS,
} from '../../shared/queue/migration-store.js';
import type { SlotJobData } from '../../shared/queue/names.js';
import { PauseRequested } from '../drain.js';
import type { SlotRunDeps, SlotRunResult } from '../slot-run.js';
import { type ServerTasks, StartOutcome } from './server-tasks.js';
import type { CancelOutcome, SlotMover } from './slot-mover.js';

/** What the atomic engine needs besides a slot run's deps; one per worker process. */
export interface AtomicRuntime {
  readonly tasks: ServerTasks;
  readonly records: ServerTaskRecords;
  /** The migration's plan (cached: it never changes). */
  readonly planOf: (migrationId: string) => Promise<readonly PlanGroup[]>;
}

export type AtomicDeps = SlotRunDeps & {
  readonly atomic?: AtomicRuntime;
  /** The operator's wish for the migration now (a short cache); absent: run. */
  readonly controlNow?: () => Promise<MigrationControl>;
  /**
   * Told when the job starts and stops waiting for a server task: the worker then lets it not count
   * against its concurrency, so that the queue's other jobs are fetched while the servers work, and
   * complete together when the task ends (worker.ts).
   */
  readonly taskWait?: { onWait(): void; onWaitEnd(): void };
};

/** Where the slot is, as its source says. */
type SlotPosition =
  | { readonly kind: 'moved' }
  | { readonly kind: 'held'; readonly task: ServerMigration }
  | { readonly kind: 'free'; readonly lastEnded: ServerMigration | undefined };

export const atomicMover: SlotMover = {
  engine: MigrationEngine.Atomic,
  // Both phases wait for the slot to move: the migrate job ends it done, with no finalize job to add
  // (a finalize job of this engine, from an older worker, does the same).
  moveSlot: (data, _phase, deps) => awaitMoved(data, deps, runtimeOf(deps)),
  onCancel: (data, deps) => cancelSlot(data, deps, runtimeOf(deps)),
};

function runtimeOf(deps: AtomicDeps): AtomicRuntime {
  if (!deps.atomic) throw new Error('the atomic engine needs its runtime (ProcessorDeps.atomic)');
  return deps.atomic;
}

/** The slot's source and target as they are now: a failover replaces one by its promoted replica. */
interface Ends {
  data: SlotJobData;
}

/** Successors adopted in one observation at most (a source and a target both failing over). */
const MAX_ADOPTIONS = 2;

/**
 * Where the slot is. A source or target that became a replica (a failover: Valkey fails the task,
 * and the source keeps the slot) is replaced by the master it now follows, and the slot looked at
 * again there.
 */
async function positionOf(
  ends: Ends,
  deps: AtomicDeps,
  runtime: AtomicRuntime,
  maxAgeMs: number,
): Promise<SlotPosition> {
  for (let adoptions = 0; ; adoptions++) {
    try {
      return await positionAt(ends.data, deps, runtime, maxAgeMs);
    } catch (error) {
      if (adoptions >= MAX_ADOPTIONS || !(await adoptSuccessors(ends, deps))) throw error;
    }
  }
}

async function adoptSuccessors(ends: Ends, deps: AtomicDeps): Promise<boolean> {
  let adopted = false;
  for (const role of ['source', 'target'] as const) {
    const node = ends.data[role];
    const view = await deps.cluster.readSlotView(node, ends.data.slot).catch(() => undefined);
    if (!view || view.myselfIsMaster || !view.myselfMasterId) continue;
    const successor = view.masters.find((master) => master.id === view.myselfMasterId);
    if (!successor) continue;
    deps.log.warn(
      { role, from: nodeAddress(node), to: nodeAddress(successor) },
      "the slot's node is a replica now: its master takes its place",
    );
    ends.data = { ...ends.data, [role]: { id: successor.id, host: successor.host, port: successor.port } };
    adopted = true;
  }
  return adopted;
}

async function positionAt(
  data: SlotJobData,
  deps: AtomicDeps,
  runtime: AtomicRuntime,
  maxAgeMs: number,
): Promise<SlotPosition> {
  const { cluster } = deps;
  // The source's list first: most slots are in a task, and then the slot's view (a scan of a CLUSTER
  // NODES text that lists thousands of ranges mid-rebalance) is not needed.
  const tasks = await runtime.tasks.list(cluster, data.cluster, data.source, maxAgeMs);
  const task = taskHolding(
    tasks.filter((entry) => entry.operation === ServerMigrationOperation.Export),
    data.slot,
  );
  if (task) {
    if (task.targetNodeId !== undefined && task.targetNodeId !== data.target.id) {
      throw new SlotfleetError(
        ErrorCode.SlotConflict,
        `slot ${data.slot} is held by another ${describeServerMigration(task)}, not towards ${data.target.id}`,
      );
    }
    return { kind: 'held', task };
  }
  const view = await cluster.readSlotView(data.source, data.slot);
  if (view.owner === data.target.id) return { kind: 'moved' };
  if (view.owner !== data.source.id) {
    // Gossip may lag on the source: the target's own word settles a finished move.
    const targetView = await cluster.readSlotView(data.target, data.slot);
    if (targetView.owner === data.target.id) return { kind: 'moved' };
    throw new SlotfleetError(
      ErrorCode.OwnerChanged,
      `slot ${data.slot} is owned by ${view.owner ?? 'nobody'}, neither its source ${data.source.id} nor its target`,
    );
  }
  return { kind: 'free', lastEnded: lastEndedTask(tasks, data.slot) };
}

/** How a start request of this slot reads the migration: `planned` is the job's data as enqueued. */
function startContext(planned: SlotJobData, deps: AtomicDeps, runtime: AtomicRuntime) {
  const data = planned;
  return {
    cluster: deps.cluster,
    records: runtime.records,
    log: deps.log,
    // The plan's pair, by the planned ids: after a failover the adopted ends are not in the plan.
    pairSlots: async () => {
      const plan = await runtime.planOf(data.migrationId);
      const group = plan.find(
        (entry) => entry.sourceId === data.source.id && entry.targetId === data.target.id,
      );
      return group ? parseSlotRanges(group.slots) : [data.slot];
    },
    limits: async () => (await deps.limitsOf?.(data.migrationId)) ?? {},
    mayStart: async () => ((await deps.controlNow?.()) ?? MigrationControl.Run) === MigrationControl.Run,
    ...(deps.throttle ? { throttle: (keys: number) => deps.throttle!(data, { keys, bytes: 0 }) } : {}),
  };
}

/** Waits until the slot has moved, starting a task for it when none holds it; records it done. */
async function awaitMoved(
  data: SlotJobData,
  deps: AtomicDeps,
  runtime: AtomicRuntime,
): Promise<SlotRunResult> {
  const { pollMs, waitMs } = runtime.tasks.settings;
  let deadline = Date.now() + waitMs;
  const attemptStartedSeconds = Math.floor(Date.now() / 1000);
  let startedHere = false;
  const ends: Ends = { data };
  for (;;) {
    const position = await positionOf(ends, deps, runtime, pollMs);
    if (position.kind === 'moved') {
      const [keysMoved = 0] = await runtime.records.taskKeys(data.migrationId, [data.slot]);
      await deps.store.setSlotStep(data.migrationId, data.cluster, data.slot, SlotStep.Done, keysMoved);
      return { keysMoved, step: SlotStep.Done };
    }
    if (position.kind === 'free') {
      const failed = position.lastEnded;
      if (
        startedHere &&
        failed &&
        failed.outcome !== ServerMigrationOutcome.Succeeded &&
        failed.updatedAtSeconds >= attemptStartedSeconds
      ) {
        throw new SlotfleetError(
          ErrorCode.ServerMigrationFailed,
          `slot ${data.slot}: ${describeServerMigration(failed)}`,
        );
      }
      // Paused or cancelled: the job is postponed, and a cancel is then decided by cancelSlot.
      if (((await deps.controlNow?.()) ?? MigrationControl.Run) !== MigrationControl.Run) {
        throw new PauseRequested();
      }
      // A task to a target that became a replica fails in its handshake: start towards its master.
      if (await adoptSuccessors(ends, deps)) continue;
      const outcome = await runtime.tasks.requestStart(ends.data, startContext(data, deps, runtime));
      if (outcome === StartOutcome.Started) startedHere = true;
    }
    // A big task may outlast the wait: while the source still reports it moving, wait on.
    if (Date.now() > deadline && position.kind === 'held' && isAlive(position.task)) {
      deadline = Date.now() + waitMs;
    }
    if (Date.now() > deadline) {
      const what = position.kind === 'held' ? describeServerMigration(position.task) : 'no task could start';
      throw new SlotfleetError(
        ErrorCode.NotConverged,
        `slot ${data.slot} has not moved after ${waitMs} ms: ${what}`,
      );
    }
    // Held: wait for its task. Free but busy: wait for the task that blocks its pair's start.
    const awaited =
      position.kind === 'held'
        ? { node: ends.data.source, name: position.task.name }
        : runtime.tasks.blockerOf(ends.data);
    if (awaited) {
      deps.taskWait?.onWait();
      try {
        await runtime.tasks.untilEnded(deps.cluster, data.cluster, awaited.node, awaited.name, deadline);
      } finally {
        deps.taskWait?.onWaitEnd();
      }
    } else await sleep(pollMs);
  }
}

/**
 * How recently a task in progress must have changed state or been acknowledged by its other end for
 * a waiter to go on waiting (Valkey itself fails a task whose acks stop for its repl-timeout).
 */
const TASK_ALIVE_SECONDS = 60;

function isAlive(task: ServerMigration): boolean {
  return Date.now() / 1000 - Math.max(task.updatedAtSeconds, task.ackedAtSeconds ?? 0) < TASK_ALIVE_SECONDS;
}

/**
 * The operator cancelled. A slot in no task is dropped; one that moved is finished (done); one in
 * a task of this migration's gets the source's tasks cancelled, when they are all this migration's
 * (CANCELSLOTMIGRATIONS cancels every task of the source), and is then dropped or finished by what
 * the server did first.
 */
async function cancelSlot(
  data: SlotJobData,
  deps: AtomicDeps,
  runtime: AtomicRuntime,
): Promise<CancelOutcome> {
  const { pollMs, waitMs } = runtime.tasks.settings;
  const ends: Ends = { data };
  let position = await positionOf(ends, deps, runtime, 0);
  if (position.kind === 'moved') return 'finish';
  if (position.kind === 'free') {
    // Pending: no task will take it (claims refuse a cancelled migration). Claimed: its starter may
    // be about to send MIGRATESLOTS; give it the time to, then look again.
    if ((await runtime.records.stepOf(data.migrationId, data.slot)) !== SlotStep.Migrating)
      return 'cancelled';
    // As long as a start is left to its claimer (TASK_CLAIM_GRACE_MS): longer than a start takes
    // from claim to MIGRATESLOTS, under load.
    const graceEnd = Date.now() + TASK_CLAIM_GRACE_MS;
    while (position.kind === 'free' && Date.now() < graceEnd) {
      await sleep(pollMs);
      position = await positionOf(ends, deps, runtime, pollMs);
    }
    if (position.kind === 'moved') return 'finish';
    if (position.kind === 'free') return 'cancelled';
  }
  await cancelOwnTasks(ends.data, deps, runtime);
  const deadline = Date.now() + waitMs;
  while (position.kind === 'held' && Date.now() <= deadline) {
    await sleep(pollMs);
    position = await positionOf(ends, deps, runtime, pollMs);
  }
  if (position.kind === 'held') {
    throw new SlotfleetError(
      ErrorCode.NotConverged,
      `cancel: ${describeServerMigration(position.task)} still runs`,
    );
  }
  return position.kind === 'moved' ? 'finish' : 'cancelled';
}

async function cancelOwnTasks(data: SlotJobData, deps: AtomicDeps, runtime: AtomicRuntime): Promise<void> {
  const cluster: ClusterPort = deps.cluster;
  const tasks = await runtime.tasks.list(cluster, data.cluster, data.source, 0);
  const plan = await runtime.planOf(data.migrationId);
  const ours = new Set(
    plan
      .filter((group) => group.sourceId === data.source.id)
      .flatMap((group) => parseSlotRanges(group.slots)),
  );
  const exporting = tasks.filter(
    (task) => task.operation === ServerMigrationOperation.Export && isInProgress(task),
  );
  const foreign = exporting.filter((task) =>
    task.ranges.some((range) => {
      for (let slot = range.start; slot <= range.end; slot++) if (!ours.has(slot)) return true;
      return false;
    }),
  );
  if (foreign.length > 0) {
    deps.log.warn(
      { foreign: foreign.map(describeServerMigration) },
      'cancel: the source also exports for someone else; its tasks are left to finish',
    );
    return;
  }
  if (exporting.length === 0) return;
  try {
    await cluster.cancelServerMigrations(
      data.source,
      exporting.map((task) => task.name),
    );
    deps.log.info({ tasks: exporting.length }, 'cancel: server tasks of the source cancelled');
  } catch (error) {
    // Another worker's cancel got there first: nothing to do.
    if (errorCodeOf(error) !== ErrorCode.NoServerMigration) throw error;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
