/**
 * The server tasks of the atomic engine, as one worker process sees them: what each source lists
 * (CLUSTER GETSLOTMIGRATIONS, read at most once per poll per node however many slots ask), and the
 * starting of tasks. Slots of one source that ask to start within a few milliseconds of each other
 * (the migrate jobs running at once, a finalize batch) go into one task, together with the pair's
 * slots no job has started yet, so a rebalance makes a handful of tasks, not one per slot.
 *
 * Bounds, per source: at most `tasksPerSource` tasks in progress (read from the source itself, so
 * the bound holds across processes except for two that start in the same instant: Valkey then runs
 * the second snapshot after the first, one fork at a time), and at most `slotsPerTask` slots per task,
 * fewer when a keys budget says so.
 */
import type { ClusterPort, NodeAddress } from '../../shared/cluster/port.js';
import type { MigrationLimits } from '../../shared/domain/migration.js';
import {
  isInProgress,
  type ServerMigration,
  ServerMigrationOperation,
  taskHolding,
} from '../../shared/domain/server-migrations.js';
import { formatSlotRanges } from '../../shared/domain/slots.js';
import { nodeAddress } from '../../shared/domain/topology.js';
import { ErrorCode, SlotfleetError } from '../../shared/errors.js';
import type { Logger } from '../../shared/logger.js';
import type { ServerTaskRecords } from '../../shared/queue/migration-store.js';
import type { SlotJobData } from '../../shared/queue/names.js';

export interface AtomicSettings {
  /** Slots in one server task at most. @defaultValue DEFAULTS.atomicSlotsPerTask */
  readonly slotsPerTask: number;
  /** Server tasks in progress per source node at most. @defaultValue DEFAULTS.atomicTasksPerSource */
  readonly tasksPerSource: number;
  /**
   * Server tasks in progress per target node at most (read from the target's imports). @defaultValue
   * DEFAULTS.atomicTasksPerTarget
   */
  readonly tasksPerTarget: number;
  /** How often a slot waiting for its task looks again (ms). */
  readonly pollMs: number;
  /** How long one attempt waits for its slot's task before it fails (retryable) (ms). */
  readonly waitMs: number;
}

/** The keys of one slot on its source when its task started (what "keys moved" will say). */
export type KeysBySlot = ReadonlyMap<number, number>;

/** What a start request learns: in a task now, or not (the source is at its bound of tasks). */
export const StartOutcome = { Started: 'started', Busy: 'busy' } as const;
export type StartOutcome = (typeof StartOutcome)[keyof typeof StartOutcome];

interface PendingStart {
  readonly data: SlotJobData;
  readonly resolve: (outcome: StartOutcome) => void;
  readonly reject: (error: unknown) => void;
}

export interface StartContext {
  readonly cluster: ClusterPort;
  readonly records: ServerTaskRecords;
  readonly log: Logger;
  /** The slots the migration plans to move from this source to this target (all of them). */
  readonly pairSlots: () => Promise<readonly number[]>;
  readonly limits: () => Promise<MigrationLimits>;
  /** False once the operator paused or cancelled: asked again just before a task starts. */
  readonly mayStart: () => Promise<boolean>;
  /** Told of each task's keys before it starts; resolves when the keys/s limits allow it. */
  readonly throttle?: (keys: number) => Promise<void>;
}

/** How long start requests gather before one task takes them all. */
const GATHER_MS = 5;

export class ServerTasks {
  private readonly lists = new Map<string, { atMs: number; list: Promise<readonly ServerMigration[]> }>();
  private readonly gathering = new Map<string, PendingStart[]>();
  private readonly watches = new Map<string, Promise<void>>();
  /** The task that kept a pair's last start from happening (its source's or its target's). */
  private readonly blockers = new Map<string, { node: NodeAddress; name: string }>();

  /** What a busy start of this slot's pair waits for, if known. */
  blockerOf(data: SlotJobData): { node: NodeAddress; name: string } | undefined {
    return this.blockers.get(pairKeyOf(data));
  }
  /** One start at a time per source in this process: the next one reads what the last started. */
  private readonly startChains = new Map<string, Promise<void>>();

  constructor(readonly settings: AtomicSettings) {}

