/**
 * The engine a migration runs with, chosen when it is created, on real clusters of both kinds. On
 * Redis 7.0 (no atomic slot migration): auto resolves to keys, and engine atomic is refused naming
 * every master, with nothing recorded, enqueued or touched; fix refuses atomic outright. On Valkey 9
 * (CLUSTER MIGRATESLOTS, started with `cluster-databases 16`): auto resolves to atomic in the 202,
 * the record and every job; a slot held by a server task started by hand is refused with 409 naming
 * the task; atomic meets a slot open by hand with 409; keys in databases 0 and 3 refuse engine keys
 * and leave auto atomic. No worker runs: the jobs stay in the queue, where their payload is read.
 *
 * Both servers come from the global setup (test/integration/support/servers.ts), which fails the run,
 * naming `.ci/valkey9`, when Valkey 9 is missing; this file checks again and fails the same way.
 */
import { appendFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Queue } from 'bullmq';
import calculateSlot from 'cluster-key-slot';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createApi } from '../../src/producer/server.js';
import { chooseServer, describeServer, SandboxCluster, startControlRedis } from '../../src/sandbox/index.js';
import { type Config, loadConfig } from '../../src/shared/config.js';
import { createLogger } from '../../src/shared/logger.js';
import { ConnectionRole, controlConnectionOptions } from '../../src/shared/queue/connections.js';
import { migrateJobId, QueueName } from '../../src/shared/queue/names.js';
import { isAlive } from './support/processes.js';
import type { TestServer, TestServerName } from './support/servers.js';
import { slotsOf } from './support/slots.js';
import { ownershipFingerprint } from './support/stack.js';

interface Master {
  readonly id: string;
  readonly port: number;
  readonly address: string;
  readonly slots: readonly number[];
}

/** A cluster of 3 masters (no replicas), its control Redis and the API; no worker. */
interface Harness {
  readonly cluster: SandboxCluster;
  readonly config: Config;
  readonly api: ReturnType<typeof createApi>;
  jobCounts(): Promise<{ migrate: number; finalize: number }>;
  stop(): Promise<void>;
}

let prefixCounter = 0;

/**
 * The harness on this server. Not startStack: that one runs its project's server (and its report
 * promises it), while this file needs Redis 7.0 and Valkey 9 side by side.
 */
async function startHarness(server: TestServer): Promise<Harness> {
  const projectServer = inject('sandboxServers')[inject('sandboxServer')];
  chooseServer({ serverPath: server.serverPath, cliPath: server.cliPath });
  let started: PromiseSettledResult<Awaited<ReturnType<typeof startControlRedis>> | SandboxCluster>[];
  try {
    started = await Promise.allSettled([startControlRedis(), SandboxCluster.start({ replicasPerMaster: 0 })]);
  } finally {
    // Every process keeps the binary it started with; later files get their project's server back.
    chooseServer({ serverPath: projectServer.serverPath, cliPath: projectServer.cliPath });
  }
  const [control, cluster] = started.map((result) =>
    result.status === 'fulfilled' ? result.value : undefined,
  ) as [Awaited<ReturnType<typeof startControlRedis>> | undefined, SandboxCluster | undefined];
  const failure = started.find((result) => result.status === 'rejected');
  if (failure !== undefined || control === undefined || cluster === undefined) {
    await control?.stop();
    await control?.removeDir();
    await cluster?.stop();
    throw (failure as PromiseRejectedResult | undefined)?.reason ?? new Error('harness did not start');
  }
  const config = loadConfig({
    SLOTFLEET_CLUSTER_URL: cluster.seedUrl,
    SLOTFLEET_CONTROL_URL: control.url,
    SLOTFLEET_QUEUE_PREFIX: `engine${process.pid}-${++prefixCounter}`,
    SLOTFLEET_METRICS_PORT: '0',
    SLOTFLEET_LOG_LEVEL: 'warn',
  });
  const api = createApi(config, createLogger({ level: config.logLevel, name: 'test' }));
  const queues = [QueueName.MigrateSlot, QueueName.FinalizeSlot].map(
    (name) =>
      new Queue(name, {
        connection: controlConnectionOptions(config.control, ConnectionRole.Worker),
        prefix: config.queuePrefix,
      }),
  );
  return {
    cluster,
    config,
    api,
    async jobCounts() {
      const [migrate, finalize] = await Promise.all(queues.map((queue) => queue.getJobCounts()));
      const total = (counts: Record<string, number> | undefined) =>
        Object.values(counts ?? {}).reduce((sum, count) => sum + count, 0);
      return { migrate: total(migrate), finalize: total(finalize) };
    },
    async stop() {
      await api.close();
      await Promise.allSettled(queues.map((queue) => queue.close()));
      const pids = [...cluster.startedPids(), control.pid];
      await cluster.stop();
      await control.stop();
      await control.removeDir();
      for (const pid of pids) expect(isAlive(pid), `server pid ${pid} still running`).toBe(false);
    },
  };
}

