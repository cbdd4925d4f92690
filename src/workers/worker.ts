/**
 * A worker process: one BullMQ Worker per slot queue, sharing one set of per-node cluster
 * connections (so concurrent slots' commands to a node are pipelined), plus /metrics, /healthz and
 * /readyz.
 */
import { createServer, type Server, type ServerResponse } from 'node:http';
import { Queue, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { ClusterRegistry } from '../shared/cluster/registry.js';
import { type Config, describeEndpoint } from '../shared/config.js';
import { MigrationControl, type MigrationLimits } from '../shared/domain/migration.js';
import { parseSlotRanges } from '../shared/domain/slots.js';
import { ErrorCode, SlotfleetError } from '../shared/errors.js';
import type { Logger } from '../shared/logger.js';
import { createMetrics, type Metrics, startClusterSeries, trackControlRedis } from '../shared/metrics.js';
import {
  ConnectionRole,
  closeQueue,
  controlConnectionOptions,
  controlUnavailableReason,
} from '../shared/queue/connections.js';
import { finalizeJob, type SlotJobPolicy } from '../shared/queue/jobs.js';
import {
  type MigrationRuntime,
  MigrationStore,
  OpeningState,
  type PlanGroup,
} from '../shared/queue/migration-store.js';
import { type FinalizeJobData, QueueName, type SlotJobData } from '../shared/queue/names.js';
import { LeaseRole, NodeLeases } from '../shared/queue/node-leases.js';
import { PaceStore } from '../shared/queue/pace-store.js';
import { TokenBuckets } from '../shared/queue/token-bucket.js';
import { checkReadiness, type Readiness } from '../shared/readiness.js';
import type { AtomicRuntime } from './movers/atomic-mover.js';
import { ServerTasks } from './movers/server-tasks.js';
import { OpeningWatch } from './opening-watch.js';
import { Pacer } from './pacer.js';
import { createFinalizeProcessor, createMigrateProcessor, type ProcessorDeps } from './processors.js';
import type { OpenAhead, SlotRunDeps } from './slot-run.js';
import { type SweepTiming, startStrandedSlotSweep } from './stranded-slots.js';
import { createThrottle, drainLimits } from './throttle.js';

export interface WorkerHandle {
  readonly metrics: Metrics;
  /** Port /metrics, /healthz and /readyz listen on (0 when disabled). */
  readonly metricsPort: number;
  /**
   * Stops taking jobs; slot jobs in flight finish their current step or MIGRATE batches, then
   * hand their slot back to the queue (open but safe) for any worker; closes every connection.
   */
  close(): Promise<void>;
}

export interface WorkerOptions {
  /** Serve /metrics, /healthz and /readyz on config.worker.metricsHost:metricsPort. @defaultValue true */
  readonly serveMetrics?: boolean;
  readonly beforeAction?: ProcessorDeps['beforeAction'];
  /** The sweep for stranded slots' timing (stranded-slots.ts): tests shorten it. */
  readonly strandedSweep?: SweepTiming;
}

/** How long a worker trusts the pause/cancel state and the limits it read. */
const CONTROL_CACHE_MS = 250;
/** A slot job may be re-run after a crash as often as it takes: every step is idempotent. */
const MAX_STALLED_COUNT = 10;
/**
 * Engine atomic: how often a slot waiting for its server task asks the source (one GETSLOTMIGRATIONS
 * per source per poll for the whole process), and how long one attempt waits before it fails
 * retryable. Valkey advances a task in its cron (10 times a second at the default hz).
 */
const ATOMIC_POLL_MS = 50;
const ATOMIC_WAIT_MS = 300_000;
/**
 * Engine atomic: jobs of one process that may wait for server tasks beyond its concurrency. A waiting
 * job costs a promise and its job lock's renewal; one watch per task polls the source for all.
 */
const ATOMIC_WAITERS = 1_024;

export async function startWorker(
  config: Config,
  log: Logger,
  options: WorkerOptions = {},
): Promise<WorkerHandle> {
  const metrics = createMetrics();
  for (const cluster of Object.keys(config.clusters)) startClusterSeries(metrics, cluster);
  // Replaced by the real checks once the connections they use exist.
  let readiness = async (): Promise<Readiness> => ({ ready: false, checks: { worker: 'starting' } });
  // Bound before anything else is opened: a taken port then leaves nothing to clean up.
  const server =
    options.serveMetrics === false ? undefined : await serveMetrics(metrics, config, () => readiness());
  const bound = server?.address();
  const metricsPort = typeof bound === 'object' && bound ? bound.port : 0;

  const connection = controlConnectionOptions(config.control, ConnectionRole.Worker);
  // Auto-pipelined: the step and counter writes of dozens of concurrent slots leave in one write.
  const control = new Redis({ ...connection, enableAutoPipelining: true });
  const outage = watchControlConnection(control, config, log);
  trackControlRedis(metrics, control);
  // BullMQ's own connections fail alongside ours: one line per reconnect attempt says nothing new.
  const logError = (message: string, fields: object) => (error: Error) => {
    if (outage.isOngoing() && controlUnavailableReason(error) !== undefined) return;
    log.warn({ ...fields, err: error.message }, message);
  };
  const clusters = new ClusterRegistry(config, log);
  const store = new MigrationStore(control, config.queuePrefix);
  // Slot jobs ask for their migration's control and limits between batches: one read per migration
  // per CONTROL_CACHE_MS instead of one per batch.
  const runtimeCache = new Map<string, { runtime: Promise<MigrationRuntime>; at: number }>();
  const lastRuntime = new Map<string, MigrationRuntime>();
  // Set by close(): slot jobs then hand their slot back the way a pause does, at the end of their
  // current step or MIGRATE batches, instead of draining it to the end (which can take minutes).
  let handingBack = false;
  const runtimeOf = (migrationId: string): Promise<MigrationRuntime> => {
    const cached = runtimeCache.get(migrationId);
    if (cached && Date.now() - cached.at < CONTROL_CACHE_MS) return cached.runtime;
    const runtime = store.runtime(migrationId);
    runtimeCache.set(migrationId, { runtime, at: Date.now() });
    runtime.then(
      (value) => lastRuntime.set(migrationId, value),
      () => runtimeCache.delete(migrationId),
    );
    return runtime;
  };
  const controlOf = async (migrationId: string): Promise<MigrationControl> =>
    handingBack ? MigrationControl.Pause : (await runtimeOf(migrationId)).control;
  const limitsOf = async (migrationId: string): Promise<MigrationLimits> =>
    withDefaultBudget(drainLimits((await runtimeOf(migrationId)).limits, config.worker.batchKeys));
  const withDefaultBudget = (limits: MigrationLimits): MigrationLimits =>
    limits.maxClientLatencyMs !== undefined || config.worker.maxClientLatencyMs === 0
      ? limits
      : { ...limits, maxClientLatencyMs: config.worker.maxClientLatencyMs };
  const buckets = new TokenBuckets(control, config.queuePrefix);
  const throttling: Pick<SlotRunDeps, 'limitsOf' | 'throttle'> = {
    limitsOf,
    throttle: createThrottle({
      knownLimitsOf: (migrationId) => {
        const known = lastRuntime.get(migrationId);
        return known && withDefaultBudget(drainLimits(known.limits, config.worker.batchKeys));
      },
      limitsOf,
      isPaused: async (migrationId) => (await controlOf(migrationId)) === MigrationControl.Pause,
      take: (...args) => buckets.take(...args),
      metrics,
      log,
      batchBytes: config.worker.batchBytes,
    }),
  };
  const finalizeQueue = new Queue<FinalizeJobData>(QueueName.FinalizeSlot, {
    connection,
    prefix: config.queuePrefix,
  });
  finalizeQueue.on('error', logError('control Redis (finalize queue)', {}));
  // Read (and its completed jobs retried) by the sweep for slots stranded by lost writes.
  const migrateQueue = new Queue<SlotJobData>(QueueName.MigrateSlot, {
    connection,
    prefix: config.queuePrefix,
  });
  migrateQueue.on('error', logError('control Redis (migrate queue)', {}));
  const { maxSlotsPerSource, maxSlotsPerTarget } = config.worker;
  const nodeLeases =
    maxSlotsPerSource > 0 || maxSlotsPerTarget > 0
      ? new NodeLeases(
          control,
          config.queuePrefix,
          { perSource: maxSlotsPerSource, perTarget: maxSlotsPerTarget },
          { inFlight: metrics.nodeSlotsInFlight, attempts: metrics.leaseAttempts },
        )
      : undefined;
  const pacer = nodeLeases
    ? new Pacer({
        maxSlots: maxSlotsPerSource,
        maxBatches: config.worker.batchesInFlight,
        store: new PaceStore(control, config.queuePrefix),
        metrics,
        log,
        onFaster: (cluster, node) => nodeLeases.wakeNode(cluster, LeaseRole.Source, node.id),
      })
    : undefined;
  // A migrate job waiting for its node leases does not hold a unit of concurrency: the worker's
  // concurrency rises by one while it waits, so it fetches a job of a free node pair instead. At most
  // as many wait as run, so that one process does not hoard the queue's head.
  let waitingForLeases = 0;
  // Likewise a job of the atomic engine waiting for its server task, up to ATOMIC_WAITERS: the queue's
  // other jobs are fetched while the servers move the slots, and all complete when the task ends.
  let waitingForTasks = 0;
  const setMigrateConcurrency = () => {
    const { concurrency } = config.worker;
    migrateWorker.concurrency =
      concurrency + Math.min(waitingForLeases, concurrency) + Math.min(waitingForTasks, ATOMIC_WAITERS);
  };
  const taskWait = {
    onWait: () => {
      waitingForTasks++;
      setMigrateConcurrency();
    },
    onWaitEnd: () => {
      waitingForTasks--;
      setMigrateConcurrency();
    },
  };
  const leaseWait = {
    onWait: () => {
      waitingForLeases++;
      setMigrateConcurrency();
      metrics.slotsWaitingForLeases.inc();
    },
    onWaitEnd: () => {
      waitingForLeases--;
      setMigrateConcurrency();
      metrics.slotsWaitingForLeases.dec();
    },
  };
  // The atomic engine's state in this process: the tasks each source lists, the starts it gathers.
  const plans = new Map<string, Promise<readonly PlanGroup[]>>();
  const atomic: AtomicRuntime = {
    tasks: new ServerTasks({
      slotsPerTask: config.worker.atomicSlotsPerTask,
      tasksPerSource: config.worker.atomicTasksPerSource,
      tasksPerTarget: config.worker.atomicTasksPerTarget,
      pollMs: ATOMIC_POLL_MS,
      waitMs: ATOMIC_WAIT_MS,
    }),
    records: store,
    planOf: (migrationId) => {
      let plan = plans.get(migrationId);
      if (!plan) {
        plan = store.get(migrationId).then((record) => record?.plan ?? []);
        plan.catch(() => plans.delete(migrationId));
        plans.set(migrationId, plan);
      }
      return plan;
    },
  };
  // Keys engine: a pair's slots are opened in blocks of openTogether, in the plan's order: the job of
  // a block's first slot opens the rest of the block with it (slot-run.ts). Only the first slot of a
  // block opens others, so a pair has about one block open ahead of its drains, not the whole pair
  // (a cancel finishes every open slot, and clients meet ASK in each).
  const openTogether = config.worker.openSlotsTogether;
  const enqueueFinalize = finalizeBatcher(finalizeQueue, config.jobs);
  const openings = new OpeningWatch(store, log);
  const openAhead: OpenAhead | undefined =
    openTogether > 1
      ? {
          claim: async (data) => {
            const plan = await atomic.planOf(data.migrationId);
            const group = plan.find(
              (entry) => entry.sourceId === data.source.id && entry.targetId === data.target.id,
            );
            if (!group) return [];
            const pairSlots = parseSlotRanges(group.slots);
            const index = pairSlots.indexOf(data.slot);
            if (index < 0 || index % openTogether !== 0) return [];
            const block = pairSlots.slice(index + 1, index + openTogether);
            return store.claimForTask(data.migrationId, [], block, block.length);
          },
          release: async (data, slots) => {
            await store.openingsAnswered(data.migrationId, slots);
            openings.notify(data.migrationId, slots, OpeningState.Free);
          },
          renew: (data, slots) => store.renewOpenings(data.migrationId, slots),
          handOn: async (data, slots) => {
            // The finalize job first: a job that sees its slot handed on ends without adding one.
            await Promise.all(slots.map((slot) => enqueueFinalize({ ...data, slot })));
            await store.handOn(data.migrationId, slots);
            openings.notify(data.migrationId, slots, OpeningState.HandedOn);
          },
          settled: (data, onHeld) => openings.settled(data.migrationId, data.slot, onHeld),
        }
      : undefined;
  // limitsOf and throttle reach the engine through the processor's spread of its deps.
  const deps: ProcessorDeps & typeof throttling = {
    ...throttling,
    adapterFor: (cluster) => clusters.get(cluster),
    store,
    controlOf,
    enqueueFinalize,
    metrics,
    settings: config.worker,
    log,
    atomic,
    taskWait,
    ...(openAhead ? { openAhead } : {}),
    // Whatever this worker's own setting: another worker of the fleet may open slots ahead.
    openings: store,
    ...(options.beforeAction ? { beforeAction: options.beforeAction } : {}),
    ...(nodeLeases && pacer
      ? {
          nodeLeases,
          leaseWait,
          pacer,
          nodeCaps: { perSource: maxSlotsPerSource, perTarget: maxSlotsPerTarget },
        }
      : {}),
  };
  const workerOptions = {
    // Not auto-pipelined: ioredis builds a Pipeline per flush and copies every defined script onto it,
    // and BullMQ defines dozens, so each flush cost more CPU than the writes it saved (docs/performance.md).
    connection: { ...connection, enableAutoPipelining: false },
    prefix: config.queuePrefix,
    concurrency: config.worker.concurrency,
    maxStalledCount: MAX_STALLED_COUNT,
    // A worker that dies (SIGKILL, OOM, lost host) keeps its jobs until their lock runs out; the
    // stalled-job check of any other worker then puts them back in the queue.
    lockDuration: config.jobs.lockMs,
    stalledInterval: config.jobs.stalledCheckMs,
  };
  const migrateWorker: Worker<SlotJobData> = new Worker<SlotJobData>(
    QueueName.MigrateSlot,
    createMigrateProcessor(deps),
    workerOptions,
  );
  const workers = [
    migrateWorker,
    new Worker<FinalizeJobData>(QueueName.FinalizeSlot, createFinalizeProcessor(deps), workerOptions),
  ];
  for (const worker of workers) {
    worker.on('error', logError('worker error', { queue: worker.name }));
  }
  const probes = readinessProbes(control, clusters, config);
  readiness = cachedReadiness(async () => (handingBack ? STOPPING : checkReadiness(probes)));
  await Promise.all(workers.map((worker) => worker.waitUntilReady()));
  const strandedSweep = startStrandedSlotSweep(
    {
      control,
      store,
      migrateQueue,
      finalizeQueue,
      clusters: Object.keys(config.clusters),
      lockKey: `${config.queuePrefix}:stranded-sweep`,
      log,
      metrics,
    },
    options.strandedSweep,
  );

  log.info(
    {
      concurrency: config.worker.concurrency,
      batchKeys: config.worker.batchKeys,
      maxSlotsPerSource,
      maxSlotsPerTarget,
      maxClientLatencyMs: config.worker.maxClientLatencyMs,
      metricsPort,
    },
    'slotfleet worker ready',
  );

  let closing: Promise<void> | undefined;
  return {
    metrics,
    metricsPort,
    close() {
      closing ??= (async () => {
        handingBack = true;
        strandedSweep.stop();
        openings.close();
        log.info('stopping: no new slot jobs; those in flight hand their slot back after their batch');
        const closingWorkers = Promise.all(workers.map((worker) => closeQueue(worker)));
        // Jobs waiting for node leases hand their slot back at once (postponed, not failed).
        await nodeLeases?.close();
        await closingWorkers;
        await closeQueue(finalizeQueue);
        await closeQueue(migrateQueue);
        await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
        await clusters.close();
        await control.quit().catch(() => control.disconnect());
      })();
      return closing;
    },
  };
}

/**
 * How long a drained slot waits for others to be finalized with it. One finalize job assigns all of
 * them together: each node gets their SETSLOT NODE commands in one write and saves its cluster
 * config once, and the fleet runs one BullMQ job instead of one per slot. The migrate job waits
 * this long before it completes; its slot stays open but safe meanwhile.
 */
const FINALIZE_WINDOW_MS = 20;
/** Slots per finalize job at most. */
const FINALIZE_SLOTS_MAX = 128;

/**
 * The finalize batcher: slots drained within FINALIZE_WINDOW_MS go into one finalize-slot job per
 * migration, all added in one addBulk. Each caller gets its own promise: a migrate job completes only
 * once a finalizer holding its slot was added, so a crash in between re-runs the migrate job, which
 * finds its slot drained and asks again.
 */
function finalizeBatcher(
  queue: Queue<FinalizeJobData>,
  policy: SlotJobPolicy,
): (data: SlotJobData) => Promise<void> {
  interface Waiting {
    readonly data: SlotJobData;
    readonly settle: { resolve(): void; reject(error: unknown): void };
  }
  let pending: Waiting[] = [];
  let timer: NodeJS.Timeout | undefined;
  const flush = () => {
    clearTimeout(timer);
    timer = undefined;
    const batch = pending;
    pending = [];
    const byMigration = new Map<string, SlotJobData[]>();
    for (const { data } of batch) {
      const key = `${data.migrationId}\n${data.cluster}`;
      const slots = byMigration.get(key) ?? [];
      slots.push(data);
      byMigration.set(key, slots);
    }
    const jobs = [...byMigration.values()].flatMap((slots) => {
      const sorted = slots.sort((a, b) => a.slot - b.slot);
      const chunks: ReturnType<typeof finalizeJob>[] = [];
      for (let start = 0; start < sorted.length; start += FINALIZE_SLOTS_MAX) {
        const chunk = sorted.slice(start, start + FINALIZE_SLOTS_MAX);
        chunks.push(
          finalizeJob(
            { migrationId: chunk[0]!.migrationId, cluster: chunk[0]!.cluster, slots: chunk },
            policy,
          ),
        );
      }
      return chunks;
    });
    queue.addBulk(jobs).then(
      () => {
        for (const entry of batch) entry.settle.resolve();
      },
      (error: unknown) => {
        for (const entry of batch) entry.settle.reject(error);
      },
    );
  };
  return (data) =>
    new Promise<void>((resolve, reject) => {
      pending.push({ data, settle: { resolve, reject } });
      if (pending.length >= FINALIZE_SLOTS_MAX) flush();
      else timer ??= setTimeout(flush, FINALIZE_WINDOW_MS);
    });
}

/**
 * Says once when the control Redis goes away and once when it is back, instead of one line per
 * reconnect attempt. Nothing else is needed: worker connections have maxRetriesPerRequest: null and
 * an offline queue, so every command (step writes, lock renewals, job completions) waits for the
 * reconnect, and slot jobs in flight stop between two batches, their slot open but safe.
 */
function watchControlConnection(control: Redis, config: Config, log: Logger): { isOngoing(): boolean } {
  const address = describeEndpoint(config.control);
  let lostAt: number | undefined;
  let lastError: string | undefined;
  control.on('error', (error) => {
    if (lostAt === undefined) log.warn({ err: error.message }, 'control Redis connection');
    lastError = error.message;
  });
  // 'reconnecting', unlike 'close', is not emitted by our own quit() at shutdown.
  control.on('reconnecting', () => {
    if (lostAt !== undefined) return;
    lostAt = Date.now();
    log.warn(
      { control: address },
      'control Redis unreachable: slot jobs wait for it, their slots open but safe; reconnecting',
    );
  });
  control.on('ready', () => {
    if (lostAt === undefined) return;
    log.info(
      { control: address, outageMs: Date.now() - lostAt, lastError },
      'control Redis reachable again: slot jobs carry on',
    );
    lostAt = undefined;
    lastError = undefined;
  });
  return { isOngoing: () => lostAt !== undefined };
}

/** What the worker's HTTP port serves, GET only (the Kubernetes manifests' probes are checked against it). */
export const WorkerRoute = { Metrics: '/metrics', Health: '/healthz', Ready: '/readyz' } as const;

const STOPPING: Readiness = { ready: false, checks: { worker: 'stopping: takes no new slot jobs' } };

/** How long a readiness check waits for each PING. */
const READY_TIMEOUT_MS = 2_000;
/**
 * How long a readiness answer is reused (and a check in progress shared): probes from the kubelet, a
 * load balancer and a person with curl cost one PING per dependency per second at most.
 */
const READY_CACHE_MS = 1_000;

/**
 * /readyz's checks, on the worker's own connections: the control Redis, and every configured cluster
 * (its seed, or the first node the adapter has seen), each answering PING within READY_TIMEOUT_MS.
 * Every cluster, not any: a worker takes the slot jobs of all of them from one queue, so one that
 * cannot reach a cluster fails that cluster's jobs, each failure an attempt spent. The API's /readyz
 * means the same.
 */
function readinessProbes(
  control: Redis,
  clusters: ClusterRegistry,
  config: Config,
): Record<string, () => Promise<void>> {
  const controlName = `control Redis at ${describeEndpoint(config.control)}`;
  // Why the connection is down, until it is ready again: its commands would only wait, not fail.
  let lastError: Error | undefined;
  control.on('error', (error) => {
    lastError = error;
  });
  control.on('ready', () => {
    lastError = undefined;
  });
  const probes: Record<string, () => Promise<void>> = {
    control: async () => {
      // Worker connections wait for the control Redis forever: a PING sent while one reconnects would
      // only join the offline queue.
      if (control.status !== 'ready') {
        const reason = lastError && (controlUnavailableReason(lastError) ?? lastError.message);
        throw new Error(`${controlName} ${reason ?? 'is not connected'} (connection ${control.status})`);
      }
      const ping = control.ping().catch((error: Error) => {
        throw new Error(`${controlName} ${controlUnavailableReason(error) ?? error.message}`);
      });
      await withDeadline(ping, `${controlName} did not answer PING`);
    },
  };
  for (const name of Object.keys(config.clusters)) {
    probes[`cluster:${name}`] = async () => {
      // The adapter's errors name the node and never the credentials (cluster/error-map.ts).
      await withDeadline(clusters.get(name).ping(), `cluster ${name} did not answer PING`);
    };
  }
  return probes;
}

/** One check at a time, its answer reused for READY_CACHE_MS after it settles. */
function cachedReadiness(check: () => Promise<Readiness>): () => Promise<Readiness> {
  let answer: Promise<Readiness> | undefined;
  /** When `answer` settled; undefined while it is in progress. */
  let answeredAt: number | undefined;
  return () => {
    if (answer && (answeredAt === undefined || Date.now() - answeredAt < READY_CACHE_MS)) return answer;
    answeredAt = undefined;
    const current = check().finally(() => {
      if (answer === current) answeredAt = Date.now();
    });
    answer = current;
    return current;
  };
}

function withDeadline<T>(promise: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} within ${READY_TIMEOUT_MS} ms`)), READY_TIMEOUT_MS);
  });
  // A check that fails after its deadline is no longer awaited: not an unhandled rejection.
  promise.catch(() => undefined);
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

/** listen() errors that mean the address, not the port, is wrong. */
const HOST_ERRORS = new Set(['EADDRNOTAVAIL', 'ENOTFOUND', 'EAI_AGAIN', 'EAI_NONAME', 'EAFNOSUPPORT']);

/**
 * GET /metrics, /healthz and /readyz on config.worker.metricsHost:metricsPort (SLOTFLEET_METRICS_HOST,
 * by default the API's address). /healthz is 200 while the process runs; /readyz is 200 when every
 * readiness check passes, else 503 with each check's answer. Neither shows a credential.
 */
async function serveMetrics(
  metrics: Metrics,
  config: Config,
  readiness: () => Promise<Readiness>,
): Promise<Server> {
  const json = (response: ServerResponse, status: number, body: object) =>
    response
      .writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' })
      .end(JSON.stringify(body));
  const server = createServer((request, response) => {
    const path = request.method === 'GET' ? request.url?.split('?')[0] : undefined;
    switch (path) {
      case WorkerRoute.Metrics:
        metrics.registry.metrics().then(
          (text) => response.writeHead(200, { 'content-type': metrics.registry.contentType }).end(text),
          () => response.writeHead(500).end(),
        );
        return;
      case WorkerRoute.Health:
        json(response, 200, { status: 'ok' });
        return;
      case WorkerRoute.Ready:
        readiness().then(
          ({ ready, checks }) =>
            json(response, ready ? 200 : 503, { status: ready ? 'ready' : 'not ready', checks }),
          () => response.writeHead(500).end(),
        );
        return;
      default:
        response.writeHead(404).end();
    }
  });
  const { metricsPort, metricsHost } = config.worker;
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(metricsPort, metricsHost, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? '';
    const where = `${metricsHost.includes(':') ? `[${metricsHost}]` : metricsHost}:${metricsPort}`;
    const [variable, hint] = HOST_ERRORS.has(code)
      ? [
          'SLOTFLEET_METRICS_HOST',
          'give an address of this machine (default: SLOTFLEET_API_HOST), or 0.0.0.0 for all of them',
        ]
      : ['SLOTFLEET_METRICS_PORT', 'give each worker on one host its own port, or 0 for any free one'];
    throw new SlotfleetError(
      ErrorCode.Config,
      `${variable}: cannot serve /metrics on ${where} (${(error as Error).message}); ${hint}`,
      { cause: error },
    );
  }
  return server;
}
