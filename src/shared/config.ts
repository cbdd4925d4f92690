/**
 * Configuration, read once from the environment by loadConfig(). No other module reads
 * process.env: they receive the frozen Config (or the part of it they need).
 */
import { accessSync, constants } from 'node:fs';
import { LIMIT_RANGES } from './domain/migration.js';
import { nodeAddress } from './domain/topology.js';
import { ErrorCode, SlotfleetError } from './errors.js';

/**
 * TLS for a rediss:// endpoint, from the TLS variables (SLOTFLEET_TLS_CA_FILE and the others): file paths (checked readable at start, read
 * where connections are made), so no key material sits in the frozen config. Certificates are
 * always verified; with no caFile, against Node's default CAs.
 */
export interface TlsSettings {
  readonly caFile?: string;
  readonly certFile?: string;
  readonly keyFile?: string;
  /** SNI and the name the server certificate must carry, instead of the host connected to. */
  readonly servername?: string;
}

/** A control Redis found through Sentinel: redis+sentinel://[user:pass@]host:port[,host:port...]/name[/db]. */
export interface SentinelSettings {
  /** The sentinels to ask; any one that answers is enough. */
  readonly nodes: ReadonlyArray<{ readonly host: string; readonly port: number }>;
  /** The master group name the sentinels monitor. */
  readonly name: string;
  /** SLOTFLEET_SENTINEL_PASSWORD: the sentinels' own requirepass, when they have one. */
  readonly password?: string;
}

export interface RedisEndpoint {
  /** With sentinel: the first sentinel (what logs name); the master is asked of the sentinels. */
  readonly host: string;
  readonly port: number;
  readonly username?: string;
  readonly password?: string;
  readonly db?: number;
  /** Set for rediss:// (and rediss+sentinel://): every connection to this endpoint uses TLS. */
  readonly tls?: TlsSettings;
  /** Only on SLOTFLEET_CONTROL_URL. */
  readonly sentinel?: SentinelSettings;
}