function requireServer(name: TestServerName, install: string): TestServer {
  const server = inject('sandboxServers')[name];
  if (server === undefined) throw new Error(`no ${name} server provided by the global setup: ${install}`);
  return server;
}

async function mastersOf(stack: Harness): Promise<Master[]> {
  const masters = [...(await stack.cluster.masters())].sort((a, b) => a.port - b.port);
  return Promise.all(
    masters.map(async (master) => ({
      id: master.id,
      port: master.port,
      address: `127.0.0.1:${master.port}`,
      slots: await slotsOf(stack.cluster, master.id),
    })),
  );
}

/** A hash tag whose slot the master owns, skipping slots already used. */
function tagOwnedBy(master: Master, used: Set<number>): { tag: string; slot: number } {
  const owned = new Set(master.slots);
  for (let index = 0; ; index++) {
    const tag = `engine-${index}`;
    const slot = calculateSlot(tag);
    if (owned.has(slot) && !used.has(slot)) {
      used.add(slot);
      return { tag, slot };
    }
  }
}

function api(stack: Harness) {
  const post = (route: string, payload: object, headers: Record<string, string> = {}) =>
    stack.api.app.inject({ method: 'POST', url: `/v1/clusters/default/${route}`, payload, headers });
  const get = (url: string) => stack.api.app.inject({ method: 'GET', url });
  return { post, get };
}

/** The engine each of a migration's slot jobs carries. */
async function jobEngines(stack: Harness, migrationId: string, slots: readonly number[]) {
  const queue = new Queue(QueueName.MigrateSlot, {
    connection: controlConnectionOptions(stack.config.control, ConnectionRole.Worker),
    prefix: stack.config.queuePrefix,
  });
  try {
    return await Promise.all(
      slots.map(async (slot) => (await queue.getJob(migrateJobId(migrationId, slot)))?.data.engine),
    );
  } finally {
    await queue.close();
  }
}

describe('engine on Redis 7.0: keys only', () => {
  let stack: Harness;
  let masters: Master[];
  const used = new Set<number>();

  beforeAll(async () => {
    const redis7 = requireServer('redis7', 'sudo apt-get install redis-server');
    stack = await startHarness(redis7);
    expect(describeServer(stack.cluster.server)).toBe(describeServer(redis7.answered));
    masters = await mastersOf(stack);
  });

  afterAll(async () => {
    await stack?.stop();
  });

  it('refuses engine atomic on every route, naming every master: nothing recorded, enqueued or touched', async () => {
    const { post, get } = api(stack);
    const [a, b] = masters as [Master, Master, Master];
    const slot = tagOwnedBy(a, used).slot;
    const before = await ownershipFingerprint(stack.cluster);
    const requests: [string, object][] = [
      ['migrations', { moves: [{ slots: String(slot), target: b.address }], engine: 'atomic' }],
      ['reshard', { from: [a.address], to: b.address, slots: 10, engine: 'atomic' }],
      ['drain', { node: a.address, engine: 'atomic' }],
      ['rebalance', { weights: { [a.id]: 0 }, engine: 'atomic' }],
      ['reshard', { from: [a.address], to: b.address, slots: 10, engine: 'atomic', dryRun: true }],
    ];
    for (const [route, body] of requests) {
      const response = await post(route, body);
      expect(response.statusCode, `${route}: ${response.body}`).toBe(422);
      expect(response.json()).toMatchObject({ code: 'ATOMIC_UNSUPPORTED' });
      const { message } = response.json();
      expect(message).toMatch(/^engine atomic needs atomic slot migration \(Valkey 9 CLUSTER MIGRATESLOTS\)/);
      for (const master of masters) expect(message).toContain(master.address);
      expect(message).toMatch(/do not have it: use engine keys, or auto \(keys on this cluster\)$/);
    }
    expect(await stack.jobCounts()).toEqual({ migrate: 0, finalize: 0 });
    expect((await get('/v1/migrations')).json().items).toEqual([]);
    expect(await ownershipFingerprint(stack.cluster)).toBe(before);
  });

  it('refuses fix with engine atomic (its SETSLOT repairs cannot run beside server tasks); auto means keys', async () => {
    const { post } = api(stack);
    const atomic = await post('fix', { engine: 'atomic' });
    expect(atomic.statusCode, atomic.body).toBe(400);
    expect(atomic.json()).toMatchObject({
      code: 'INVALID_REQUEST',
      message:
        'fix cannot run with engine atomic: it repairs open slots with hand-made CLUSTER SETSLOT, which ' +
        "Valkey refuses alongside the servers' own slot migrations; use engine keys or auto (keys for fix)",
    });
    const auto = await post('fix', {});
    expect(auto.statusCode, auto.body).toBe(200);
    expect(auto.json()).toMatchObject({ engine: 'keys', slots: 0 });
    expect(await stack.jobCounts()).toEqual({ migrate: 0, finalize: 0 });
  });

  it('resolves auto to keys: the dry run, the 202, the record and every job say keys', async () => {
    const { post, get } = api(stack);
    const [a, b] = masters as [Master, Master, Master];
    const preview = await post('reshard', { from: [a.address], to: b.address, slots: 10, dryRun: true });
    expect(preview.statusCode, preview.body).toBe(200);
    expect(preview.json()).toMatchObject({ dryRun: true, engine: 'keys', slots: 10 });

    const slots = [tagOwnedBy(a, used).slot, tagOwnedBy(a, used).slot];
    const created = await post('migrations', { moves: [{ slots: slots.join(','), target: b.address }] });
    expect(created.statusCode, created.body).toBe(202);
    expect(created.json()).toMatchObject({ engine: 'keys', slots: 2 });
    const record = await get(`/v1/migrations/${created.json().id}`);
    expect(record.json()).toMatchObject({ engine: 'keys', slotsTotal: 2 });
    expect(await jobEngines(stack, created.json().id, slots)).toEqual(['keys', 'keys']);
  });

  it('hashes engine with the body for the Idempotency-Key', async () => {
    const { post } = api(stack);
    const [a, b] = masters as [Master, Master, Master];
    const moves = [{ slots: String(tagOwnedBy(a, used).slot), target: b.address }];
    const headers = { 'idempotency-key': 'engine-choice-1' };
    const first = await post('migrations', { moves, engine: 'keys' }, headers);
    expect(first.statusCode, first.body).toBe(202);
    const again = await post('migrations', { moves, engine: 'keys' }, headers);
    expect(again.json()).toMatchObject({ id: first.json().id, engine: 'keys', reused: true });
    const other = await post('migrations', { moves }, headers);
    expect(other.statusCode, other.body).toBe(422);
    expect(other.json().code).toBe('IDEMPOTENCY_MISMATCH');
  });
});

