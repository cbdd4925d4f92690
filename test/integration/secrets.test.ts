/**
 * Credentials stay secret. A password-protected cluster and a control Redis with its own password,
 * the real `slotfleet api` and two `slotfleet worker` processes at debug level: a slot that fails
 * (BUSYKEY) and is fixed, a reshard onto a new master watched through every read route, refused
 * requests of every kind (400, 401, 404, 409, 422, and 503 from a cluster configured with a wrong
 * password and from one that is down), bad configuration, a worker with a wrong control password.
 * Then everything slotfleet wrote or answered is collected (process output, /metrics of the API and
 * of each worker, every key of the control Redis, every BullMQ job's data, return value, failed
 * reason and stack trace, every API response) and no password or token may appear in it, neither
 * as written nor URL-encoded.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { inspect } from 'node:util';
import { Queue } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pollMigration } from '../../src/cli/progress.js';
import {
  type DatasetManifest,
  redisUrl,
  SANDBOX_HOST,
  seedDataset,
  spawnWorkerProcesses,
  stopProcesses,
  verifyDataset,
} from '../../src/sandbox/index.js';
import { ClusterAdapter } from '../../src/shared/cluster/adapter.js';
import type { MigrationState } from '../../src/shared/domain/migration.js';
import { SlotfleetError } from '../../src/shared/errors.js';
import { createLogger } from '../../src/shared/logger.js';
import { ConnectionRole, controlConnectionOptions } from '../../src/shared/queue/connections.js';
import { QueueName } from '../../src/shared/queue/names.js';
import { runSlotfleet } from './support/run-slotfleet.js';
import { slotsOf } from './support/slots.js';
import { expectNoOpenSlots, type Stack, startStack, waitForMigration } from './support/stack.js';

// Distinctive, with characters a URL must encode, so an encoded copy differs from the raw one.
const CLUSTER_PASSWORD = 'S3cret-Pa55-xyzzy/@:%';
const CONTROL_PASSWORD = 'C0ntrol-Pa55-plugh#?';
const WRONG_PASSWORD = 'Wr0ng-Pa55-frotz&=';
const TOKEN = 'T0ken-frobozz-0123456789abcdef';
/** Each secret as written, URL-encoded, and its distinctive start (which catches partial copies). */
const NEEDLES = [CLUSTER_PASSWORD, CONTROL_PASSWORD, WRONG_PASSWORD, TOKEN].flatMap((secret) => [
  secret,
  encodeURIComponent(secret),
  secret.slice(0, 10),
]);
const auth = { authorization: `Bearer ${TOKEN}` };

/** The fields of API responses this test reads. */
interface ApiBody {
  readonly id: string;
  readonly state: MigrationState;
  readonly code: string;
  readonly items: readonly { readonly id: string }[];
}

interface Collected {
  readonly where: string;
  readonly text: string;
}