export interface Config {
  /** Redis Clusters by name; `default` comes from SLOTFLEET_CLUSTER_URL. */
  readonly clusters: Readonly<Record<string, RedisEndpoint>>;
  /** The control Redis holding BullMQ queues and migration records. @defaultValue redis://127.0.0.1:6379 */
  readonly control: RedisEndpoint;
  /** Key prefix of every queue and record in the control Redis. @defaultValue slotfleet */
  readonly queuePrefix: string;
  readonly api: {
    /**
     * Bearer token every /v1 route requires. Without one the API only listens on loopback.
     * @defaultValue none
     */
    readonly token?: string;
    /** @defaultValue 127.0.0.1 */
    readonly host: string;
    /** @defaultValue 8080 */
    readonly port: number;
    /**
     * Mutating requests (POST, PUT, PATCH, DELETE) one client, by IP address, may send to the token-protected
     * routes per minute; beyond it the API answers 429. Counted per API process. @defaultValue 60
     */
    readonly rateLimitPerMinute: number;
  };
  readonly worker: {
    /** Slot jobs one worker process runs at once (and as many finalizer jobs). @defaultValue 16 */
    readonly concurrency: number;
    /** Keys per MIGRATE command. @defaultValue 1000 */
    readonly batchKeys: number;
    /**
     * MIGRATE commands of one slot in flight at once on the source's connection: enough that the
     * source never waits for a round trip between two, few enough that a client of the source waits
     * behind at most this many. The bench's hot slot took as long with 2 as with 4, and its clients'
     * p99 PING went from about 30 ms to 15. @defaultValue 2
     */
    readonly batchesInFlight: number;
    /**
     * Bytes per MIGRATE (MEMORY USAGE of its keys): the source is blocked while one runs. A key
     * larger than this moves alone, with a timeout scaled to its size. 0: no byte limit.
     * @defaultValue 4194304
     */
    readonly batchBytes: number;
    /** MIGRATE's I/O timeout towards the target. @defaultValue 10000 */
    readonly migrateTimeoutMs: number;
    /** Port of the worker's /metrics, /healthz and /readyz. @defaultValue 9464 */
    readonly metricsPort: number;
    /**
     * Address that port binds. A pod needs 0.0.0.0 for Prometheus and the kubelet's probes to reach it.
     * @defaultValue api.host
     */
    readonly metricsHost: string;
    /**
     * Slots drained from one source node at once across the whole fleet (all worker processes):
     * MIGRATE blocks the source until the target has restored the batch, so this bounds the
     * source's queue of MIGRATEs to this many times batchesInFlight. 0: no cap.
     * @defaultValue 4
     */
    readonly maxSlotsPerSource: number;
    /**
     * Slots drained into one target node at once across the whole fleet: the RESTOREs it runs for
     * its sources. Twice the source cap, so two sources filling one new master both run at full
     * speed. 0: no cap.
     * @defaultValue 8
     */
    readonly maxSlotsPerTarget: number;
    /**
     * Engine keys: a source -> target pair's slots move in blocks of this many, in the plan's order:
     * the job of a block's first slot opens them with its own (SETSLOT IMPORTING on the target, then
     * MIGRATING on the source, one write per node: a node saves its cluster config once per write,
     * which on Valkey costs 4-12x what it does on Redis 7.0, docs/valkey-classic-path.md), moves
     * their keys and hands them to their finalizer; their own jobs wait for it (keys-mover.ts). A
     * cancel finishes the open ones rather than dropping them. 1: every job runs its own slot.
     * @defaultValue 64
     */
    readonly openSlotsTogether: number;
    /**
     * Engine atomic: slots in one server task (CLUSTER MIGRATESLOTS) at most. A task costs a fork
     * and a hand-over however many slots it holds, so fewer, bigger tasks are faster; see
     * docs/performance.md for what a task costs clients. @defaultValue 4096
     */
    readonly atomicSlotsPerTask: number;
    /**
     * Engine atomic: server tasks in progress per source node at most, read from the source (so it
     * holds across worker processes, but for two that start in the same instant). Valkey snapshots
     * one task at a time per node anyway. @defaultValue 1
     */
    readonly atomicTasksPerSource: number;
    /**
     * Engine atomic: server tasks in progress per target node at most, read from the target: one
     * source hands over at a time, so the stalls of hand-overs do not pile up on shared cores.
     * @defaultValue 1
     */
    readonly atomicTasksPerTarget: number;
    /**
     * How long a client of a source node may wait because of a migration, for migrations that set
     * no limits.maxClientLatencyMs: the workers pace the slots draining per source and the keys per
     * MIGRATE to it (src/shared/domain/pacing.ts), under the two caps above. 0: no pacing, the caps
     * alone. @defaultValue 10
     */
    readonly maxClientLatencyMs: number;
  };
  readonly jobs: {
    /** Attempts per slot job before the slot is reported failed. @defaultValue 8 */
    readonly attempts: number;
    /** First retry delay; doubles on every attempt. @defaultValue 500 */
    readonly backoffMs: number;
    /**
     * How long a worker's claim on a job lasts without renewal (BullMQ lockDuration; renewed every
     * half of it). A worker that dies leaves its jobs to the others once this runs out.
     * @defaultValue 30000
     */
    readonly lockMs: number;
    /**
     * How often the fleet looks for jobs whose lock ran out (BullMQ stalledInterval): half of
     * lockMs, so a dead worker's slot is running again within 1.5 x lockMs.
     */
    readonly stalledCheckMs: number;
  };
  /**
   * How long a worker (or the API) may take to stop after SIGTERM or SIGINT; past it the process
   * exits 1 and its jobs go to the other workers when their lock runs out. @defaultValue 30000
   */
  readonly shutdownTimeoutMs: number;
  /**
   * The CPU priority (nice value, 0-19) the API and worker processes lower themselves to at start,
   * so that on a host they share with the cluster's nodes a client's command gets a core before
   * slotfleet's work does. @defaultValue 10
   */
  readonly nice: number;
  /** pino level. @defaultValue info */
  readonly logLevel: string;
  /** Where the operator CLI finds the API. @defaultValue http://127.0.0.1:8080 */
  readonly apiUrl: string;
}

