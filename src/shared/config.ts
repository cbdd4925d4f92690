/**
 * Configuration, read once from the environment by loadConfig(). No other module reads
 * process.env: they receive the frozen Config (or the part of it they need).
 */
import { ErrorCode, SlotfleetError } from './errors.js';

export interface RedisEndpoint {
  readonly host: string;
  readonly port: number;
  readonly username?: string;
  readonly password?: string;
  readonly db?: number;
  readonly tls?: boolean;
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
    /** MIGRATE commands of one slot in flight at once on the source's connection. @defaultValue 4 */
    readonly batchesInFlight: number;
    /** MIGRATE's I/O timeout towards the target. @defaultValue 10000 */
    readonly migrateTimeoutMs: number;
    /** Port of the worker's /metrics endpoint. @defaultValue 9464 */
    readonly metricsPort: number;
  };
  readonly jobs: {
    /** Attempts per slot job before the slot is reported failed. @defaultValue 8 */
    readonly attempts: number;
    /** First retry delay; doubles on every attempt. @defaultValue 500 */
    readonly backoffMs: number;
  };
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
  batchesInFlight: 4,
  migrateTimeoutMs: 10_000,
  metricsPort: 9464,
  jobAttempts: 8,
  jobBackoffMs: 500,
  logLevel: 'info',
  apiUrl: 'http://127.0.0.1:8080',
} as const;

/** Every variable loadConfig reads, with its meaning: the README's configuration table mirrors it. */
export const ENVIRONMENT = {
  SLOTFLEET_CLUSTER_URL: 'URL of one node of the cluster named "default" (redis://[user:pass@]host:port)',
  SLOTFLEET_CLUSTERS: 'more clusters: "name=redis://host:port,other=redis://..."',
  SLOTFLEET_CONTROL_URL: `control Redis URL (default ${DEFAULTS.controlUrl})`,
  SLOTFLEET_QUEUE_PREFIX: `prefix of queues and records in the control Redis (default ${DEFAULTS.queuePrefix})`,
  SLOTFLEET_API_TOKEN:
    'bearer token required on every /v1 route (without one the API listens on loopback only)',
  SLOTFLEET_API_HOST: `API listen address (default ${DEFAULTS.apiHost})`,
  SLOTFLEET_API_PORT: `API port (default ${DEFAULTS.apiPort})`,
  SLOTFLEET_API_RATE_LIMIT: `mutating API requests per minute per client IP, then 429 (default ${DEFAULTS.apiRateLimitPerMinute})`,
  SLOTFLEET_WORKER_CONCURRENCY: `slot jobs per worker process (default ${DEFAULTS.workerConcurrency})`,
  SLOTFLEET_BATCH_KEYS: `keys per MIGRATE (default ${DEFAULTS.batchKeys})`,
  SLOTFLEET_BATCHES_IN_FLIGHT: `MIGRATE batches of one slot in flight (default ${DEFAULTS.batchesInFlight})`,
  SLOTFLEET_MIGRATE_TIMEOUT_MS: `MIGRATE I/O timeout (default ${DEFAULTS.migrateTimeoutMs})`,
  SLOTFLEET_METRICS_PORT: `worker /metrics port (default ${DEFAULTS.metricsPort})`,
  SLOTFLEET_JOB_ATTEMPTS: `attempts per slot job (default ${DEFAULTS.jobAttempts})`,
  SLOTFLEET_JOB_BACKOFF_MS: `first retry delay, doubling (default ${DEFAULTS.jobBackoffMs})`,
  SLOTFLEET_LOG_LEVEL: `pino log level (default ${DEFAULTS.logLevel})`,
  SLOTFLEET_API_URL: `where the operator commands reach the API (default ${DEFAULTS.apiUrl})`,
} as const;

type Environment = Readonly<Record<string, string | undefined>>;

