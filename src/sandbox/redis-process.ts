/**
 * One real server child on loopback (redis-server or valkey-server, see redis-binaries.ts), for
 * integration tests, the demo and the benchmark.
 *
 * Several test files may start servers at the same time, so a port is only "ours" once our
 * own redis-server answers on it: a free-port probe is a hint, the bind is the truth, and a
 * lost race is retried on another port.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import type { ConnectionOptions } from 'node:tls';
import { Redis } from 'ioredis';
import { parseServerIdentity, requireRedisBinaries, type ServerIdentity } from './redis-binaries.js';
import { type SandboxCertificates, sandboxTlsOptions } from './tls-certs.js';

export const SANDBOX_HOST = '127.0.0.1';

/** An ACL user written into redis.conf as `user <username> on ><password> <rules>`. */
export interface AclUser {
  username: string;
  password: string;
  /** ACL rules after the password, e.g. `~* +@read`. @defaultValue SANDBOX_ACL_RULES */
  rules?: string;
}

/** What the sandbox's own user may do: everything (it creates, fails over and inspects clusters). */
export const SANDBOX_ACL_RULES = '~* &* +@all';

export interface RedisProcessOptions {
  /** Start with `cluster-enabled yes`. @defaultValue false */
  cluster?: boolean;
  /** Sets `requirepass` and `masterauth` (replicas authenticate with the same password). */
  password?: string;
  /**
   * Run with ACL users instead of `requirepass`: the `default` user is off, this user is the one
   * every sandbox connection and replication (`masteruser`/`masterauth`) authenticates as.
   * Not together with `password`.
   */
  aclUser?: AclUser;
  /** More ACL users (only with `aclUser`), e.g. one with exactly the rules an application needs. */
  extraAclUsers?: readonly AclUser[];
  /** Enable AOF persistence, so `restart()` after a crash reloads the data. @defaultValue false */
  appendonly?: boolean;
  /** Extra redis.conf directives, written last so they override the defaults. */
  extraConfig?: Record<string, string>;
  /** Working directory for redis.conf, logs and data. @defaultValue a new `os.tmpdir()/slotfleet-sandbox-*` */
  dir?: string;
  /** `cluster-node-timeout` in ms; only with `cluster`. @defaultValue 5000 */
  clusterNodeTimeoutMs?: number;
  /** How long to wait for PING after spawning. @defaultValue 10000 */
  startTimeoutMs?: number;
  /** The server binary to run. @defaultValue the chosen one, `requireRedisBinaries()` */
  serverPath?: string;
  /**
   * TLS only: `port 0` (no plaintext port) and `tls-port` on the port this object reports, these
   * certificates, `tls-auth-clients yes` (every client presents a certificate of the CA; `extraConfig`
   * may say `no` or `optional`), and `tls-cluster`/`tls-replication yes`, so the cluster bus,
   * replication and MIGRATE between nodes use TLS too. The server must be built with TLS (Redis 7.0
   * and Valkey 8 of Debian are; the Valkey 9 of .ci/valkey9 is not).
   */
  tls?: SandboxCertificates;
}

const PORT_RANGE_START = 15_000;
const PORT_RANGE_END = 22_000;
/** Redis Cluster always puts the bus on port + 10000 unless `cluster-port` says otherwise. */
const CLUSTER_BUS_OFFSET = 10_000;
const MAX_PORT_ATTEMPTS = 20;
const STOP_GRACE_MS = 5000;
const POLL_INTERVAL_MS = 100;
const LOG_TAIL_LINES = 30;
const BIND_FAILURE =
  /Address already in use|Could not create server TCP listening socket|Failed listening on port/;

/**
 * Ports handed out in this process, so parallel starts never pick the same one. A port stays
 * reserved until `removeDir()`, because `restart()` needs it back.
 */
const reservedPorts = new Set<number>();
/** Every child that may still be alive; killed on process exit so a crashed run leaves nothing behind. */
const liveChildren = new Set<ChildProcess>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // 'exit' handlers must be synchronous: a signal is all we can do here.
  process.on('exit', () => {
    for (const child of liveChildren) {
      if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
        try {
          process.kill(child.pid, 'SIGKILL');
        } catch {
          // Already gone.
        }
      }
    }
  });
}