export const DEFAULTS = {
  controlUrl: 'redis://127.0.0.1:6379',
  queuePrefix: 'slotfleet',
  apiHost: '127.0.0.1',
  apiPort: 8080,
  apiRateLimitPerMinute: 60,
  workerConcurrency: 16,
  batchKeys: 1000,
  batchesInFlight: 2,
  batchBytes: 4 * 1024 * 1024,
  migrateTimeoutMs: 10_000,
  metricsPort: 9464,
  maxSlotsPerSource: 4,
  maxSlotsPerTarget: 8,
  maxClientLatencyMs: 10,
  openSlotsTogether: 64,
  atomicSlotsPerTask: 4096,
  atomicTasksPerSource: 1,
  atomicTasksPerTarget: 1,
  jobAttempts: 8,
  jobBackoffMs: 500,
  jobLockMs: 30_000,
  shutdownTimeoutMs: 30_000,
  nice: 10,
  logLevel: 'info',
  apiUrl: 'http://127.0.0.1:8080',
} as const;

/** Every variable loadConfig reads, with its meaning: docs/configuration.md mirrors it (test/unit/config-docs.test.ts checks). */
export const ENVIRONMENT = {
  SLOTFLEET_CLUSTER_URL: 'URL of one node of the cluster named "default" (redis://[user:pass@]host:port)',
  SLOTFLEET_CLUSTERS: 'more clusters: "name=redis://host:port,other=redis://..."',
  SLOTFLEET_CONTROL_URL: `control Redis URL, or redis+sentinel://host:port[,host:port...]/master-name for Sentinel (default ${DEFAULTS.controlUrl})`,
  SLOTFLEET_SENTINEL_PASSWORD:
    "the sentinels' own password, when SLOTFLEET_CONTROL_URL names sentinels that require one",
  SLOTFLEET_TLS_CA_FILE:
    'PEM file of the CA(s) that signed the servers of every rediss:// URL (default: the system CAs)',
  SLOTFLEET_TLS_CERT_FILE: 'PEM client certificate for rediss:// URLs, with SLOTFLEET_TLS_KEY_FILE',
  SLOTFLEET_TLS_KEY_FILE: 'PEM private key of SLOTFLEET_TLS_CERT_FILE',
  SLOTFLEET_TLS_SERVERNAME:
    'name the servers of rediss:// URLs must carry in their certificate (SNI), instead of the host connected to',
  SLOTFLEET_QUEUE_PREFIX: `prefix of queues and records in the control Redis (default ${DEFAULTS.queuePrefix})`,
  SLOTFLEET_API_TOKEN:
    'bearer token required on every /v1 route (without one the API listens on loopback only)',
  SLOTFLEET_API_HOST: `API listen address (default ${DEFAULTS.apiHost})`,
  SLOTFLEET_API_PORT: `API port (default ${DEFAULTS.apiPort})`,
  SLOTFLEET_API_RATE_LIMIT: `mutating API requests per minute per client IP, then 429 (default ${DEFAULTS.apiRateLimitPerMinute})`,
  SLOTFLEET_WORKER_CONCURRENCY: `slot jobs per worker process (default ${DEFAULTS.workerConcurrency})`,
  SLOTFLEET_BATCH_KEYS: `keys per MIGRATE (default ${DEFAULTS.batchKeys})`,
  SLOTFLEET_BATCHES_IN_FLIGHT: `MIGRATE batches of one slot in flight (default ${DEFAULTS.batchesInFlight})`,
  SLOTFLEET_BATCH_BYTES: `bytes per MIGRATE, 0 for no limit (default ${DEFAULTS.batchBytes})`,
  SLOTFLEET_MIGRATE_TIMEOUT_MS: `MIGRATE I/O timeout (default ${DEFAULTS.migrateTimeoutMs})`,
  SLOTFLEET_METRICS_PORT: `worker /metrics, /healthz and /readyz port (default ${DEFAULTS.metricsPort})`,
  SLOTFLEET_METRICS_HOST: 'address the worker metrics port binds (default: SLOTFLEET_API_HOST)',
  SLOTFLEET_MAX_SLOTS_PER_SOURCE: `slots draining from one source node at once, whole fleet, 0 for no cap (default ${DEFAULTS.maxSlotsPerSource})`,
  SLOTFLEET_MAX_SLOTS_PER_TARGET: `slots draining into one target node at once, whole fleet, 0 for no cap (default ${DEFAULTS.maxSlotsPerTarget})`,
  SLOTFLEET_OPEN_SLOTS_TOGETHER: `engine keys: a source -> target pair's slots are opened (SETSLOT IMPORTING, MIGRATING, one write per node) and drained in blocks of this many by the job of each block's first slot; 1: every job runs its own slot (default ${DEFAULTS.openSlotsTogether})`,
  SLOTFLEET_ATOMIC_SLOTS_PER_TASK: `engine atomic: slots in one server task (CLUSTER MIGRATESLOTS) at most (default ${DEFAULTS.atomicSlotsPerTask})`,
  SLOTFLEET_ATOMIC_TASKS_PER_SOURCE: `engine atomic: server tasks in progress per source node at most (default ${DEFAULTS.atomicTasksPerSource})`,
  SLOTFLEET_ATOMIC_TASKS_PER_TARGET: `engine atomic: server tasks in progress per target node at most (default ${DEFAULTS.atomicTasksPerTarget})`,
  SLOTFLEET_MAX_CLIENT_LATENCY_MS: `how long a client of a source may wait, for migrations that set none; 0: no pacing (default ${DEFAULTS.maxClientLatencyMs})`,
  SLOTFLEET_JOB_ATTEMPTS: `attempts per slot job (default ${DEFAULTS.jobAttempts})`,
  SLOTFLEET_JOB_BACKOFF_MS: `first retry delay, doubling (default ${DEFAULTS.jobBackoffMs})`,
  SLOTFLEET_JOB_LOCK_MS: `job lock; a dead worker's jobs resume within 1.5x this (default ${DEFAULTS.jobLockMs})`,
  SLOTFLEET_SHUTDOWN_TIMEOUT_MS: `time to stop after SIGTERM before exiting 1 (default ${DEFAULTS.shutdownTimeoutMs})`,
  SLOTFLEET_NICE: `CPU priority (nice, 0-19) the API and worker processes lower themselves to, so the cluster's nodes on the same host get a core first (default ${DEFAULTS.nice})`,
  SLOTFLEET_LOG_LEVEL: `pino log level (default ${DEFAULTS.logLevel})`,
  SLOTFLEET_API_URL: `where the operator commands reach the API (default ${DEFAULTS.apiUrl})`,
} as const;

