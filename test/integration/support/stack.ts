/**
 * A whole slotfleet stack on real servers for one test file: a control Redis, a Redis Cluster with
 * replicas, the API (in-process, driven with app.inject) and workers. Everything started here is
 * stopped by stop(), which also checks that no server it started is left running. The servers are the
 * vitest project's (support/servers.ts), and start checks they say so.
 */
import { Queue } from 'bullmq';
import { expect, inject } from 'vitest';
import type { MigrationView } from '../../../src/cli/migration-view.js';
import { pollMigration } from '../../../src/cli/progress.js';
import { createApi } from '../../../src/producer/server.js';
import {
  type ControlRedisOptions,
  describeServer,
  SandboxCluster,
  type SandboxClusterOptions,
  startControlRedis,
} from '../../../src/sandbox/index.js';
import type { RedisProcess } from '../../../src/sandbox/redis-process.js';
import { type Config, loadConfig } from '../../../src/shared/config.js';
import { parseSlotRanges } from '../../../src/shared/domain/slots.js';
import { type NodeView, ownerOf, parseClusterNodes } from '../../../src/shared/domain/topology.js';
import type { Logger } from '../../../src/shared/logger.js';
import { ConnectionRole, controlConnectionOptions } from '../../../src/shared/queue/connections.js';
import { QueueName } from '../../../src/shared/queue/names.js';
import { startWorker, type WorkerHandle, type WorkerOptions } from '../../../src/workers/worker.js';
import { capturedLogger, isAlive } from './processes.js';

export interface StackOptions {
  readonly masters?: number;
  readonly replicasPerMaster?: number;
  readonly workers?: number;
  /** Cluster credentials: `requirepass`, or ACL users with the default user off. */
  readonly clusterAccess?: Pick<SandboxClusterOptions, 'password' | 'aclUser' | 'extraAclUsers'>;
  /** Control Redis credentials. */
  readonly controlAccess?: ControlRedisOptions;
  /** SLOTFLEET_* overrides; a function when they depend on the servers (ports, URLs). */
  readonly env?:
    | Record<string, string>
    | ((servers: { cluster: SandboxCluster; control: RedisProcess }) => Record<string, string>);
  readonly workerOptions?: WorkerOptions;
  /** requirepass of the control Redis. @defaultValue none */
  readonly controlPassword?: string;
}

export interface Stack {
  readonly control: RedisProcess;
  readonly cluster: SandboxCluster;
  readonly config: Config;
  readonly env: Record<string, string>;
  readonly log: Logger;
  /** Every log line of the in-process API and workers, as JSON text. */
  readonly logLines: string[];
  readonly api: ReturnType<typeof createApi>;
  readonly workers: WorkerHandle[];
  startWorker(options?: WorkerOptions): Promise<WorkerHandle>;
  jobCounts(): Promise<Record<string, number>>;
  stop(): Promise<void>;
}

let prefixCounter = 0;

export async function startStack(options: StackOptions = {}): Promise<Stack> {
  // Side by side: most of a cluster's start is waiting (see SandboxCluster.start).
  const [startedControl, startedCluster] = await Promise.allSettled([
    startControlRedis(
      options.controlAccess ??
        (options.controlPassword === undefined ? {} : { password: options.controlPassword }),
    ),
    SandboxCluster.start({
      masters: options.masters ?? 3,
      replicasPerMaster: options.replicasPerMaster ?? 1,
      ...options.clusterAccess,
    }),
  ]);
  if (startedControl.status === 'rejected' || startedCluster.status === 'rejected') {
    if (startedControl.status === 'fulfilled') {
      await startedControl.value.stop();
      await startedControl.value.removeDir();
    }
    if (startedCluster.status === 'fulfilled') await startedCluster.value.stop();
    const [failure] = [startedControl, startedCluster].filter((result) => result.status === 'rejected');
    throw failure?.reason;
  }
  const control = startedControl.value;
  const cluster = startedCluster.value;
  // The server the report names for this project is the one that answered.
  const promised = describeServer(inject('sandboxServers')[inject('sandboxServer')].answered);
  expect([describeServer(control.server), describeServer(cluster.server)]).toEqual([promised, promised]);
  const env: Record<string, string> = {
    SLOTFLEET_CLUSTER_URL: cluster.seedUrl,
    SLOTFLEET_CONTROL_URL: control.url,
    SLOTFLEET_QUEUE_PREFIX: `t${process.pid}-${++prefixCounter}`,
    SLOTFLEET_METRICS_PORT: '0',
    SLOTFLEET_JOB_BACKOFF_MS: '100',
    SLOTFLEET_LOG_LEVEL: 'info',
    ...(typeof options.env === 'function' ? options.env({ cluster, control }) : options.env),
  };
  const config = loadConfig(env);
  const { log, lines: logLines } = capturedLogger(config.logLevel);
  const api = createApi(config, log);
  const workers: WorkerHandle[] = [];
  const queues = [QueueName.MigrateSlot, QueueName.FinalizeSlot].map(
    (name) =>
      new Queue(name, {
        connection: controlConnectionOptions(config.control, ConnectionRole.Worker),
        prefix: config.queuePrefix,
      }),
  );
  const start = async (workerOptions?: WorkerOptions) => {
    const worker = await startWorker(config, log, { serveMetrics: false, ...workerOptions });
    workers.push(worker);
    return worker;
  };
  for (let i = 0; i < (options.workers ?? 1); i++) await start(options.workerOptions);

  return {
    control,
    cluster,
    config,
    env,
    log,
    logLines,
    api,
    workers,
    startWorker: start,
    async jobCounts() {
      const [migrate, finalize] = await Promise.all(queues.map((queue) => queue.getJobCounts()));
      const total = (counts: Record<string, number> | undefined) =>
        Object.values(counts ?? {}).reduce((sum, count) => sum + count, 0);
      return { migrate: total(migrate), finalize: total(finalize) };
    },
    async stop() {
      await Promise.allSettled(workers.map((worker) => worker.close()));
      await api.close();
      await Promise.allSettled(queues.map((queue) => queue.close()));
      const pids = [...cluster.startedPids(), control.pid];
      await cluster.stop();
      await control.stop();
      await control.removeDir();
      for (const pid of pids) expect(isAlive(pid), `redis-server pid ${pid} still running`).toBe(false);
    },
  };
}