class PortInUseError extends Error {}

export class RedisProcess {
  readonly host = SANDBOX_HOST;
  private child: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();
  private paused = false;
  private alive = false;
  private identity: ServerIdentity | undefined;
  private readonly spawnedPids: number[] = [];

  private constructor(
    readonly port: number,
    readonly dir: string,
    readonly password: string | undefined,
    /** The ACL user connections authenticate as; undefined for the `default` user. */
    readonly username: string | undefined,
    readonly cluster: boolean,
    private readonly serverPath: string,
    private readonly startTimeoutMs: number,
    /** What a client needs to connect (the CA, the client certificate); undefined without TLS. */
    readonly tls: ConnectionOptions | undefined,
  ) {}

  /** Starts a redis-server on a free loopback port and resolves once it answers PING. */
  static async start(options: RedisProcessOptions = {}): Promise<RedisProcess> {
    const serverPath = options.serverPath ?? (await requireRedisBinaries()).serverPath;
    const dir = options.dir ?? (await mkdtemp(join(tmpdir(), 'slotfleet-sandbox-')));
    const cluster = options.cluster ?? false;
    if (options.aclUser !== undefined && options.password !== undefined) {
      throw new Error('give a redis-server either password (requirepass) or aclUser, not both');
    }
    if (options.extraAclUsers?.length && options.aclUser === undefined) {
      throw new Error('extraAclUsers need aclUser (the user the sandbox itself connects as)');
    }
    const tls = options.tls === undefined ? undefined : sandboxTlsOptions(options.tls);
    const failures: string[] = [];
    for (let attempt = 1; attempt <= MAX_PORT_ATTEMPTS; attempt++) {
      const port = await reserveFreePort();
      const redis = new RedisProcess(
        port,
        dir,
        options.aclUser?.password ?? options.password,
        options.aclUser?.username,
        cluster,
        serverPath,
        options.startTimeoutMs ?? 10_000,
        tls,
      );
      try {
        await writeFile(redis.configPath, renderConfig(redis, options));
        await redis.spawnAndWait();
        return redis;
      } catch (error) {
        reservedPorts.delete(port);
        if (!(error instanceof PortInUseError)) {
          if (options.dir === undefined) await rm(dir, { recursive: true, force: true });
          throw error;
        }
        failures.push(`${port}: ${error.message}`);
        // A node that lost the bus-port race may already have written nodes.conf for the old port.
        if (options.dir === undefined) await rm(join(dir, 'nodes.conf'), { force: true });
      }
    }
    if (options.dir === undefined) await rm(dir, { recursive: true, force: true });
    throw new Error(
      `could not start redis-server on a free loopback port after ${MAX_PORT_ATTEMPTS} attempts:\n${failures.join('\n')}`,
    );
  }

  get pid(): number {
    if (this.child?.pid === undefined) throw new Error(`${this.binaryName} on port ${this.port} has no pid`);
    return this.child.pid;
  }

  /** Which server answered (its INFO server section, read when it started): `valkey 8.0.1`. */
  get server(): ServerIdentity {
    if (this.identity === undefined) throw new Error(`server on port ${this.port} has not answered yet`);
    return this.identity;
  }

  /** Every pid this object spawned: the first start and each restart. */
  get pidHistory(): readonly number[] {
    return this.spawnedPids;
  }

  /** `redis://`, or `rediss://` for a TLS server (its CA and client certificate are in `tls`). */
  get url(): string {
    return redisUrl(this.port, this.password, SANDBOX_HOST, this.username, this.tls !== undefined);
  }

  /** The process exists (it may be paused). */
  get isRunning(): boolean {
    return this.alive;
  }

  /** The process exists and is not stopped with SIGSTOP, so it can answer commands. */
  get isResponsive(): boolean {
    return this.isRunning && !this.paused;
  }

  get isPaused(): boolean {
    return this.isRunning && this.paused;
  }

  /** `redis-server`, `valkey-server`: for messages. */
  private get binaryName(): string {
    return basename(this.serverPath);
  }

  get logPath(): string {
    return join(this.dir, 'redis.log');
  }

  private get configPath(): string {
    return join(this.dir, 'redis.conf');
  }