type Environment = Readonly<Record<string, string | undefined>>;

export function loadConfig(env: Environment): Config {
  const tls = tlsSettings(env);
  const clusters: Record<string, RedisEndpoint> = {};
  const defaultUrl = nonEmpty(env.SLOTFLEET_CLUSTER_URL);
  if (defaultUrl) clusters.default = parseRedisUrl(defaultUrl, 'SLOTFLEET_CLUSTER_URL', { tls });
  const more = nonEmpty(env.SLOTFLEET_CLUSTERS);
  if (more) {
    const entries = more.split(',');
    for (const [index, entry] of entries.entries()) {
      const separator = entry.indexOf('=');
      const name = entry.slice(0, separator).trim();
      if (separator < 1 || !/^[a-zA-Z0-9_-]{1,64}$/.test(name)) {
        // Not echoed: a password with a raw "," splits into entries that are fragments of it.
        throw configError(
          'SLOTFLEET_CLUSTERS',
          `entry ${index + 1} of ${entries.length} is not name=redis://host:port (names: letters, digits, "-", "_")`,
        );
      }
      clusters[name] = parseRedisUrl(entry.slice(separator + 1).trim(), `SLOTFLEET_CLUSTERS (${name})`, {
        tls,
      });
    }
  }
  const logLevel = nonEmpty(env.SLOTFLEET_LOG_LEVEL) ?? DEFAULTS.logLevel;
  if (!['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].includes(logLevel)) {
    throw configError('SLOTFLEET_LOG_LEVEL', `"${logLevel}" is not a pino level`);
  }
  const queuePrefix = nonEmpty(env.SLOTFLEET_QUEUE_PREFIX) ?? DEFAULTS.queuePrefix;
  if (!/^[a-zA-Z0-9_-]{1,64}$/.test(queuePrefix)) {
    throw configError('SLOTFLEET_QUEUE_PREFIX', 'use letters, digits, "-" and "_" only');
  }
  const lockMs = integer(env, 'SLOTFLEET_JOB_LOCK_MS', DEFAULTS.jobLockMs, 1_000, 3_600_000);
  const token = nonEmpty(env.SLOTFLEET_API_TOKEN);
  if (token !== undefined && token.length < 16) {
    throw configError('SLOTFLEET_API_TOKEN', 'use at least 16 characters (e.g. openssl rand -hex 24)');
  }
  const apiHost = nonEmpty(env.SLOTFLEET_API_HOST) ?? DEFAULTS.apiHost;
  const config: Config = {
    clusters,
    control: parseRedisUrl(
      nonEmpty(env.SLOTFLEET_CONTROL_URL) ?? DEFAULTS.controlUrl,
      'SLOTFLEET_CONTROL_URL',
      {
        tls,
        sentinel: true,
        sentinelPassword: nonEmpty(env.SLOTFLEET_SENTINEL_PASSWORD),
      },
    ),
    queuePrefix,
    api: {
      ...(token !== undefined ? { token } : {}),
      host: apiHost,
      port: integer(env, 'SLOTFLEET_API_PORT', DEFAULTS.apiPort, 0, 65535),
      rateLimitPerMinute: integer(
        env,
        'SLOTFLEET_API_RATE_LIMIT',
        DEFAULTS.apiRateLimitPerMinute,
        1,
        1_000_000,
      ),
    },
    worker: {
      concurrency: integer(env, 'SLOTFLEET_WORKER_CONCURRENCY', DEFAULTS.workerConcurrency, 1, 1024),
      // At most 5000: a batch is chosen by a script on the source, and Lua's unpack() is bounded.
      batchKeys: integer(env, 'SLOTFLEET_BATCH_KEYS', DEFAULTS.batchKeys, 1, 5_000),
      batchesInFlight: integer(env, 'SLOTFLEET_BATCHES_IN_FLIGHT', DEFAULTS.batchesInFlight, 1, 64),
      batchBytes: integer(env, 'SLOTFLEET_BATCH_BYTES', DEFAULTS.batchBytes, 0, 1024 * 1024 * 1024),
      migrateTimeoutMs: integer(
        env,
        'SLOTFLEET_MIGRATE_TIMEOUT_MS',
        DEFAULTS.migrateTimeoutMs,
        100,
        3_600_000,
      ),
      metricsPort: integer(env, 'SLOTFLEET_METRICS_PORT', DEFAULTS.metricsPort, 0, 65535),
      metricsHost: nonEmpty(env.SLOTFLEET_METRICS_HOST) ?? apiHost,
      maxSlotsPerSource: integer(env, 'SLOTFLEET_MAX_SLOTS_PER_SOURCE', DEFAULTS.maxSlotsPerSource, 0, 1024),
      maxSlotsPerTarget: integer(env, 'SLOTFLEET_MAX_SLOTS_PER_TARGET', DEFAULTS.maxSlotsPerTarget, 0, 1024),
      openSlotsTogether: integer(env, 'SLOTFLEET_OPEN_SLOTS_TOGETHER', DEFAULTS.openSlotsTogether, 1, 1024),
      atomicSlotsPerTask: integer(
        env,
        'SLOTFLEET_ATOMIC_SLOTS_PER_TASK',
        DEFAULTS.atomicSlotsPerTask,
        1,
        16_384,
      ),
      atomicTasksPerSource: integer(
        env,
        'SLOTFLEET_ATOMIC_TASKS_PER_SOURCE',
        DEFAULTS.atomicTasksPerSource,
        1,
        64,
      ),
      atomicTasksPerTarget: integer(
        env,
        'SLOTFLEET_ATOMIC_TASKS_PER_TARGET',
        DEFAULTS.atomicTasksPerTarget,
        1,
        64,
      ),
      maxClientLatencyMs: integer(
        env,
        'SLOTFLEET_MAX_CLIENT_LATENCY_MS',
        DEFAULTS.maxClientLatencyMs,
        0,
        LIMIT_RANGES.maxClientLatencyMs.maximum,
      ),
    },
    jobs: {
      attempts: integer(env, 'SLOTFLEET_JOB_ATTEMPTS', DEFAULTS.jobAttempts, 1, 1000),
      backoffMs: integer(env, 'SLOTFLEET_JOB_BACKOFF_MS', DEFAULTS.jobBackoffMs, 0, 600_000),
      lockMs,
      stalledCheckMs: Math.ceil(lockMs / 2),
    },
    shutdownTimeoutMs: integer(
      env,
      'SLOTFLEET_SHUTDOWN_TIMEOUT_MS',
      DEFAULTS.shutdownTimeoutMs,
      0,
      3_600_000,
    ),
    nice: integer(env, 'SLOTFLEET_NICE', DEFAULTS.nice, 0, 19),
    logLevel,
    apiUrl: httpUrl(nonEmpty(env.SLOTFLEET_API_URL) ?? DEFAULTS.apiUrl, 'SLOTFLEET_API_URL'),
  };
  return deepFreeze(config);
}

/** Why a URL may not parse; the text itself is never echoed (which part is the password is unknown). */
const ENCODING_HINT = 'characters such as @ / : # % , in a user or password must be URL-encoded';

export interface ParseOptions {
  /** What a rediss:// URL connects with. @defaultValue {} (verified against the system CAs) */
  readonly tls?: TlsSettings;
  /** Accept redis+sentinel:// and rediss+sentinel:// (the control Redis only). @defaultValue false */
  readonly sentinel?: boolean;
  readonly sentinelPassword?: string;
}

const SENTINEL_PROTOCOLS = new Set(['redis+sentinel:', 'rediss+sentinel:']);
const DEFAULT_SENTINEL_PORT = 26379;

export function parseRedisUrl(text: string, variable: string, options: ParseOptions = {}): RedisEndpoint {
  const protocol = /^[a-z+]+:/i.exec(text)?.[0].toLowerCase();
  if (protocol !== undefined && SENTINEL_PROTOCOLS.has(protocol)) {
    if (!options.sentinel) {
      throw configError(
        variable,
        'Sentinel (redis+sentinel://) is for SLOTFLEET_CONTROL_URL only; give a cluster node',
      );
    }
    return parseSentinelUrl(text, variable, options);
  }
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw configError(variable, `not a URL (expected redis://[user:pass@]host:port; ${ENCODING_HINT})`);
  }
  if (url.protocol !== 'redis:' && url.protocol !== 'rediss:') {
    const also = options.sentinel ? ', redis+sentinel: or rediss+sentinel:' : '';
    throw configError(variable, `protocol "${url.protocol}" is not redis: or rediss:${also}`);
  }
  if (!url.hostname) throw configError(variable, 'the URL has no host');
  const port = url.port === '' ? 6379 : Number(url.port);
  const db = url.pathname.length > 1 ? Number(url.pathname.slice(1)) : undefined;
  if (db !== undefined && !Number.isInteger(db)) throw configError(variable, 'the database must be a number');
  return {
    host: url.hostname.replace(/^\[(.*)\]$/, '$1'),
    port,
    ...credentials(url, variable),
    ...(db !== undefined ? { db } : {}),
    ...(url.protocol === 'rediss:' ? { tls: options.tls ?? {} } : {}),
  };
}