  /** The tasks the node lists, no older than maxAgeMs; refuses a server without atomic migration. */
  async list(cluster: ClusterPort, clusterName: string, node: NodeAddress, maxAgeMs: number) {
    const key = `${clusterName}/${nodeAddress(node)}`;
    const cached = this.lists.get(key);
    const nowMs = Date.now();
    if (cached && nowMs - cached.atMs <= maxAgeMs) return cached.list;
    const list = cluster.serverMigrations(node).then((migrations) => {
      if (migrations === undefined) {
        throw new SlotfleetError(
          ErrorCode.AtomicUnsupported,
          `${nodeAddress(node)} has no atomic slot migration (CLUSTER MIGRATESLOTS, Valkey 9+): run the migration with engine keys or auto`,
        );
      }
      return migrations;
    });
    this.lists.set(key, { atMs: nowMs, list });
    list.catch(() => {
      if (this.lists.get(key)?.list === list) this.lists.delete(key);
    });
    return list;
  }

  /**
   * Resolves once the node no longer lists this task in progress (ended, or gone), or at the
   * deadline: every slot of a task waits on the same shared reads of the list.
   */
  async untilEnded(
    cluster: ClusterPort,
    clusterName: string,
    node: NodeAddress,
    name: string,
    deadlineMs: number,
  ): Promise<void> {
    // One watch per task for the whole process, however many of its slots' jobs wait on it.
    const key = `${clusterName}/${nodeAddress(node)}/${name}`;
    let watch = this.watches.get(key);
    if (!watch) {
      watch = (async () => {
        while (Date.now() < deadlineMs) {
          await new Promise((resolve) => setTimeout(resolve, this.settings.pollMs));
          const tasks = await this.list(cluster, clusterName, node, this.settings.pollMs);
          if (!tasks.some((task) => task.name === name && isInProgress(task))) return;
        }
      })().finally(() => this.watches.delete(key));
      this.watches.set(key, watch);
    }
    await watch;
  }

  /**
   * Puts the slot in a new server task with the others asking now and the pair's pending slots.
   * Resolves Busy when the source already runs its bound of tasks: ask again once one ended.
   */
  requestStart(data: SlotJobData, context: StartContext): Promise<StartOutcome> {
    const key = pairKeyOf(data);
    return new Promise<StartOutcome>((resolve, reject) => {
      const waiting = this.gathering.get(key);
      if (waiting) {
        waiting.push({ data, resolve, reject });
        return;
      }
      const requests: PendingStart[] = [{ data, resolve, reject }];
      this.gathering.set(key, requests);
      setTimeout(() => {
        this.gathering.delete(key);
        const sourceKey = `${data.cluster}/${nodeAddress(data.source)}`;
        const previous = this.startChains.get(sourceKey) ?? Promise.resolve();
        const next = previous.then(() => this.start(requests, context));
        const settled = next.catch(() => undefined);
        this.startChains.set(sourceKey, settled);
        void settled.then(() => {
          if (this.startChains.get(sourceKey) === settled) this.startChains.delete(sourceKey);
        });
      }, GATHER_MS);
    });
  }