  private get stdioPath(): string {
    return join(this.dir, 'redis.stdio.log');
  }

  /** A new connection; the caller closes it. */
  client(): Redis {
    return new Redis({
      host: this.host,
      port: this.port,
      username: this.username,
      password: this.password,
      ...(this.tls ? { tls: this.tls } : {}),
    });
  }

  /** SIGTERM, then SIGKILL if still alive after 5 s. Safe to call twice. */
  async stop(): Promise<void> {
    const child = this.child;
    if (child === undefined || !this.isRunning) return;
    child.kill('SIGTERM');
    // A stopped process only acts on SIGTERM once it runs again.
    if (this.paused) child.kill('SIGCONT');
    this.paused = false;
    // The child is unref'd; without this, Node could exit while we wait for it.
    child.ref();
    const timer = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS);
    try {
      await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }

  /** SIGKILL: a crash, no shutdown work at all. */
  async kill(): Promise<void> {
    const child = this.child;
    if (child === undefined || !this.isRunning) return;
    child.kill('SIGKILL');
    this.paused = false;
    child.ref();
    await this.exited;
  }

  /** SIGSTOP: the server keeps its sockets open but answers nothing, like a hung node. */
  pause(): void {
    if (!this.isRunning) throw new Error(`cannot pause ${this.binaryName} on port ${this.port}: not running`);
    this.child!.kill('SIGSTOP');
    this.paused = true;
  }

  resume(): void {
    if (!this.isRunning)
      throw new Error(`cannot resume ${this.binaryName} on port ${this.port}: not running`);
    this.child!.kill('SIGCONT');
    this.paused = false;
  }

  /**
   * Starts again with the same port, dir and config, after stop() or kill() too (a running server is
   * stopped first). Data comes back only from AOF or nodes.conf; resolves once PING answers, that is
   * after the AOF is loaded.
   */
  async restart(): Promise<void> {
    await this.stop();
    try {
      await this.spawnAndWait();
    } catch (error) {
      if (error instanceof PortInUseError) {
        throw new Error(`cannot restart ${this.binaryName}: port ${this.port} is taken by another process`, {
          cause: error,
        });
      }
      throw error;
    }
  }

  /** Deletes the working directory. Stop the process first. */
  async removeDir(): Promise<void> {
    if (this.isRunning)
      throw new Error(`${this.binaryName} on port ${this.port} is still running; stop it first`);
    reservedPorts.delete(this.port);
    await rm(this.dir, { recursive: true, force: true });
  }

  private async spawnAndWait(): Promise<void> {
    // Logs are appended across attempts and restarts; only this attempt's lines explain its failure.
    const logOffsets = await Promise.all([this.stdioPath, this.logPath].map(fileSize));
    const stdio = openSync(this.stdioPath, 'a');
    let child: ChildProcess;
    try {
      child = spawn(this.serverPath, [this.configPath], { cwd: this.dir, stdio: ['ignore', stdio, stdio] });
    } finally {
      closeSync(stdio);
    }
    // A forgotten server must not keep Node alive; the exit hook kills it.
    child.unref();
    if (child.pid !== undefined) this.spawnedPids.push(child.pid);
    this.child = child;
    this.alive = true;
    this.paused = false;
    installExitHook();
    liveChildren.add(child);
    let spawnError: Error | undefined;
    this.exited = new Promise((resolve) => {
      child.once('error', (error) => {
        spawnError = error;
        this.alive = false;
        liveChildren.delete(child);
        resolve();
      });
      child.once('exit', () => {
        this.alive = false;
        liveChildren.delete(child);
        resolve();
      });
    });

    const deadline = Date.now() + this.startTimeoutMs;
    let lastError = 'no answer yet';
    while (Date.now() < deadline) {
      if (spawnError !== undefined) {
        throw new Error(`could not spawn ${this.serverPath}: ${spawnError.message}`, { cause: spawnError });
      }
      if (!this.isRunning) {
        const tail = await this.logTail(LOG_TAIL_LINES, logOffsets);
        if (BIND_FAILURE.test(tail)) throw new PortInUseError(lastLine(tail));
        throw new Error(
          `${this.binaryName} on port ${this.port} exited (code ${child.exitCode}, signal ${child.signalCode}) before answering PING; log tail:\n${tail}`,
        );
      }
      try {
        // Another sandbox may own this port if our bind lost the race: only our own pid counts.
        // Whoever holds the port may also never answer; an exit of our child ends the wait early.
        const probing = probe(this);
        probing.catch(() => {});
        const info = await Promise.race([probing, this.exited]);
        if (info === undefined) continue;
        if (info.processId === child.pid) {
          this.identity = info.server;
          return;
        }
        lastError = `port answered by pid ${info.processId}, ours is ${child.pid}`;
      } catch (error) {
        lastError = error instanceof Error ? error.message : String(error);
      }
      await sleep(POLL_INTERVAL_MS);
    }
    child.kill('SIGKILL');
    child.ref();
    await this.exited;
    const tail = await this.logTail(LOG_TAIL_LINES, logOffsets);
    if (BIND_FAILURE.test(tail)) throw new PortInUseError(lastLine(tail));
    throw new Error(
      `${this.binaryName} on port ${this.port} did not answer PING within ${this.startTimeoutMs} ms (last: ${lastError}); log tail:\n${tail}`,
    );
  }