/**
 * redis+sentinel://[user:pass@]host:port[,host:port...]/master-name[/db]: WHATWG URL parsing takes
 * one host only, so the sentinel list is cut out first and a placeholder host parsed in its place.
 */
function parseSentinelUrl(text: string, variable: string, options: ParseOptions): RedisEndpoint {
  const expected = 'expected redis+sentinel://[user:pass@]host:port[,host:port...]/master-name[/db]';
  const match = /^([a-z+]+):\/\/(?:([^@/]*)@)?([^/]*)(\/.*)?$/i.exec(text);
  if (!match) throw configError(variable, `not a Sentinel URL (${expected}; ${ENCODING_HINT})`);
  const [, scheme, auth, hostList, path] = match as unknown as [
    string,
    string,
    string | undefined,
    string,
    string | undefined,
  ];
  const nodes = hostList.split(',').map((entry) => {
    const hostPort = /^(\[[^\]]+\]|[^:[\]]+)(?::(\d+))?$/.exec(entry.trim());
    if (!hostPort) throw configError(variable, `a sentinel address is not host:port (${expected})`);
    const port = hostPort[2] === undefined ? DEFAULT_SENTINEL_PORT : Number(hostPort[2]);
    if (port < 1 || port > 65535) throw configError(variable, 'a sentinel port is not 1-65535');
    return { host: hostPort[1]!.replace(/^\[(.*)\]$/, '$1'), port };
  });
  const [name, dbText, ...rest] = (path ?? '').split('/').slice(1);
  if (!name) throw configError(variable, `the URL names no master group (${expected})`);
  if (rest.length > 0 || (dbText !== undefined && !/^\d+$/.test(dbText))) {
    throw configError(variable, `the path is not /master-name[/db] (${expected})`);
  }
  let url: URL;
  try {
    url = new URL(`redis://${auth === undefined ? '' : `${auth}@`}sentinel.invalid`);
  } catch {
    throw configError(variable, `the user or password does not parse (${ENCODING_HINT})`);
  }
  let masterName: string;
  try {
    masterName = decodeURIComponent(name);
  } catch {
    throw configError(variable, 'the master group name is not valid URL encoding');
  }
  const first = nodes[0]!;
  return {
    host: first.host,
    port: first.port,
    ...credentials(url, variable),
    ...(dbText !== undefined ? { db: Number(dbText) } : {}),
    ...(scheme.toLowerCase() === 'rediss+sentinel' ? { tls: options.tls ?? {} } : {}),
    sentinel: {
      nodes,
      name: masterName,
      ...(options.sentinelPassword !== undefined ? { password: options.sentinelPassword } : {}),
    },
  };
}

