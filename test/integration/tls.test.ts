/**
 * TLS only, end to end: a 3x1 cluster and a control Redis whose servers have no plaintext port
 * (`port 0`, `tls-port`, tls-cluster and tls-replication yes, `tls-auth-clients yes`), certificates
 * from a throwaway CA. slotfleet gets rediss:// URLs, the CA and a client certificate through
 * SLOTFLEET_TLS_*, rebalances onto a fourth master through the API to done, and every key keeps its
 * value and TTL: the keys crossed from node to node by MIGRATE, which only had TLS ports to reach
 * (the nodes' tls-cluster). Then the same servers with another CA in SLOTFLEET_TLS_CA_FILE: the API
 * answers 503 naming the TLS problem, without a stack or a password, and enqueues nothing.
 */
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { MigrationView } from '../../src/cli/migration-view.js';
import { createApi } from '../../src/producer/server.js';
import {
  createSandboxCertificates,
  type DatasetManifest,
  describeServer,
  removeSandboxCertificates,
  type SandboxCertificates,
  SandboxCluster,
  seedDataset,
  startControlRedis,
  verifyDataset,
  withAdminConnection,
} from '../../src/sandbox/index.js';
import type { RedisProcess } from '../../src/sandbox/redis-process.js';
import { type Config, loadConfig } from '../../src/shared/config.js';
import { startWorker } from '../../src/workers/worker.js';
import { capturedLogger, isAlive } from './support/processes.js';

const CLUSTER_PASSWORD = 'tls-cluster-pw-7f3a9c';
const CONTROL_PASSWORD = 'tls-control-pw-4e1b2d';
const MIGRATION_TIMEOUT_MS = 120_000;

