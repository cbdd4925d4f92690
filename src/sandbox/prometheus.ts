/**
 * A real Prometheus server on loopback, for integration tests: the caller's config (JSON, which is
 * YAML too), a temporary TSDB directory removed by stop(), and a small client of its HTTP API. Also
 * runs promtool. A missing binary fails with the install command: tests never skip over it.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { closeSync, constants, openSync } from 'node:fs';
import { access, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SANDBOX_HOST, sleep } from './redis-process.js';

export const PROMETHEUS_INSTALL_HINT =
  "install it with 'sudo apt-get install prometheus' (Debian/Ubuntu; provides prometheus and promtool), or 'bash scripts/setup tests', which npm test runs first";

export interface PrometheusBinaries {
  readonly prometheusPath: string;
  readonly promtoolPath: string;
}

export interface PrometheusOptions {
  /** The whole prometheus.yml, as an object. */
  readonly config: unknown;
  /** How long to wait for /-/ready. @defaultValue 20000 */
  readonly startTimeoutMs?: number;
  /** Use these binaries instead of searching PATH and /usr/bin. */
  readonly binaries?: PrometheusBinaries;
}

/** One series of a query answer: its labels and its samples as [unix seconds, value text]. */
export interface PromSeries {
  readonly metric: Record<string, string>;
  readonly values: readonly (readonly [number, string])[];
}

const FALLBACK_DIRECTORIES = ['/usr/bin', '/usr/local/bin'];
const MAX_PORT_ATTEMPTS = 5;
const STOP_GRACE_MS = 5_000;
const REQUEST_TIMEOUT_MS = 10_000;
const POLL_INTERVAL_MS = 100;
const LOG_TAIL_LINES = 20;
const BIND_FAILURE = /address already in use/i;

/** Children still alive, killed on process exit so a crashed test run leaves no server behind. */
const liveChildren = new Set<ChildProcess>();
let exitHookInstalled = false;

export async function requirePrometheusBinaries(): Promise<PrometheusBinaries> {
  return { prometheusPath: await resolveBinary('prometheus'), promtoolPath: await resolveBinary('promtool') };
}

export class PrometheusProcess {
  private constructor(
    private readonly child: ChildProcess,
    private readonly exited: Promise<void>,
    readonly port: number,
    readonly dir: string,
  ) {}

  /** Starts Prometheus on a free loopback port; resolves once /-/ready answers 200. */
  static async start(options: PrometheusOptions): Promise<PrometheusProcess> {
    const { prometheusPath } = options.binaries ?? (await requirePrometheusBinaries());
    const dir = await mkdtemp(join(tmpdir(), 'slotfleet-prometheus-'));
    const configPath = join(dir, 'prometheus.yml');
    await writeFile(configPath, `${JSON.stringify(options.config, null, 2)}\n`);
    const failures: string[] = [];
    try {
      for (let attempt = 1; attempt <= MAX_PORT_ATTEMPTS; attempt++) {
        const port = await freePort();
        const logPath = join(dir, `prometheus-${attempt}.log`);
        const log = openSync(logPath, 'a');
        let child: ChildProcess;
        try {
          child = spawn(
            prometheusPath,
            [
              `--config.file=${configPath}`,
              `--storage.tsdb.path=${join(dir, 'data')}`,
              `--web.listen-address=${SANDBOX_HOST}:${port}`,
              '--storage.tsdb.retention.time=1h',
              '--log.level=warn',
            ],
            { cwd: dir, stdio: ['ignore', log, log] },
          );
        } finally {
          closeSync(log);
        }
        const exited = track(child);
        const prometheus = new PrometheusProcess(child, exited, port, dir);
        const outcome = await prometheus.waitReady(options.startTimeoutMs ?? 20_000);
        if (outcome === 'ready') return prometheus;
        await prometheus.kill();
        const tail = await logTail(logPath);
        if (outcome === 'exited' && BIND_FAILURE.test(tail)) {
          failures.push(`${port}: ${tail.split('\n').at(-1)}`);
          continue;
        }
        throw new Error(
          `prometheus on port ${port} ${outcome === 'exited' ? 'exited' : 'was not ready'}:\n${tail}`,
        );
      }
      throw new Error(
        `no free loopback port for prometheus after ${MAX_PORT_ATTEMPTS} attempts:\n${failures.join('\n')}`,
      );
    } catch (error) {
      await rm(dir, { recursive: true, force: true });
      throw error;
    }
  }

  get url(): string {
    return `http://${SANDBOX_HOST}:${this.port}`;
  }

  get pid(): number {
    if (this.child.pid === undefined) throw new Error('prometheus has no pid');
    return this.child.pid;
  }

  /** PromQL at one instant (unix seconds; now when omitted). */
  async query(expression: string, time?: number): Promise<PromSeries[]> {
    const parameters = new URLSearchParams({ query: expression });
    if (time !== undefined) parameters.set('time', String(time));
    const data = await this.api<{ resultType: string; result: unknown[] }>(`/api/v1/query?${parameters}`);
    return data.result.map((entry) => {
      const { metric, value } = entry as { metric: Record<string, string>; value?: [number, string] };
      return { metric, values: value ? [value] : [] };
    });
  }