function credentials(url: URL, variable: string): { username?: string; password?: string } {
  try {
    const username = decodeURIComponent(url.username);
    const password = decodeURIComponent(url.password);
    return { ...(username ? { username } : {}), ...(password ? { password } : {}) };
  } catch {
    throw configError(variable, `the user or password is not valid URL encoding (${ENCODING_HINT})`);
  }
}

/** The TLS variables: each file must be readable now, not at the first rediss:// connection. */
function tlsSettings(env: Environment): TlsSettings {
  const file = (variable: string): string | undefined => {
    const path = nonEmpty(env[variable]);
    if (path === undefined) return undefined;
    try {
      accessSync(path, constants.R_OK);
    } catch (error) {
      throw configError(
        variable,
        `cannot read ${path} (${(error as NodeJS.ErrnoException).code ?? 'error'})`,
      );
    }
    return path;
  };
  const caFile = file('SLOTFLEET_TLS_CA_FILE');
  const certFile = file('SLOTFLEET_TLS_CERT_FILE');
  const keyFile = file('SLOTFLEET_TLS_KEY_FILE');
  if ((certFile === undefined) !== (keyFile === undefined)) {
    throw configError(
      certFile === undefined ? 'SLOTFLEET_TLS_CERT_FILE' : 'SLOTFLEET_TLS_KEY_FILE',
      'a client certificate needs both SLOTFLEET_TLS_CERT_FILE and SLOTFLEET_TLS_KEY_FILE',
    );
  }
  const servername = nonEmpty(env.SLOTFLEET_TLS_SERVERNAME);
  return {
    ...(caFile !== undefined ? { caFile } : {}),
    ...(certFile !== undefined ? { certFile } : {}),
    ...(keyFile !== undefined ? { keyFile } : {}),
    ...(servername !== undefined ? { servername } : {}),
  };
}

