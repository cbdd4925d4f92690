/**
 * A worker's /healthz and /readyz on real servers, as a kubelet probes them: the control Redis is
 * killed (readiness 503 naming it, liveness still 200) and restarted on its port (ready again); a
 * configured cluster that does not answer makes the worker not ready, named without its password;
 * a burst of probes costs the control Redis at most one PING; and the port binds
 * SLOTFLEET_METRICS_HOST, refused by that name when it is no address of this machine.
 */
import { createServer } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/shared/config.js';
import { startWorker, type WorkerHandle } from '../../src/workers/worker.js';
import { type Stack, startStack } from './support/stack.js';

interface Answer {
  readonly status: number;
  readonly body: { status: string; checks?: Record<string, string> };
  readonly text: string;
}

async function get(base: string, path: string): Promise<Answer> {
  const response = await fetch(`${base}${path}`, { signal: AbortSignal.timeout(10_000) });
  const text = await response.text();
  return { status: response.status, body: JSON.parse(text), text };
}

/** GET `path` until `accept` holds; readiness answers are reused for a second, reconnects take up to 2 s. */
async function getUntil(
  base: string,
  path: string,
  accept: (answer: Answer) => boolean,
  timeoutMs = 20_000,
): Promise<Answer> {
  const deadline = Date.now() + timeoutMs;
  let answer = await get(base, path);
  while (!accept(answer)) {
    if (Date.now() > deadline)
      throw new Error(`GET ${path} never matched in ${timeoutMs} ms; last: ${answer.text}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
    answer = await get(base, path);
  }
  return answer;
}

/** A loopback port nothing listens on (connections to it are refused at once). */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  await new Promise((resolve) => server.close(resolve));
  return typeof address === 'object' && address ? address.port : 0;
}

describe('worker /healthz and /readyz', () => {
  let stack: Stack;

  beforeAll(async () => {
    stack = await startStack({ workers: 0, replicasPerMaster: 0 });
  });

  afterAll(async () => {
    await stack?.stop();
  });

  it('is ready with the control Redis and the cluster up; not ready, naming the control Redis, while it is down', async () => {
    const worker = await stack.startWorker({ serveMetrics: true });
    const base = `http://127.0.0.1:${worker.metricsPort}`;
    expect(await get(base, '/healthz')).toMatchObject({ status: 200, body: { status: 'ok' } });
    const ready = await getUntil(base, '/readyz', (answer) => answer.status === 200);
    expect(ready.body).toEqual({ status: 'ready', checks: { control: 'ok', 'cluster:default': 'ok' } });
    expect((await fetch(`${base}/metrics`)).status).toBe(200);
    expect((await fetch(`${base}/nowhere`)).status).toBe(404);

    await stack.control.kill();
    const down = await getUntil(base, '/readyz', (answer) => answer.status !== 200);
    expect(down.status).toBe(503);
    expect(down.body.status).toBe('not ready');
    expect(down.body.checks?.control).toMatch(
      new RegExp(`^control Redis at 127\\.0\\.0\\.1:${stack.control.port} `),
    );
    expect(down.body.checks?.['cluster:default']).toBe('ok');
    expect((await get(base, '/healthz')).status).toBe(200);

    await stack.control.restart();
    const back = await getUntil(base, '/readyz', (answer) => answer.status === 200);
    expect(back.body).toEqual({ status: 'ready', checks: { control: 'ok', 'cluster:default': 'ok' } });
  });

  it('reuses a readiness answer for a burst of probes: at most one PING to the control Redis', async () => {
    const worker = await stack.startWorker({ serveMetrics: true });
    const base = `http://127.0.0.1:${worker.metricsPort}`;
    await getUntil(base, '/readyz', (answer) => answer.status === 200);
    const client = stack.control.client();
    try {
      const pings = async () =>
        Number(/cmdstat_ping:calls=(\d+)/.exec(await client.info('commandstats'))?.[1] ?? 0);
      const before = await pings();
      const answers = await Promise.all(Array.from({ length: 50 }, () => get(base, '/readyz')));
      expect(answers.every((answer) => answer.status === 200)).toBe(true);
      expect((await pings()) - before).toBeLessThanOrEqual(1);
    } finally {
      client.disconnect();
    }
  });

  it('is not ready while any configured cluster does not answer, and names it without its password', async () => {
    const port = await closedPort();
    const password = 'readyz-secret-4e1f';
    const config = loadConfig({
      ...stack.env,
      SLOTFLEET_CLUSTERS: `gone=redis://:${password}@127.0.0.1:${port}`,
    });
    const worker = await startWorker(config, stack.log);
    try {
      const base = `http://127.0.0.1:${worker.metricsPort}`;
      const answer = await getUntil(base, '/readyz', (candidate) => candidate.body.checks?.control === 'ok');
      expect(answer.status).toBe(503);
      expect(answer.body.checks?.['cluster:default']).toBe('ok');
      expect(answer.body.checks?.['cluster:gone']).toMatch(new RegExp(`127\\.0\\.0\\.1:${port}`));
      expect(answer.text).not.toContain(password);
      expect((await get(base, '/healthz')).status).toBe(200);
    } finally {
      await worker.close();
    }
  });

  it('binds SLOTFLEET_METRICS_HOST, not the API host', async () => {
    const config = loadConfig({ ...stack.env, SLOTFLEET_METRICS_HOST: '127.0.0.2' });
    expect(config.api.host).toBe('127.0.0.1');
    let worker: WorkerHandle | undefined;
    try {
      worker = await startWorker(config, stack.log);
      expect((await get(`http://127.0.0.2:${worker.metricsPort}`, '/healthz')).status).toBe(200);
      await expect(fetch(`http://127.0.0.1:${worker.metricsPort}/healthz`)).rejects.toThrow();
    } finally {
      await worker?.close();
    }
  });

  it('refuses an address of no interface here, naming SLOTFLEET_METRICS_HOST', async () => {
    // 192.0.2.1 (TEST-NET-1, RFC 5737) is assigned to no machine: bind() fails, nothing is sent.
    const config = loadConfig({ ...stack.env, SLOTFLEET_METRICS_HOST: '192.0.2.1' });
    await expect(startWorker(config, stack.log)).rejects.toThrow(
      /^SLOTFLEET_METRICS_HOST: cannot serve \/metrics on 192\.0\.2\.1:0 \(.*EADDRNOTAVAIL/,
    );
  });
});