describe('secrets stay secret', () => {
  let stack: Stack;
  let manifest: DatasetManifest;
  let logDir: string;
  let apiUrl: string;
  let apiProcess: ChildProcess | undefined;
  const apiOutput: string[] = [];
  let workers: ChildProcess[] = [];
  const collected: Collected[] = [];
  const collect = (where: string, value: unknown) =>
    collected.push({ where, text: typeof value === 'string' ? value : JSON.stringify(value) });

  /** A request to the API process; the response (status and body) is collected. */
  async function api(
    method: 'GET' | 'POST',
    path: string,
    options: { body?: string | object; headers?: Record<string, string> } = {},
  ): Promise<{ status: number; text: string; json: () => ApiBody }> {
    const response = await fetch(`${apiUrl}${path}`, {
      method,
      headers: {
        ...auth,
        ...(options.body !== undefined ? { 'content-type': 'application/json' } : {}),
        ...options.headers,
      },
      ...(options.body !== undefined
        ? { body: typeof options.body === 'string' ? options.body : JSON.stringify(options.body) }
        : {}),
    });
    const text = await response.text();
    collect(`${method} ${path} -> ${response.status}`, `${JSON.stringify([...response.headers])}\n${text}`);
    return { status: response.status, text, json: () => JSON.parse(text) };
  }

  beforeAll(async () => {
    const apiPort = await freePort();
    stack = await startStack({
      workers: 0,
      clusterAccess: { password: CLUSTER_PASSWORD },
      controlAccess: { password: CONTROL_PASSWORD },
      env: ({ cluster }) => ({
        SLOTFLEET_API_TOKEN: TOKEN,
        SLOTFLEET_API_PORT: String(apiPort),
        SLOTFLEET_LOG_LEVEL: 'debug',
        SLOTFLEET_WORKER_CONCURRENCY: '8',
        // A cluster configured with a wrong password, and one that is down (nothing listens on port 1).
        SLOTFLEET_CLUSTERS: [
          `wrongpw=${redisUrl(Number(new URL(cluster.seedUrl).port), WRONG_PASSWORD)}`,
          `dead=${redisUrl(1, CLUSTER_PASSWORD)}`,
        ].join(','),
      }),
    });
    expect(stack.env.SLOTFLEET_CLUSTER_URL).toContain(encodeURIComponent(CLUSTER_PASSWORD));
    expect(stack.env.SLOTFLEET_CONTROL_URL).toContain(encodeURIComponent(CONTROL_PASSWORD));
    manifest = await seedDataset(stack.cluster.seedUrl, { keys: 8_000, types: 'mixed', ttlFraction: 0.2 });
    logDir = await mkdtemp(join(tmpdir(), 'slotfleet-secrets-'));

    apiUrl = `http://${SANDBOX_HOST}:${apiPort}`;
    apiProcess = spawn(process.execPath, ['dist/cli/main.js', 'api'], {
      env: { ...process.env, ...stack.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    apiProcess.stdout?.on('data', (chunk) => apiOutput.push(String(chunk)));
    apiProcess.stderr?.on('data', (chunk) => apiOutput.push(`stderr: ${chunk}`));
    await until(
      async () => (await fetch(`${apiUrl}/healthz`).catch(() => undefined))?.status === 200,
      `the API on ${apiUrl}: ${apiOutput.join('')}`,
    );
  });

  afterAll(async () => {
    await stopProcesses([...workers, ...(apiProcess ? [apiProcess] : [])]);
    await stack?.stop();
    if (logDir) await rm(logDir, { recursive: true, force: true });
  });

  it('records a failed slot (BUSYKEY on the target) and fixes it', async () => {
    const masters = (await stack.cluster.masters()).sort((a, b) => a.port - b.port);
    const [source, target] = [masters[0]!, masters[1]!];
    const sourceClient = stack.cluster.process(source.id).client();
    const targetClient = stack.cluster.process(target.id).client();
    try {
      let slot = -1;
      for (const candidate of await slotsOf(stack.cluster, source.id)) {
        if (Number(await sourceClient.call('CLUSTER', 'COUNTKEYSINSLOT', candidate)) > 0) {
          slot = candidate;
          break;
        }
      }
      const [key] = (await sourceClient.call('CLUSTER', 'GETKEYSINSLOT', slot, 1)) as string[];
      const created = await api('POST', '/v1/clusters/default/migrations', {
        body: { moves: [{ slots: String(slot), target: target.id }] },
      });
      expect(created.status, created.text).toBe(202);
      const id: string = created.json().id;
      // Before any worker runs: the target already holds a key of that name, so MIGRATE meets BUSYKEY.
      await targetClient.call('CLUSTER', 'SETSLOT', slot, 'IMPORTING', source.id);
      await targetClient.call('ASKING');
      await targetClient.call('SET', key!, 'duplicate');

      workers = spawnWorkerProcesses({ count: 2, env: stack.env, logDir });
      await until(
        async () =>
          (await workerLogs(logDir)).filter((log) => log.text.includes('worker ready')).length === 2,
        'two workers ready',
        60_000,
      );
      const failed = await waitForMigration(stack, id, 60_000, auth);
      expect(failed.state).toBe('failed');
      expect(failed.errors).toEqual([
        expect.objectContaining({ slot, code: 'BUSYKEY', message: expect.stringMatching(/BUSYKEY/) }),
      ]);

      await targetClient.call('ASKING');
      await targetClient.call('DEL', key!);
      const fix = await api('POST', '/v1/clusters/default/fix', { body: {} });
      expect(fix.status, fix.text).toBe(202);
      expect(await waitForMigration(stack, fix.json().id, 60_000, auth)).toMatchObject({ state: 'done' });
      await api('GET', `/v1/migrations/${id}`);
    } finally {
      sourceClient.disconnect();
      targetClient.disconnect();
    }
  }, 120_000);

  it('reshards onto a new master, every read route polled while it runs', async () => {
    const added = await stack.cluster.addEmptyMaster();
    const created = await api('POST', '/v1/clusters/default/reshard', {
      body: { from: ['all'], to: added.id, slots: 1200 },
    });
    expect(created.status, created.text).toBe(202);
    const id: string = created.json().id;
    const final = await pollMigration(async () => (await api('GET', `/v1/migrations/${id}`)).json(), {
      intervalMs: 200,
      timeoutMs: 150_000,
      onView: async () => {
        await api('GET', '/v1/migrations?limit=5');
        await api('GET', '/v1/clusters');
        await api('GET', '/v1/clusters/default');
        await api('GET', '/status.json');
        await api('GET', '/metrics');
        await api('GET', '/queues/api/queues?activeQueue=migrate-slot&status=active&page=1');
      },
    });
    expect(final.state).toBe('done');
    await api('GET', '/queues/api/queues?activeQueue=migrate-slot&status=failed&page=1');
    await api('GET', '/queues/api/queues?activeQueue=finalize-slot&status=completed&page=1');
    await api('GET', '/docs/json');
    await api('GET', '/healthz');
    await api('GET', '/');
    const verification = await verifyDataset(stack.cluster.seedUrl, manifest);
    expect(verification).toMatchObject({ missingCount: 0, wrongValueCount: 0, wrongTtlCount: 0 });
    await expectNoOpenSlots(stack.cluster);
  }, 180_000);

  it('refuses bad requests, and answers 503 for a cluster with a wrong password or down', async () => {
    const expectations: [number, Promise<{ status: number; text: string }>][] = [
      [400, api('POST', '/v1/clusters/default/migrations', { body: { moves: [] } })],
      [400, api('POST', '/v1/clusters/default/rebalance', { body: '{"useEmptyMasters": tr' })],
      [400, api('POST', '/v1/clusters/default/reshard', { body: { to: 'x', slots: 1, password: 'p' } })],
      [401, api('GET', '/v1/migrations', { headers: { authorization: 'Bearer wrong-token-0123456789' } })],
      [404, api('GET', '/v1/clusters/nowhere')],
      [404, api('GET', '/v1/migrations/mig-nothing-here')],
      [
        422,
        api('POST', '/v1/clusters/default/migrations', {
          body: { moves: [{ slots: '1', target: '127.0.0.1:1' }] },
        }),
      ],
      [422, api('POST', '/v1/clusters/default/drain', { body: { node: 'ffffffffffff' } })],
      [503, api('GET', '/v1/clusters/wrongpw')],
      [503, api('POST', '/v1/clusters/wrongpw/rebalance', { body: { dryRun: true } })],
      [503, api('GET', '/v1/clusters/dead')],
      [503, api('POST', '/v1/clusters/dead/fix', { body: { dryRun: true } })],
      [503, api('GET', '/readyz')],
    ];
    for (const [status, pending] of expectations) {
      const response = await pending;
      expect(response.status, response.text).toBe(status);
    }
    // A refused login is named as such; an unreachable node is a connection problem. (Side by side:
    // each answer about the two broken clusters takes the API a couple of seconds of retries.)
    const [wrongpw, dead, latest] = await Promise.all([
      api('GET', '/v1/clusters/wrongpw'),
      api('GET', '/v1/clusters/dead'),
      api('GET', '/v1/migrations?limit=1'),
      api('GET', '/status.json?cluster=wrongpw'),
      api('GET', '/status.json?cluster=dead'),
    ]);
    expect(wrongpw.json().code).toBe('AUTH_FAILED');
    expect(dead.json().code).toBe('CONNECTION');
    const ended = latest.json().items[0]!.id;
    expect((await api('POST', `/v1/migrations/${ended}/pause`)).status).toBe(409);
  });

  it('names the variable of a bad configuration, never its value', async () => {
    const bad: Record<string, string>[] = [
      { SLOTFLEET_CLUSTER_URL: `redis://:${encodeURIComponent(CLUSTER_PASSWORD)}@[::1` },
      // Not URL-encoded: the URL splits inside the password.
      { SLOTFLEET_CLUSTER_URL: `redis://:${CLUSTER_PASSWORD}@127.0.0.1:7000` },
      { SLOTFLEET_CLUSTERS: `broken redis://:${encodeURIComponent(CLUSTER_PASSWORD)}@127.0.0.1:7000` },
      { SLOTFLEET_CONTROL_URL: `http://:${encodeURIComponent(CONTROL_PASSWORD)}@127.0.0.1:6379` },
      { SLOTFLEET_CONTROL_URL: `redis://:${CONTROL_PASSWORD}@127.0.0.1:6379/x` },
    ];
    for (const env of bad) {
      const run = await runSlotfleet(['worker'], { ...process.env, ...stack.env, ...env }, 30_000);
      collect(`slotfleet worker with ${Object.keys(env)[0]} bad`, run.stdout + run.stderr);
      expect(run.code).toBe(1);
      expect(run.stderr).toContain(Object.keys(env)[0]!);
    }
  });

  it('a worker with a wrong control password says so without the password', async () => {
    const dir = join(logDir, 'wrong-control');
    await mkdir(dir);
    const [worker] = spawnWorkerProcesses({
      count: 1,
      env: { ...stack.env, SLOTFLEET_CONTROL_URL: redisUrl(stack.control.port, WRONG_PASSWORD) },
      logDir: dir,
    });
    try {
      await until(async () => (await workerLogs(dir)).some((log) => /WRONGPASS/.test(log.text)), 'WRONGPASS');
    } finally {
      await stopProcesses([worker!]);
    }
  });

  it('keeps the password out of the causes of adapter errors (ioredis attaches the command)', async () => {
    const lines: string[] = [];
    const log = createLogger(
      { level: 'debug', name: 'secrets-test' },
      new Writable({
        write(chunk, _encoding, done) {
          lines.push(String(chunk));
          done();
        },
      }),
    );
    const adapters = ['default', 'wrongpw'].map(
      (name) =>
        new ClusterAdapter(name, stack.config.clusters[name]!, { commandTimeoutMs: 5_000, logger: log }),
    );
    try {
      // MIGRATE ... AUTH <password> to a master that is not importing the slot: it answers MOVED.
      const masters = (await stack.cluster.masters()).filter((master) => master.slots > 0);
      const [source, other] = [masters[0]!, masters[1]!];
      let keys: Buffer[] = [];
      for (const slot of (await slotsOf(stack.cluster, source.id)).reverse()) {
        keys = await adapters[0]!.getKeysInSlot(source, slot, 1);
        if (keys.length > 0) break;
      }
      expect(keys.length).toBe(1);
      const refused = await adapters[0]!.migrate(source, other, keys, { timeoutMs: 5_000 }).catch((e) => e);
      // A connection that fails AUTH fails its commands with the AUTH command's error.
      const wrong = await adapters[1]!.readAnyView().catch((e) => e);
      const migrateCause = (refused as Error).cause as { command?: { args: unknown[] } };
      expect(migrateCause.command?.args, inspect(migrateCause)).toContain('[redacted]');
      for (const error of [refused, wrong]) {
        expect(error).toBeInstanceOf(SlotfleetError);
        const cause = (error as Error).cause as { command?: { args: unknown[] } };
        log.error({ err: error, cause }, 'adapter error');
        collect(`inspect of ${(error as SlotfleetError).code} error`, inspect(error, { depth: null }));
        collect(`JSON of ${(error as SlotfleetError).code} cause`, {
          ...cause,
          message: (cause as Error).message,
        });
      }
      expect((refused as SlotfleetError).message).toMatch(/MOVED/);
      expect((wrong as SlotfleetError).message).toMatch(/WRONGPASS|NOAUTH/);
    } finally {
      await Promise.all(adapters.map((adapter) => adapter.close()));
    }
    // pino's redaction by itself, on a raw ioredis-like error that nothing scrubbed.
    const raw = Object.assign(new Error('ERR boom'), {
      command: { name: 'migrate', args: ['h', 1, '', 0, 1, 'AUTH', CLUSTER_PASSWORD, 'KEYS', 'k'] },
    });
    log.error({ err: raw }, 'raw error');
    expect(lines.at(-1)).toContain('"args":"[redacted]"');
    collect('in-process logger', lines.join(''));
  });

  it('finds no password or token in logs, records, jobs, metrics or responses', async () => {
    // What the processes serve, before they stop.
    for (const log of await workerLogs(logDir)) {
      const ready = log.text.split('\n').find((line) => line.includes('slotfleet worker ready'));
      if (!ready) continue;
      const { metricsPort } = JSON.parse(ready) as { metricsPort: number };
      const metrics = await fetch(`http://${SANDBOX_HOST}:${metricsPort}/metrics`).then((r) => r.text());
      expect(metrics).toContain('slotfleet_keys_migrated_total{');
      collect(`worker /metrics (${log.where})`, metrics);
    }
    const apiMetrics = await api('GET', '/metrics');
    expect(apiMetrics.text).toContain('slotfleet_queue_jobs{');

    // BullMQ jobs as BullMQ reads them back.
    const queues = [QueueName.MigrateSlot, QueueName.FinalizeSlot].map(
      (name) =>
        new Queue(name, {
          connection: controlConnectionOptions(stack.config.control, ConnectionRole.Worker),
          prefix: stack.config.queuePrefix,
        }),
    );
    try {
      for (const queue of queues) {
        const jobs = await queue.getJobs(
          [
            'completed',
            'failed',
            'active',
            'delayed',
            'waiting',
            'prioritized',
            'paused',
            'waiting-children',
          ],
          0,
          -1,
        );
        expect(jobs.length).toBeGreaterThan(0);
        for (const job of jobs) {
          const { data, opts, returnvalue, failedReason, stacktrace } = job;
          collect(`job ${queue.name} ${job.id}`, { data, opts, returnvalue, failedReason, stacktrace });
        }
      }
    } finally {
      await Promise.all(queues.map((queue) => queue.close()));
    }
    // Every key of the control Redis: records, queues, events, idempotency keys.
    const control = stack.control.client();
    try {
      let cursor = '0';
      do {
        const [next, keys] = await control.scan(cursor, 'COUNT', 1000);
        cursor = next;
        for (const key of keys) collect(`control key ${key}`, [key, await dumpKey(control, key)]);
      } while (cursor !== '0');
    } finally {
      control.disconnect();
    }

    // Process output, after a graceful stop (shutdown logs included).
    await stopProcesses([...workers, ...(apiProcess ? [apiProcess] : [])]);
    for (const log of [...(await workerLogs(logDir)), ...(await workerLogs(join(logDir, 'wrong-control')))]) {
      collect(log.where, log.text);
    }
    collect('slotfleet api output', apiOutput.join(''));
    collect('in-process stack log', stack.logLines.join(''));

    // The haystack is real: it holds what happened, addresses included.
    const everything = collected.map((entry) => entry.text).join('\n');
    for (const expected of [
      'BUSYKEY',
      '"slot done"',
      'slotfleet API listening',
      'WRONGPASS',
      'ECONNREFUSED',
      `127.0.0.1:${stack.cluster.nodes[0]!.port}`,
      'slotfleet_keys_migrated_total',
      '"failedReason"',
      'stacktrace',
      'SLOTFLEET_CLUSTER_URL',
    ]) {
      expect(everything, `the collected output should contain ${expected}`).toContain(expected);
    }
    expect(
      collected.some((entry) => entry.where.startsWith('control key') && entry.where.includes(':migration:')),
    ).toBe(true);
    const leaks = NEEDLES.flatMap((needle) =>
      collected
        .filter((entry) => entry.text.includes(needle))
        .map((entry) => {
          const at = entry.text.indexOf(needle);
          return `${entry.where}: ...${entry.text.slice(Math.max(0, at - 120), at + 40)}...`;
        }),
    );
    expect(leaks).toEqual([]);
  }, 60_000);
});

async function workerLogs(dir: string): Promise<Collected[]> {
  const names = (await readdir(dir)).filter((name) => name.endsWith('.log'));
  return Promise.all(
    names.map(async (name) => ({
      where: `worker log ${join(dir, name)}`,
      text: await readFile(join(dir, name), 'utf8'),
    })),
  );
}

async function dumpKey(control: ReturnType<Stack['control']['client']>, key: string): Promise<unknown> {
  const type = await control.type(key);
  switch (type) {
    case 'string':
      return control.get(key);
    case 'hash':
      return control.hgetall(key);
    case 'list':
      return control.lrange(key, 0, -1);
    case 'set':
      return control.smembers(key);
    case 'zset':
      return control.zrange(key, 0, -1, 'WITHSCORES');
    case 'stream':
      return control.xrange(key, '-', '+');
    default:
      return `(${type})`;
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, SANDBOX_HOST, () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

async function until(check: () => Promise<boolean>, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}