/**
 * Where an endpoint is, for logs and responses (never the credentials): host:port, or for Sentinel
 * the master group and the sentinels asked, `sentinel master control-main via 10.0.0.1:26379,...`.
 */
export function describeEndpoint(endpoint: RedisEndpoint): string {
  if (endpoint.sentinel === undefined) return nodeAddress(endpoint);
  const sentinels = endpoint.sentinel.nodes.map(({ host, port }) =>
    host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`,
  );
  return `sentinel master ${endpoint.sentinel.name} via ${sentinels.join(',')}`;
}

function httpUrl(text: string, variable: string): string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw configError(variable, 'not a URL (expected http://host:port)');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:')
    throw configError(variable, 'use http:// or https://');
  return url.toString().replace(/\/$/, '');
}

function integer(env: Environment, name: string, fallback: number, min: number, max: number): number {
  const raw = nonEmpty(env[name]);
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (!/^\d+$/.test(raw) || !Number.isSafeInteger(value) || value < min || value > max) {
    throw configError(name, `"${raw}" is not a whole number from ${min} to ${max}`);
  }
  return value;
}

function nonEmpty(value: string | undefined): string | undefined {
  const trimmed = value?.trim();
  return trimmed ? trimmed : undefined;
}

function configError(variable: string, problem: string): SlotfleetError {
  return new SlotfleetError(ErrorCode.Config, `${variable}: ${problem}`);
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object') {
    for (const inner of Object.values(value)) deepFreeze(inner);
    Object.freeze(value);
  }
  return value;
}