  /** PromQL over [start, end] (unix seconds) every stepSeconds. */
  async queryRange(
    expression: string,
    start: number,
    end: number,
    stepSeconds: number,
  ): Promise<PromSeries[]> {
    const parameters = new URLSearchParams({
      query: expression,
      start: String(start),
      end: String(end),
      step: String(stepSeconds),
    });
    const data = await this.api<{ result: PromSeries[] }>(`/api/v1/query_range?${parameters}`);
    return data.result;
  }

  /** Waits until Prometheus has scraped every target successfully; fails naming the ones that are not up. */
  async waitForTargetsUp(expectedTargets: number, timeoutMs = 20_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let last = 'no answer';
    while (Date.now() < deadline) {
      const data = await this.api<{
        activeTargets: { scrapeUrl: string; health: string; lastError: string }[];
      }>('/api/v1/targets?state=active');
      const up = data.activeTargets.filter((target) => target.health === 'up');
      if (data.activeTargets.length === expectedTargets && up.length === expectedTargets) return;
      last = data.activeTargets
        .map((target) => `${target.scrapeUrl} ${target.health} ${target.lastError}`)
        .join('; ');
      await sleep(POLL_INTERVAL_MS);
    }
    throw new Error(
      `prometheus targets not all up within ${timeoutMs} ms (expected ${expectedTargets}): ${last}`,
    );
  }

  /** SIGTERM, SIGKILL after 5 s, then removes the TSDB directory. Safe to call twice. */
  async stop(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill('SIGTERM');
      const timer = setTimeout(() => this.child.kill('SIGKILL'), STOP_GRACE_MS);
      try {
        await this.exited;
      } finally {
        clearTimeout(timer);
      }
    }
    await rm(this.dir, { recursive: true, force: true });
  }

  private async kill(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
    await this.exited;
  }

  private async waitReady(timeoutMs: number): Promise<'ready' | 'exited' | 'timeout'> {
    const deadline = Date.now() + timeoutMs;
    let gone = false;
    this.exited.then(() => {
      gone = true;
    });
    while (Date.now() < deadline) {
      if (gone) return 'exited';
      const ready = await fetch(`${this.url}/-/ready`, { signal: AbortSignal.timeout(1_000) }).then(
        (response) => response.status === 200,
        () => false,
      );
      if (ready) return 'ready';
      await sleep(POLL_INTERVAL_MS);
    }
    return 'timeout';
  }

  private async api<T>(path: string): Promise<T> {
    const response = await fetch(`${this.url}${path}`, { signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
    const body = (await response.json()) as { status: string; data: T; error?: string };
    if (body.status !== 'success') throw new Error(`prometheus ${path}: ${body.error ?? response.status}`);
    return body.data;
  }
}

/** Runs promtool with the given arguments and standard input; never throws on a non-zero exit. */
export async function promtool(
  args: readonly string[],
  input = '',
  binaries?: PrometheusBinaries,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const { promtoolPath } = binaries ?? (await requirePrometheusBinaries());
  return new Promise((resolve, reject) => {
    const child = execFile(promtoolPath, [...args], { timeout: 30_000 }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === 'number' ? error.code : null) : 0;
      if (error && code === null) reject(error);
      else resolve({ code, stdout, stderr });
    });
    child.stdin?.end(input);
  });
}

function track(child: ChildProcess): Promise<void> {
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    // 'exit' handlers must be synchronous: a signal is all we can do here.
    process.on('exit', () => {
      for (const live of liveChildren) {
        try {
          if (live.pid !== undefined) process.kill(live.pid, 'SIGKILL');
        } catch {
          // Already gone.
        }
      }
    });
  }
  liveChildren.add(child);
  return new Promise((resolve) => {
    const done = () => {
      liveChildren.delete(child);
      resolve();
    };
    child.once('exit', done);
    child.once('error', done);
  });
}

async function resolveBinary(name: string): Promise<string> {
  // The shell resolves PATH, so this module never reads the environment itself.
  const onPath = await new Promise<string>((resolve) =>
    execFile('/bin/sh', ['-c', `command -v ${name}`], { timeout: 5_000 }, (_error, stdout) =>
      resolve(String(stdout).trim()),
    ),
  );
  for (const candidate of [onPath, ...FALLBACK_DIRECTORIES.map((directory) => `${directory}/${name}`)]) {
    if (candidate.startsWith('/') && (await isExecutable(candidate))) return candidate;
  }
  throw new Error(
    `${name} not found on PATH or in ${FALLBACK_DIRECTORIES.join(', ')}: ${PROMETHEUS_INSTALL_HINT}`,
  );
}

async function isExecutable(path: string): Promise<boolean> {
  return access(path, constants.X_OK).then(
    () => true,
    () => false,
  );
}

/** A port that was free a moment ago; the bind by Prometheus is the truth (retried on failure). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once('error', reject);
    server.listen({ port: 0, host: SANDBOX_HOST, exclusive: true }, () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

async function logTail(path: string): Promise<string> {
  const text = await readFile(path, 'utf8').catch(() => '');
  return text.trimEnd().split('\n').slice(-LOG_TAIL_LINES).join('\n') || '(empty log)';
}