  private async start(requests: readonly PendingStart[], context: StartContext): Promise<void> {
    const { data } = requests[0]!;
    const { cluster, records, log } = context;
    try {
      const tasks = await this.list(cluster, data.cluster, data.source, 0);
      const exporting = tasks.filter(
        (task) => task.operation === ServerMigrationOperation.Export && isInProgress(task),
      );
      // A slot some task took meanwhile needs no start.
      const own = requests.map((request) => request.data.slot).filter((slot) => !taskHolding(tasks, slot));
      if (own.length === 0) {
        for (const request of requests) request.resolve(StartOutcome.Started);
        return;
      }
      const pairKey = pairKeyOf(data);
      if (exporting.length >= this.settings.tasksPerSource) {
        this.blockers.set(pairKey, { node: data.source, name: exporting[0]!.name });
        for (const request of requests) request.resolve(StartOutcome.Busy);
        return;
      }
      // One source at a time into a target: a task stalls its source at hand-over, and three of them
      // handing over at once on shared cores stalled each for twice as long (docs/performance.md).
      const importing = (await this.list(cluster, data.cluster, data.target, this.settings.pollMs)).filter(
        (task) => task.operation === ServerMigrationOperation.Import && isInProgress(task),
      );
      if (importing.length >= this.settings.tasksPerTarget) {
        this.blockers.set(pairKey, { node: data.target, name: importing[0]!.name });
        for (const request of requests) request.resolve(StartOutcome.Busy);
        return;
      }
      this.blockers.delete(pairKey);
      const pairSlots = await context.pairSlots();
      const candidates = pairSlots.filter((slot) => !taskHolding(tasks, slot));
      const claimed = await records.claimForTask(
        data.migrationId,
        own,
        candidates,
        this.settings.slotsPerTask,
      );
      // Only slots the source still owns: one moved already (its record lagging) must not be offered.
      const owners = await Promise.all(
        claimed.map(async (slot) => (await cluster.readSlotView(data.source, slot)).owner),
      );
      const movable = claimed.filter((_, index) => owners[index] === data.source.id);
      if (movable.length === 0) {
        // Nothing claimed (the migration is paused or cancelled), or all moved meanwhile: the asking
        // jobs look again.
        for (const request of requests) request.resolve(StartOutcome.Busy);
        return;
      }
      const counts = await Promise.all(movable.map((slot) => cluster.countKeysInSlot(data.source, slot)));
      const slots = await this.withinBudget(movable, counts, context);
      if (slots.length < claimed.length) {
        const kept = new Set(slots);
        await records.releaseClaims(
          data.migrationId,
          claimed.filter((slot) => !kept.has(slot)),
        );
      }
      const keys = new Map(slots.map((slot) => [slot, counts[movable.indexOf(slot)]!]));
      const total = [...keys.values()].reduce((sum, count) => sum + count, 0);
      await context.throttle?.(total);
      // The claim refused a paused or cancelled migration, but it may have changed since: a cancel
      // gives a claimed slot a grace period to show up in a task (atomic-mover.ts), this check closes
      // the rest of the window.
      if (!(await context.mayStart())) {
        await records.releaseClaims(data.migrationId, claimed);
        log.info({ slots: slots.length }, 'server task not started: the migration was paused or cancelled');
        for (const request of requests) request.resolve(StartOutcome.Busy);
        return;
      }
      await records.recordTaskKeys(data.migrationId, keys);
      await cluster.startServerMigration(data.source, data.target, slots);
      this.lists.delete(`${data.cluster}/${nodeAddress(data.source)}`);
      log.info(
        {
          slots: formatSlotRanges(slots),
          slotCount: slots.length,
          keys: total,
          asked: own.length,
          source: nodeAddress(data.source),
          target: nodeAddress(data.target),
        },
        'server task started',
      );
      // A request whose slot did not fit this task asks again (its job polls).
      for (const request of requests) {
        request.resolve(keys.has(request.data.slot) ? StartOutcome.Started : StartOutcome.Busy);
      }
    } catch (error) {
      for (const request of requests) request.reject(error);
    }
  }

  /**
   * Under a keys/s limit a task holds at most a second's worth of keys (at least one slot), and the
   * throttle spaces the tasks. The client-latency budget does not size tasks: every task stalls its
   * source once, when it hands over, for far longer than any budget (about 150-200 ms measured for
   * 18,000 to 83,000 keys on Valkey 9.1, and still about 30 ms for 1,800), so smaller tasks only
   * mean more stalls (docs/performance.md, "Valkey 9": a rebalance cut to 20,000-key tasks had a
   * client p99 of 121 ms, against 14.5 ms with one task per pair).
   */
  private async withinBudget(
    slots: readonly number[],
    counts: readonly number[],
    context: StartContext,
  ): Promise<number[]> {
    const { maxKeysPerSecond } = await context.limits();
    if (maxKeysPerSecond === undefined) return [...slots];
    const kept: number[] = [];
    let keys = 0;
    for (const [index, slot] of slots.entries()) {
      const count = counts[index]!;
      if (kept.length > 0 && keys + count > maxKeysPerSecond) break;
      kept.push(slot);
      keys += count;
    }
    return kept;
  }
}

function pairKeyOf(data: SlotJobData): string {
  return `${data.migrationId}/${data.cluster}/${nodeAddress(data.source)}>${data.target.id}`;
}