export function loadConfig(env: Environment): Config {
  const clusters: Record<string, RedisEndpoint> = {};
  const defaultUrl = nonEmpty(env.SLOTFLEET_CLUSTER_URL);
  if (defaultUrl) clusters.default = parseRedisUrl(defaultUrl, 'SLOTFLEET_CLUSTER_URL');
  const more = nonEmpty(env.SLOTFLEET_CLUSTERS);
  if (more) {
    for (const entry of more.split(',')) {
      const separator = entry.indexOf('=');
      const name = entry.slice(0, separator).trim();
      if (separator < 1 || !/^[a-zA-Z0-9_-]{1,64}$/.test(name)) {
        throw configError('SLOTFLEET_CLUSTERS', `"${redactUrlText(entry)}" is not name=redis://host:port`);
      }
      clusters[name] = parseRedisUrl(entry.slice(separator + 1).trim(), `SLOTFLEET_CLUSTERS (${name})`);
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
  const token = nonEmpty(env.SLOTFLEET_API_TOKEN);
  if (token !== undefined && token.length < 16) {
    throw configError('SLOTFLEET_API_TOKEN', 'use at least 16 characters (e.g. openssl rand -hex 24)');
  }
  const config: Config = {
    clusters,
    control: parseRedisUrl(
      nonEmpty(env.SLOTFLEET_CONTROL_URL) ?? DEFAULTS.controlUrl,
      'SLOTFLEET_CONTROL_URL',
    ),
    queuePrefix,
    api: {
      ...(token !== undefined ? { token } : {}),
      host: nonEmpty(env.SLOTFLEET_API_HOST) ?? DEFAULTS.apiHost,
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
      batchKeys: integer(env, 'SLOTFLEET_BATCH_KEYS', DEFAULTS.batchKeys, 1, 100_000),
      batchesInFlight: integer(env, 'SLOTFLEET_BATCHES_IN_FLIGHT', DEFAULTS.batchesInFlight, 1, 64),
      migrateTimeoutMs: integer(
        env,
        'SLOTFLEET_MIGRATE_TIMEOUT_MS',
        DEFAULTS.migrateTimeoutMs,
        100,
        3_600_000,
      ),
      metricsPort: integer(env, 'SLOTFLEET_METRICS_PORT', DEFAULTS.metricsPort, 0, 65535),
    },
    jobs: {
      attempts: integer(env, 'SLOTFLEET_JOB_ATTEMPTS', DEFAULTS.jobAttempts, 1, 1000),
      backoffMs: integer(env, 'SLOTFLEET_JOB_BACKOFF_MS', DEFAULTS.jobBackoffMs, 0, 600_000),
    },
    logLevel,
    apiUrl: httpUrl(nonEmpty(env.SLOTFLEET_API_URL) ?? DEFAULTS.apiUrl, 'SLOTFLEET_API_URL'),
  };
  return deepFreeze(config);
}

export function parseRedisUrl(text: string, variable: string): RedisEndpoint {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw configError(
      variable,
      `"${redactUrlText(text)}" is not a URL (expected redis://[user:pass@]host:port)`,
    );
  }
  if (url.protocol !== 'redis:' && url.protocol !== 'rediss:') {
    throw configError(variable, `protocol "${url.protocol}" is not redis: or rediss:`);
  }
  if (!url.hostname) throw configError(variable, 'the URL has no host');
  const port = url.port === '' ? 6379 : Number(url.port);
  const db = url.pathname.length > 1 ? Number(url.pathname.slice(1)) : undefined;
  if (db !== undefined && !Number.isInteger(db)) throw configError(variable, 'the database must be a number');
  const endpoint: RedisEndpoint = {
    host: url.hostname.replace(/^\[(.*)\]$/, '$1'),
    port,
    ...(url.username ? { username: decodeURIComponent(url.username) } : {}),
    ...(url.password ? { password: decodeURIComponent(url.password) } : {}),
    ...(db !== undefined ? { db } : {}),
    ...(url.protocol === 'rediss:' ? { tls: true } : {}),
  };
  return endpoint;
}

/** host:port of an endpoint: what logs and responses may show (never the credentials). */
export function describeEndpoint(endpoint: RedisEndpoint): string {
  return `${endpoint.host}:${endpoint.port}`;
}

function redactUrlText(text: string): string {
  return text.replace(/\/\/[^@/]*@/, '//***@');
}

function httpUrl(text: string, variable: string): string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw configError(variable, `"${redactUrlText(text)}" is not a URL (expected http://host:port)`);
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
