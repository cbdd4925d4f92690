/**
 * Nodes that announce a hostname (cluster-announce-hostname localhost), on a real cluster of 3
 * masters and an empty fourth: with cluster-preferred-endpoint-type hostname, slotfleet reaches every
 * node by that name (its connections, the host MIGRATE is sent to, the addresses of plans and
 * records); set back to ip, with the hostnames still announced, by the ip. Each of these two runs a
 * rebalance to done and checks every key (the second empties the master the first filled). Last, a
 * user whose ACL rules refuse CLUSTER SHARDS (slotfleet's rules without +cluster|shards) gets the ips
 * and a warning.
 *
 * What slotfleet connects to is read from ioredis (every Redis connect in this process, kept while a
 * phase's slotfleet runs); what MIGRATE was sent to, from MONITOR on the masters: the batch script's
 * MIGRATE shows there with its arguments.
 */
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import type { MigrationView, PlanPreviewView } from '../../src/cli/migration-view.js';
import { createApi } from '../../src/producer/server.js';
import {
  type DatasetManifest,
  SandboxCluster,
  SLOTFLEET_ACL_RULES,
  seedDataset,
  startControlRedis,
  verifyDataset,
} from '../../src/sandbox/index.js';
import type { RedisProcess } from '../../src/sandbox/redis-process.js';
import { loadConfig } from '../../src/shared/config.js';
import { startWorker, type WorkerHandle } from '../../src/workers/worker.js';
import { capturedLogger, isAlive } from './support/processes.js';

const HOSTNAME = 'localhost';
const PHASE_TIMEOUT_MS = 240_000;

/** An API and a worker in this process, on a queue prefix of their own: a fresh slotfleet. */
interface Slotfleet {
  readonly api: ReturnType<typeof createApi>;
  readonly worker: WorkerHandle;
  readonly logLines: string[];
  close(): Promise<void>;
}