  /**
   * Last lines of redis.log and of stdout/stderr (config errors only reach the latter),
   * optionally only from the given byte offsets on.
   */
  async logTail(lines = LOG_TAIL_LINES, fromOffsets: readonly number[] = [0, 0]): Promise<string> {
    const parts: string[] = [];
    for (const [position, path] of [this.stdioPath, this.logPath].entries()) {
      const text = await readFile(path).then(
        (content) => content.subarray(fromOffsets[position] ?? 0).toString('utf8'),
        () => '',
      );
      const tail = text.trimEnd().split('\n').slice(-lines).join('\n');
      if (tail !== '') parts.push(tail);
    }
    return parts.join('\n') || '(empty)';
  }
}

export function redisUrl(
  port: number,
  password: string | undefined,
  host = SANDBOX_HOST,
  username?: string,
  tls = false,
): string {
  const user = username === undefined ? '' : encodeURIComponent(username);
  const auth = password === undefined ? (user ? `${user}@` : '') : `${user}:${encodeURIComponent(password)}@`;
  return `${tls ? 'rediss' : 'redis'}://${auth}${host}:${port}`;
}

function renderConfig(redis: RedisProcess, options: RedisProcessOptions): string {
  const settings: Array<[string, string]> = [
    ['bind', SANDBOX_HOST],
    ...tlsSettings(redis, options.tls),
    ['protected-mode', 'no'],
    ['daemonize', 'no'],
    ['dir', redis.dir],
    ['logfile', redis.logPath],
    ['save', ''],
    ['appendonly', options.appendonly ? 'yes' : 'no'],
    ['enable-debug-command', 'yes'],
    // The 7.0 default waits 5 s before every full sync, which dominates cluster start-up.
    ['repl-diskless-sync-delay', '0'],
    // 7.0 makes a SIGTERMed master wait up to 10 s for lagging replicas; give up before stop()'s
    // SIGKILL at 5 s, so a stop stays a clean shutdown even with a paused replica.
    ['shutdown-timeout', '3'],
  ];
  if (redis.cluster) {
    settings.push(
      ['cluster-enabled', 'yes'],
      ['cluster-config-file', 'nodes.conf'],
      ['cluster-node-timeout', String(options.clusterNodeTimeoutMs ?? 5000)],
    );
  }
  const lines: string[] = [];
  if (options.aclUser !== undefined) {
    // Off: a connection that does not log in as a named user gets NOAUTH, so tests prove which user is used.
    lines.push('user default off');
    for (const user of [options.aclUser, ...(options.extraAclUsers ?? [])]) {
      const rules = (user.rules ?? SANDBOX_ACL_RULES).split(/\s+/).filter((rule) => rule !== '');
      lines.push(
        ['user', ...[user.username, 'on', `>${user.password}`, ...rules].map(quoteConfigValue)].join(' '),
      );
    }
    settings.push(['masteruser', options.aclUser.username], ['masterauth', options.aclUser.password]);
  } else if (redis.password !== undefined) {
    settings.push(['requirepass', redis.password], ['masterauth', redis.password]);
  }
  for (const [name, value] of Object.entries(options.extraConfig ?? {})) settings.push([name, value]);
  lines.push(...settings.map(([name, value]) => `${name} ${quoteConfigValue(value)}`));
  return `${lines.join('\n')}\n`;
}