describe('engine on Valkey 9: atomic slot migration and numbered databases', () => {
  let stack: Harness;
  let masters: Master[];
  const used = new Set<number>();
  const clients: Redis[] = [];

  function client(master: Master, db = 0): Redis {
    const redis = new Redis({ host: '127.0.0.1', port: master.port, db, lazyConnect: false });
    clients.push(redis);
    return redis;
  }

  beforeAll(async () => {
    const valkey9 = requireServer(
      'valkey9',
      'bash .ci/valkey9 (builds Valkey 9 and prints its bin directory; see test/integration/support/servers.ts)',
    );
    stack = await startHarness(valkey9);
    expect(describeServer(stack.cluster.server)).toBe(describeServer(valkey9.answered));
    // cluster-databases cannot change at run time, and the sandbox starts nodes with the default (1):
    // restart each master (nodes.conf keeps its place in the cluster) with 16 databases.
    for (const node of stack.cluster.nodes) {
      await node.stop();
      await appendFile(join(node.dir, 'redis.conf'), 'cluster-databases 16\n');
      await node.restart();
    }
    await stack.cluster.waitForConsensus();
    masters = await mastersOf(stack);
  });

  afterAll(async () => {
    await Promise.all(clients.map((redis) => redis.quit().catch(() => redis.disconnect())));
    await stack?.stop();
  });

  it('resolves auto to atomic: the dry run, the 202, the record and every job say atomic', async () => {
    const { post, get } = api(stack);
    const [, b, c] = masters as [Master, Master, Master];
    const preview = await post('reshard', { from: [b.address], to: c.address, slots: 10, dryRun: true });
    expect(preview.statusCode, preview.body).toBe(200);
    expect(preview.json()).toMatchObject({ dryRun: true, engine: 'atomic', slots: 10 });

    const slots = [tagOwnedBy(b, used).slot, tagOwnedBy(b, used).slot];
    const created = await post('migrations', { moves: [{ slots: slots.join(','), target: c.address }] });
    expect(created.statusCode, created.body).toBe(202);
    expect(created.json()).toMatchObject({ engine: 'atomic', slots: 2 });
    const record = await get(`/v1/migrations/${created.json().id}`);
    expect(record.json()).toMatchObject({ engine: 'atomic', slotsTotal: 2 });
    expect(await jobEngines(stack, created.json().id, slots)).toEqual(['atomic', 'atomic']);
  });

  it('refuses a slot that a server task started by hand holds, with 409 naming the task, for every engine', async () => {
    const { post } = api(stack);
    const [a, b, c] = masters as [Master, Master, Master];
    const { tag, slot } = tagOwnedBy(a, used);
    const source = client(a);
    await source.mset(Object.fromEntries(Array.from({ length: 30 }, (_, i) => [`{${tag}}:${i}`, `v${i}`])));
    // One second per key in the source's snapshot child: the task lasts far longer than this test.
    await source.call('CONFIG', 'SET', 'rdb-key-save-delay', '1000000');
    try {
      expect(await source.call('CLUSTER', 'MIGRATESLOTS', 'SLOTSRANGE', slot, slot, 'NODE', b.id)).toBe('OK');
      const listed = (await source.call('CLUSTER', 'GETSLOTMIGRATIONS')) as string[][];
      const name = listed[0]![listed[0]!.indexOf('name') + 1]!;
      const fingerprint = JSON.stringify(await stack.jobCounts());
      for (const engine of [undefined, 'keys', 'atomic']) {
        const response = await post('migrations', {
          moves: [{ slots: String(slot), target: c.address }],
          ...(engine ? { engine } : {}),
        });
        expect(response.statusCode, `${engine}: ${response.body}`).toBe(409);
        expect(response.json()).toMatchObject({
          code: 'SLOT_MIGRATION_BUSY',
          details: { slots: String(slot), serverMigrations: [name] },
        });
        expect(response.json().message).toMatch(
          new RegExp(
            `^slots ${slot} are held by server slot migration ${name} \\(export ${slot} to ${b.id}: [a-z-]+\\), ` +
              `listed by ${a.address}: wait for it to end, or cancel it \\(CLUSTER CANCELSLOTMIGRATIONS on its source\\)$`,
          ),
        );
      }
      // A plan that moves the slot among others is refused too (a drain of the source).
      const drain = await post('drain', { node: a.address, dryRun: true });
      expect(drain.statusCode, drain.body).toBe(409);
      expect(drain.json().code).toBe('SLOT_MIGRATION_BUSY');
      expect(JSON.stringify(await stack.jobCounts())).toBe(fingerprint);
    } finally {
      await source.call('CLUSTER', 'CANCELSLOTMIGRATIONS').catch(() => undefined);
      await source.call('CONFIG', 'SET', 'rdb-key-save-delay', '0');
    }
    expect(await slotsOf(stack.cluster, a.id)).toContain(slot);
  });

  it('refuses atomic next to a slot open by hand on a target, with 409 suggesting fix or engine keys', async () => {
    const { post } = api(stack);
    const [a, b, c] = masters as [Master, Master, Master];
    const open = tagOwnedBy(a, used).slot;
    const target = client(c);
    await target.call('CLUSTER', 'SETSLOT', open, 'IMPORTING', a.id);
    try {
      const slot = tagOwnedBy(b, used).slot;
      const response = await post('migrations', { moves: [{ slots: String(slot), target: c.address }] });
      expect(response.statusCode, response.body).toBe(409);
      expect(response.json()).toMatchObject({
        code: 'SLOT_MIGRATION_BUSY',
        message:
          `engine atomic cannot start: slots are IMPORTING/MIGRATING by hand on ${c.address} (${open} importing from ${a.id}), ` +
          'and Valkey refuses CLUSTER MIGRATESLOTS on a node with manually migrated slots: run fix first, or use engine keys',
        details: { slots: String(open), nodes: [c.address] },
      });
    } finally {
      await target.call('CLUSTER', 'SETSLOT', open, 'STABLE');
    }
  });

  it('with keys in databases 0 and 3: engine keys is refused naming nodes and databases, auto is atomic', async () => {
    const { post } = api(stack);
    const [a, b, c] = masters as [Master, Master, Master];
    const { tag } = tagOwnedBy(a, used);
    await client(a, 0).mset({ [`{${tag}}:zero`]: '0' });
    await client(a, 3).mset(
      Object.fromEntries(Array.from({ length: 5 }, (_, i) => [`{${tag}}:three-${i}`, `${i}`])),
    );
    const slot = tagOwnedBy(a, used).slot;
    const moves = [{ slots: String(slot), target: b.address }];
    const jobs = JSON.stringify(await stack.jobCounts());

    const keys = await post('migrations', { moves, engine: 'keys' });
    expect(keys.statusCode, keys.body).toBe(409);
    expect(keys.json()).toMatchObject({
      code: 'INVALID_STATE',
      message:
        `engine keys moves database 0 only, and keys are in other databases on ${a.address} (db3: 5 keys): ` +
        'use engine atomic (Valkey 9), which moves every database, or auto',
      details: { nodes: [{ node: a.address, id: a.id, databases: [3] }] },
    });
    expect(JSON.stringify(await stack.jobCounts())).toBe(jobs);

    const auto = await post('migrations', { moves: [{ slots: String(slot), target: c.address }] });
    expect(auto.statusCode, auto.body).toBe(202);
    expect(auto.json()).toMatchObject({ engine: 'atomic', slots: 1 });
  });
});