describe('nodes that announce hostnames', () => {
  let control: RedisProcess;
  let cluster: SandboxCluster;
  let manifest: DatasetManifest;
  let added: { id: string; process: RedisProcess };
  let running: Slotfleet | undefined;
  let phase = 0;
  /** host:port of every ioredis connect while capturing. */
  const connects = new Set<string>();
  let capturing = false;

  beforeAll(async () => {
    const [startedControl, startedCluster] = await Promise.allSettled([
      startControlRedis(),
      SandboxCluster.start({
        masters: 3,
        replicasPerMaster: 0,
        extraConfig: {
          'cluster-announce-hostname': HOSTNAME,
          'cluster-preferred-endpoint-type': 'hostname',
        },
      }),
    ]);
    if (startedControl.status === 'fulfilled') control = startedControl.value;
    if (startedCluster.status === 'fulfilled') cluster = startedCluster.value;
    for (const started of [startedControl, startedCluster]) {
      if (started.status === 'rejected') throw started.reason;
    }
    manifest = await seedDataset(cluster.seedUrl, { keys: 6_000, types: 'mixed', ttlFraction: 0.2 });
    added = await cluster.addEmptyMaster();
    const connect = Redis.prototype.connect;
    vi.spyOn(Redis.prototype, 'connect').mockImplementation(function (this: Redis, ...args) {
      if (capturing) connects.add(`${this.options.host}:${this.options.port}`);
      return connect.apply(this, args);
    });
  });

  afterEach(async () => {
    capturing = false;
    await running?.close();
    running = undefined;
  });

  afterAll(async () => {
    vi.restoreAllMocks();
    const pids = [...(cluster?.startedPids() ?? []), ...(control ? [control.pid] : [])];
    await cluster?.stop();
    await control?.stop();
    await control?.removeDir();
    for (const pid of pids) expect(isAlive(pid), `redis-server pid ${pid} still running`).toBe(false);
  });

  async function startSlotfleet(clusterUrl = cluster.seedUrl): Promise<Slotfleet> {
    const config = loadConfig({
      SLOTFLEET_CLUSTER_URL: clusterUrl,
      SLOTFLEET_CONTROL_URL: control.url,
      SLOTFLEET_QUEUE_PREFIX: `t${process.pid}-hostnames-${++phase}`,
      SLOTFLEET_METRICS_PORT: '0',
      SLOTFLEET_JOB_BACKOFF_MS: '100',
      SLOTFLEET_LOG_LEVEL: 'info',
    });
    const { log, lines: logLines } = capturedLogger(config.logLevel);
    const api = createApi(config, log);
    const worker = await startWorker(config, log, { serveMetrics: false });
    return {
      api,
      worker,
      logLines,
      async close() {
        await worker.close();
        await api.close();
      },
    };
  }

  /** MIGRATE's host and port, as every master received them, until stop() is awaited. */
  async function watchMigrates(): Promise<{ stop(): Promise<string[]> }> {
    const masters = await cluster.masters();
    const seen: string[] = [];
    const clients = masters.map((master) => cluster.process(master.port).client());
    const monitors = await Promise.all(clients.map((client) => client.monitor()));
    for (const monitor of monitors) {
      monitor.on('monitor', (_time: string, args: string[]) => {
        if (args[0]?.toUpperCase() === 'MIGRATE') seen.push(`${args[1]}:${args[2]}`);
      });
    }
    return {
      async stop() {
        for (const connection of [...monitors, ...clients]) connection.disconnect();
        return seen;
      },
    };
  }

  /** Previews, then runs the rebalance to done; returns the preview and the final record. */
  async function rebalance(
    slotfleet: Slotfleet,
    body: object,
  ): Promise<{ preview: PlanPreviewView; final: MigrationView }> {
    const { app } = slotfleet.api;
    const url = '/v1/clusters/default/rebalance';
    const previewed = await app.inject({ method: 'POST', url, payload: { ...body, dryRun: true } });
    expect(previewed.statusCode, previewed.body).toBe(200);
    const created = await app.inject({ method: 'POST', url, payload: body });
    expect(created.statusCode, created.body).toBe(202);
    const id = created.json().id as string;
    const deadline = Date.now() + PHASE_TIMEOUT_MS - 30_000;
    for (;;) {
      const response = await app.inject({ method: 'GET', url: `/v1/migrations/${id}` });
      expect(response.statusCode, response.body).toBe(200);
      const record = response.json<MigrationView>();
      if (record.state !== 'running' && record.state !== 'pending') {
        return { preview: previewed.json<PlanPreviewView>(), final: record };
      }
      if (Date.now() > deadline) throw new Error(`migration ${id} still ${record.state}`);
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }

  async function masterAddresses(slotfleet: Slotfleet): Promise<string[]> {
    const response = await slotfleet.api.app.inject({ method: 'GET', url: '/v1/clusters/default' });
    expect(response.statusCode, response.body).toBe(200);
    return response.json().masters.map((master: { address: string }) => master.address);
  }

  async function expectEveryKey(): Promise<void> {
    const result = await verifyDataset(cluster.seedUrl, manifest);
    expect(result).toMatchObject({ missingCount: 0, wrongValueCount: 0, wrongTtlCount: 0 });
    expect(result.checked).toBe(manifest.count);
  }

  it(
    'with cluster-preferred-endpoint-type hostname: connects, migrates and reports by hostname',
    async () => {
      const ports = new Set((await cluster.masters()).map((master) => master.port));
      expect(ports.size).toBe(4);
      const seedPort = Number(new URL(cluster.seedUrl).port);
      const migrates = await watchMigrates();
      connects.clear();
      capturing = true;
      running = await startSlotfleet();

      expect((await masterAddresses(running)).sort()).toEqual(
        [...ports].map((port) => `${HOSTNAME}:${port}`).sort(),
      );
      // The new master weighs 0.1 (the others 1): about 530 slots move.
      const { preview, final } = await rebalance(running, {
        useEmptyMasters: true,
        weights: { [added.id]: 0.1 },
      });
      expect(final.errors).toEqual([]);
      expect(final.state).toBe('done');
      expect(final.slots.done).toBe(preview.slots);
      expect(preview.slots).toBeGreaterThan(400);
      for (const plan of [preview.plan, final.plan]) {
        expect(plan.length).toBe(3);
        for (const group of plan) {
          expect(group.source).toMatch(new RegExp(`^${HOSTNAME}:\\d+$`));
          expect(group.target).toBe(`${HOSTNAME}:${added.process.port}`);
        }
      }
      capturing = false;
      const migrateTargets = new Set(await migrates.stop());
      // Every MIGRATE named the target by its hostname, and the target took the keys.
      expect([...migrateTargets]).toEqual([`${HOSTNAME}:${added.process.port}`]);
      expect(final.keysMoved).toBeGreaterThan(0);
      // Only the configured seed is reached by its ip: that address is the operator's choice.
      const byPort = [...connects].filter((address) => ports.has(Number(address.split(':').pop())));
      expect(byPort.filter((address) => address !== `127.0.0.1:${seedPort}`).sort()).toEqual(
        [...ports].map((port) => `${HOSTNAME}:${port}`).sort(),
      );
      expect(running.logLines.join('')).toMatch(/"endpointType":"hostname"/);
      await expectEveryKey();
    },
    PHASE_TIMEOUT_MS,
  );

  it(
    'with cluster-preferred-endpoint-type ip and the hostnames still announced: uses the ips',
    async () => {
      // Set on every node at run time; a slotfleet started afterwards learns it (a running one keeps
      // the type it learned: docs/operations.md, Hostnames).
      await onEveryNode(['CONFIG', 'SET', 'cluster-preferred-endpoint-type', 'ip']);
      for (const node of cluster.nodes) {
        const client = node.client();
        try {
          expect(String(await client.call('CLUSTER', 'NODES'))).toContain(`,${HOSTNAME} `);
        } finally {
          client.disconnect();
        }
      }
      const ports = new Set((await cluster.masters()).map((master) => master.port));
      const migrates = await watchMigrates();
      connects.clear();
      capturing = true;
      running = await startSlotfleet();

      expect((await masterAddresses(running)).sort()).toEqual(
        [...ports].map((port) => `127.0.0.1:${port}`).sort(),
      );
      // Weight 0 empties the fourth master again, by ip.
      const { preview, final } = await rebalance(running, { weights: { [added.id]: 0 } });
      expect(final.errors).toEqual([]);
      expect(final.state).toBe('done');
      expect(final.slots.done).toBe(preview.slots);
      for (const plan of [preview.plan, final.plan]) {
        for (const group of plan) {
          expect(group.source).toBe(`127.0.0.1:${added.process.port}`);
          expect(group.target).toMatch(/^127\.0\.0\.1:\d+$/);
        }
      }
      capturing = false;
      const targets = [...ports].filter((port) => port !== added.process.port);
      const migrateTargets = new Set(await migrates.stop());
      expect(migrateTargets.size).toBeGreaterThan(0);
      for (const target of migrateTargets) {
        expect(targets.map((port) => `127.0.0.1:${port}`)).toContain(target);
      }
      const byPort = [...connects].filter((address) => ports.has(Number(address.split(':').pop())));
      expect(byPort.length).toBeGreaterThan(0);
      expect(byPort.filter((address) => !address.startsWith('127.0.0.1:'))).toEqual([]);
      expect(running.logLines.join('')).toMatch(/"endpointType":"ip"/);
      await expectEveryKey();
    },
    PHASE_TIMEOUT_MS,
  );

  it(
    'with a user that may not run CLUSTER SHARDS: uses the ips, as before hostnames were read, and says why',
    async () => {
      await onEveryNode(['CONFIG', 'SET', 'cluster-preferred-endpoint-type', 'hostname']);
      await onEveryNode([
        'ACL',
        'SETUSER',
        'slotfleet',
        'on',
        '>slotfleet-pass',
        ...SLOTFLEET_ACL_RULES.split(' '),
        '-cluster|shards',
      ]);
      const seed = new URL(cluster.seedUrl);
      seed.username = 'slotfleet';
      seed.password = 'slotfleet-pass';
      running = await startSlotfleet(seed.href);
      // By ip, and nodes of this cluster. Not compared with the sandbox's master list: the fourth
      // master, emptied by the case before, may be turning into a replica (Redis 7.0 replica
      // migration) between the two reads.
      const addresses = await masterAddresses(running);
      const nodeAddresses = cluster.nodes.map((node) => `127.0.0.1:${node.port}`);
      expect(addresses.length).toBeGreaterThanOrEqual(3);
      for (const address of addresses) expect(nodeAddresses).toContain(address);
      expect(running.logLines.join('')).toMatch(/CLUSTER SHARDS was refused.*\+cluster\|shards/);
    },
    PHASE_TIMEOUT_MS,
  );

  async function onEveryNode(command: readonly string[]): Promise<void> {
    for (const node of cluster.nodes) {
      const client = node.client();
      try {
        await client.call(command[0]!, ...command.slice(1));
      } finally {
        client.disconnect();
      }
    }
  }
});