describe('TLS to the cluster and the control Redis', () => {
  let certificates: SandboxCertificates;
  let otherCa: SandboxCertificates;
  let cluster: SandboxCluster;
  let control: RedisProcess;
  let manifest: DatasetManifest;
  let phase = 0;

  beforeAll(async () => {
    [certificates, otherCa] = await Promise.all([createSandboxCertificates(), createSandboxCertificates()]);
    const [startedControl, startedCluster] = await Promise.allSettled([
      startControlRedis({ password: CONTROL_PASSWORD, tls: certificates }),
      SandboxCluster.start({
        masters: 3,
        replicasPerMaster: 1,
        password: CLUSTER_PASSWORD,
        tls: certificates,
      }),
    ]);
    if (startedControl.status === 'fulfilled') control = startedControl.value;
    if (startedCluster.status === 'fulfilled') cluster = startedCluster.value;
    for (const started of [startedControl, startedCluster]) {
      if (started.status === 'rejected') throw started.reason;
    }
    const promised = describeServer(inject('sandboxServers')[inject('sandboxServer')].answered);
    expect([describeServer(control.server), describeServer(cluster.server)]).toEqual([promised, promised]);
    manifest = await seedDataset(cluster.seedTarget, { keys: 2_000, types: 'mixed', ttlFraction: 0.2 });
  });

  afterAll(async () => {
    const pids = [...(cluster?.startedPids() ?? []), ...(control ? [control.pid] : [])];
    await cluster?.stop();
    await control?.stop();
    await control?.removeDir();
    for (const files of [certificates, otherCa]) if (files) await removeSandboxCertificates(files);
    for (const pid of pids) expect(isAlive(pid), `redis-server pid ${pid} still running`).toBe(false);
  });

  /** slotfleet's configuration for these servers, trusting `caFile`, with the sandbox's client certificate. */
  function configTrusting(caFile: string): Config {
    return loadConfig({
      SLOTFLEET_CLUSTER_URL: cluster.seedUrl,
      SLOTFLEET_CONTROL_URL: control.url,
      SLOTFLEET_TLS_CA_FILE: caFile,
      SLOTFLEET_TLS_CERT_FILE: certificates.clientCertFile,
      SLOTFLEET_TLS_KEY_FILE: certificates.clientKeyFile,
      SLOTFLEET_QUEUE_PREFIX: `t${process.pid}-tls-${++phase}`,
      SLOTFLEET_METRICS_PORT: '0',
      SLOTFLEET_JOB_BACKOFF_MS: '100',
      SLOTFLEET_LOG_LEVEL: 'info',
    });
  }

  it('rebalances a TLS-only cluster onto a new master through the API, every key intact', async () => {
    // No plaintext port anywhere: whatever moved, moved over TLS.
    for (const node of [...cluster.nodes, control]) {
      const port = await withAdminConnection(node, (connection) => connection.config('GET', 'port'));
      expect(port, `node ${node.port}`).toEqual(['port', '0']);
    }
    expect(cluster.seedUrl).toMatch(/^rediss:\/\//);
    const added = await cluster.addEmptyMaster();
    const config = configTrusting(certificates.caFile);
    const { log } = capturedLogger(config.logLevel);
    const api = createApi(config, log);
    const worker = await startWorker(config, log, { serveMetrics: false });
    try {
      const ready = await api.app.inject({ method: 'GET', url: '/readyz' });
      expect(ready.json()).toEqual({ status: 'ready', checks: { control: 'ok', 'cluster:default': 'ok' } });
      // The new master weighs 0.25 (the others 1): about 1260 slots move.
      const created = await api.app.inject({
        method: 'POST',
        url: '/v1/clusters/default/rebalance',
        payload: { useEmptyMasters: true, weights: { [added.id]: 0.25 } },
      });
      expect(created.statusCode, created.body).toBe(202);
      const id = created.json().id as string;
      const final = await waitUntilEnded(api, id);
      expect(final).toMatchObject({ state: 'done', errors: [] });
      const detail = (await api.app.inject({ method: 'GET', url: '/v1/clusters/default' })).json();
      const newMaster = detail.masters.find((master: { id: string }) => master.id === added.id);
      expect(newMaster.slots).toBe(created.json().slots);
      expect(newMaster.slots).toBeGreaterThan(1000);
    } finally {
      await worker.close();
      await api.close();
    }
    const result = await verifyDataset(cluster.seedTarget, manifest);
    expect(result).toMatchObject({ missingCount: 0, wrongValueCount: 0, wrongTtlCount: 0, ok: true });
    expect(result.checked).toBe(manifest.count);
    await cluster.waitForConsensus();
  }, 180_000);

  it('answers 503 naming the TLS problem when SLOTFLEET_TLS_CA_FILE is another CA, and enqueues nothing', async () => {
    const config = configTrusting(otherCa.caFile);
    const { log, lines } = capturedLogger(config.logLevel);
    const api = createApi(config, log);
    let body = '';
    try {
      const created = await api.app.inject({
        method: 'POST',
        url: '/v1/clusters/default/rebalance',
        payload: { threshold: 1 },
      });
      body = created.body;
      expect(created.statusCode, body).toBe(503);
      expect(created.json()).toMatchObject({
        statusCode: 503,
        error: 'Service Unavailable',
        code: 'TLS_FAILED',
      });
      expect(created.json().message).toMatch(
        /^CLUSTER NODES on 127\.0\.0\.1:\d+: TLS: the server's certificate is not signed by a CA slotfleet trusts \(SLOTFLEET_TLS_CA_FILE's.*\(self-signed certificate in certificate chain\)$/,
      );
      // The control Redis' own check names the handshake too, once its connection has tried.
      const readiness = await pollUntil(async () => {
        const ready = await api.app.inject({ method: 'GET', url: '/readyz' });
        return /TLS/.test(ready.json().checks.control) ? ready : undefined;
      });
      body += readiness.body;
      expect(readiness.statusCode).toBe(503);
      expect(readiness.json().checks.control).toMatch(
        new RegExp(
          `^control Redis at 127\\.0\\.0\\.1:${control.port} cannot be used: TLS: the server's certificate is not signed by a CA slotfleet trusts`,
        ),
      );
      expect(readiness.json().checks['cluster:default']).toMatch(
        /TLS: the server's certificate is not signed/,
      );
    } finally {
      await api.close();
    }
    for (const text of [body, lines.join('')]) {
      expect(text).not.toContain(CLUSTER_PASSWORD);
      expect(text).not.toContain(CONTROL_PASSWORD);
      expect(text).not.toContain('PRIVATE KEY');
    }
    expect(body).not.toMatch(/\n\s+at /);
    // Nothing reached the control Redis under this configuration's queue prefix: no record, no job.
    const keys = await withAdminConnection(control, (connection) =>
      connection.keys(`${config.queuePrefix}*`),
    );
    expect(keys).toEqual([]);
  }, 120_000);
});

async function waitUntilEnded(api: ReturnType<typeof createApi>, id: string): Promise<MigrationView> {
  return pollUntil(async () => {
    const response = await api.app.inject({ method: 'GET', url: `/v1/migrations/${id}` });
    expect(response.statusCode, response.body).toBe(200);
    const record = response.json<MigrationView>();
    return record.state === 'running' || record.state === 'pending' ? undefined : record;
  }, MIGRATION_TIMEOUT_MS);
}

/** Calls `attempt` every 200 ms until it returns something, for at most `timeoutMs`. */
async function pollUntil<T>(attempt: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await attempt();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`nothing after ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}