/**
 * The port directives: the plaintext `port`, or for TLS `port 0` and `tls-port`. Redis then announces
 * the TLS port in CLUSTER NODES and opens the cluster bus on it + 10000 (with tls-cluster), so every
 * address the cluster gives out is a TLS one.
 */
function tlsSettings(
  redis: RedisProcess,
  certificates: SandboxCertificates | undefined,
): Array<[string, string]> {
  if (certificates === undefined) return [['port', String(redis.port)]];
  return [
    ['port', '0'],
    ['tls-port', String(redis.port)],
    ['tls-cert-file', certificates.serverCertFile],
    ['tls-key-file', certificates.serverKeyFile],
    ['tls-ca-cert-file', certificates.caFile],
    ['tls-auth-clients', 'yes'],
    ['tls-replication', 'yes'],
    ...(redis.cluster ? ([['tls-cluster', 'yes']] as Array<[string, string]>) : []),
  ];
}

function quoteConfigValue(value: string): string {
  return `"${value.replaceAll('\\', '\\\\').replaceAll('"', '\\"')}"`;
}

async function reserveFreePort(): Promise<number> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = PORT_RANGE_START + Math.floor(Math.random() * (PORT_RANGE_END - PORT_RANGE_START));
    if (reservedPorts.has(port)) continue;
    reservedPorts.add(port);
    // Cluster or not, keep port + 10000 free too: a later restart with cluster config needs it.
    if ((await canBind(port)) && (await canBind(port + CLUSTER_BUS_OFFSET))) return port;
    reservedPorts.delete(port);
  }
  throw new Error(
    `no free loopback port pair (p, p+${CLUSTER_BUS_OFFSET}) in [${PORT_RANGE_START}, ${PORT_RANGE_END})`,
  );
}

function canBind(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.unref();
    server.once('error', () => resolve(false));
    server.listen({ port, host: SANDBOX_HOST, exclusive: true }, () => server.close(() => resolve(true)));
  });
}

async function probe(redis: RedisProcess): Promise<{ processId: number; server: ServerIdentity }> {
  return withAdminConnection(
    redis,
    async (connection) => {
      // PING, unlike INFO, fails with LOADING until an AOF is fully replayed.
      await connection.ping();
      const info = await connection.info('server');
      const match = /^process_id:(\d+)/m.exec(info);
      return { processId: Number(match?.[1] ?? -1), server: parseServerIdentity(info) };
    },
    1000,
  );
}

/**
 * Runs `use` on a short-lived connection that never retries and times out every command,
 * so a dead or SIGSTOPped node costs at most a couple of seconds instead of hanging a poll.
 */
export async function withAdminConnection<T>(
  target: {
    port: number;
    password: string | undefined;
    username?: string | undefined;
    host?: string;
    /** Node TLS options (a TLS sandbox server's `tls`); undefined for plaintext. */
    tls?: ConnectionOptions | undefined;
  },
  use: (connection: Redis) => Promise<T>,
  timeoutMs = 2000,
): Promise<T> {
  const connection = new Redis({
    host: target.host ?? SANDBOX_HOST,
    port: target.port,
    username: target.username,
    password: target.password,
    ...(target.tls ? { tls: target.tls } : {}),
    lazyConnect: true,
    connectTimeout: timeoutMs,
    commandTimeout: timeoutMs,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    enableReadyCheck: false,
    enableOfflineQueue: false,
  });
  // Failures surface through the awaited commands; the event would only be logged as unhandled.
  connection.on('error', () => {});
  try {
    await connection.connect();
    return await use(connection);
  } finally {
    connection.disconnect();
  }
}

async function fileSize(path: string): Promise<number> {
  return stat(path).then(
    (stats) => stats.size,
    () => 0,
  );
}

function lastLine(text: string): string {
  const lines = text.trimEnd().split('\n');
  return lines.findLast((line) => BIND_FAILURE.test(line)) ?? lines.at(-1) ?? '';
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