/** Polls GET /v1/migrations/:id until the migration ends; returns the final record. */
export function waitForMigration(
  stack: Stack,
  id: string,
  timeoutMs = 60_000,
  headers: Record<string, string> = {},
): Promise<MigrationView> {
  return pollMigration(
    async () => {
      const response = await stack.api.app.inject({ method: 'GET', url: `/v1/migrations/${id}`, headers });
      expect(response.statusCode, response.body).toBe(200);
      return response.json<MigrationView>();
    },
    { intervalMs: 100, timeoutMs },
  );
}

/** POST a reshard through the API: expects 202 and a plan of exactly `slots` slots, returned in plan order. */
export async function startReshard(
  stack: Stack,
  body: { from: readonly string[]; to: string; slots: number },
): Promise<{ id: string; moved: number[] }> {
  const created = await stack.api.app.inject({
    method: 'POST',
    url: '/v1/clusters/default/reshard',
    payload: body,
  });
  expect(created.statusCode, created.body).toBe(202);
  const { id, plan } = created.json() as { id: string; plan: { slots: string }[] };
  const moved = plan.flatMap((group) => parseSlotRanges(group.slots));
  expect(moved).toHaveLength(body.slots);
  return { id, moved };
}

/**
 * Polls the migration until a tenth of its `total` slots are done, failing if it ended first: the
 * moment a test breaks something mid-migration (`before` names that something in the failure).
 */
export async function waitForProgress(
  stack: Stack,
  id: string,
  total: number,
  before: string,
  timeoutMs: number,
): Promise<MigrationView> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const response = await stack.api.app.inject({ method: 'GET', url: `/v1/migrations/${id}` });
    expect(response.statusCode, response.body).toBe(200);
    const record = response.json<MigrationView>();
    expect(record.slots.done, `the migration ended before ${before}`).toBeLessThan(total);
    if (record.slots.done! >= total / 10) return record;
    if (Date.now() > deadline) throw new Error(`migration did not reach 10 %: ${JSON.stringify(record)}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Every running node's own view (replicas included). */
export async function allViews(cluster: SandboxCluster): Promise<NodeView[]> {
  const views: NodeView[] = [];
  for (const node of cluster.nodes) {
    if (!node.isRunning) continue;
    const client = node.client();
    try {
      views.push(parseClusterNodes(String(await client.call('CLUSTER', 'NODES'))));
    } finally {
      client.disconnect();
    }
  }
  return views;
}

/** Every node's slot map and open slots as text: equal before and after means nothing was touched. */
export async function ownershipFingerprint(cluster: SandboxCluster): Promise<string> {
  const views = await allViews(cluster);
  return JSON.stringify(
    views.map((view) => ({
      node: view.myself.id,
      slots: view.nodes.map((node) => [node.id, node.slots]),
      importing: [...view.importing],
      migrating: [...view.migrating],
    })),
  );
}

/** Waits for consensus, then checks that no running node, replicas included, has a slot open. */
export async function expectNoOpenSlots(cluster: SandboxCluster): Promise<void> {
  await cluster.waitForConsensus();
  for (const view of await allViews(cluster)) {
    expect([...view.importing, ...view.migrating], `${view.myself.port} has open slots`).toEqual([]);
  }
}

/**
 * Waits until every running node, replicas included, reports `owner` for each slot and no node has
 * any slot open; fails with the disagreement otherwise.
 */
export async function expectOwnersEverywhere(
  cluster: SandboxCluster,
  expected: ReadonlyMap<number, string>,
  timeoutMs = 20_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let problems: string[] = [];
  while (Date.now() < deadline) {
    problems = [];
    for (const view of await allViews(cluster)) {
      const name = `${view.myself.host}:${view.myself.port}`;
      for (const [slot, owner] of expected) {
        const seen = ownerOf(view, slot);
        if (seen !== owner) problems.push(`${name} sees slot ${slot} owned by ${seen}, expected ${owner}`);
      }
      if (view.importing.size > 0)
        problems.push(`${name} is importing ${[...view.importing.keys()].join(',')}`);
      if (view.migrating.size > 0)
        problems.push(`${name} is migrating ${[...view.migrating.keys()].join(',')}`);
    }
    if (problems.length === 0) return;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  expect(problems.slice(0, 10)).toEqual([]);
}

/** Sum of COUNTKEYSINSLOT over the given slots, asked of each slot's owner. */
export async function countKeysInSlots(cluster: SandboxCluster, slots: readonly number[]): Promise<number> {
  const views = await allViews(cluster);
  const seed = views[0]!;
  let total = 0;
  for (const slot of slots) {
    const owner = seed.nodes.find((node) => node.id === ownerOf(seed, slot))!;
    const client = cluster.process(owner.port).client();
    try {
      total += Number(await client.call('CLUSTER', 'COUNTKEYSINSLOT', slot));
    } finally {
      client.disconnect();
    }
  }
  return total;
}
