import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { mapRedisError } from '../../src/shared/cluster/error-map.js';
import { DEFAULTS, loadConfig } from '../../src/shared/config.js';

describe('loadConfig', () => {
  it('fills defaults and freezes', () => {
    const config = loadConfig({ SLOTFLEET_CLUSTER_URL: 'redis://user:s3cret@127.0.0.1:7000' });
    expect(config.clusters.default).toEqual({
      host: '127.0.0.1',
      port: 7000,
      username: 'user',
      password: 's3cret',
    });
    expect(config.api).toEqual({
      host: DEFAULTS.apiHost,
      port: DEFAULTS.apiPort,
      rateLimitPerMinute: DEFAULTS.apiRateLimitPerMinute,
    });
    expect(config.worker.batchKeys).toBe(DEFAULTS.batchKeys);
    expect(Object.isFrozen(config.worker)).toBe(true);
  });

  it('derives the stalled-job check from the job lock, and reads the shutdown deadline', () => {
    const defaults = loadConfig({});
    expect(defaults.jobs).toMatchObject({ lockMs: 30_000, stalledCheckMs: 15_000 });
    expect(defaults.shutdownTimeoutMs).toBe(DEFAULTS.shutdownTimeoutMs);
    const short = loadConfig({ SLOTFLEET_JOB_LOCK_MS: '2001', SLOTFLEET_SHUTDOWN_TIMEOUT_MS: '0' });
    expect(short.jobs).toMatchObject({ lockMs: 2001, stalledCheckMs: 1001 });
    expect(short.shutdownTimeoutMs).toBe(0);
  });

  it('reads named clusters', () => {
    const config = loadConfig({ SLOTFLEET_CLUSTERS: 'eu=redis://10.0.0.1:7000,us=redis://:pw@h:7001' });
    expect(Object.keys(config.clusters)).toEqual(['eu', 'us']);
    expect(config.clusters.us?.password).toBe('pw');
  });

  it('reads the API rate limit, 60 mutating requests per minute by default', () => {
    expect(DEFAULTS.apiRateLimitPerMinute).toBe(60);
    expect(loadConfig({ SLOTFLEET_API_RATE_LIMIT: '600' }).api.rateLimitPerMinute).toBe(600);
    expect(loadConfig({ SLOTFLEET_API_RATE_LIMIT: ' ' }).api.rateLimitPerMinute).toBe(60);
  });

  it.each([
    [{ SLOTFLEET_API_PORT: 'eighty' }, /SLOTFLEET_API_PORT: "eighty" is not a whole number/],
    [
      { SLOTFLEET_API_RATE_LIMIT: '0' },
      /SLOTFLEET_API_RATE_LIMIT: "0" is not a whole number from 1 to 1000000/,
    ],
    [{ SLOTFLEET_API_RATE_LIMIT: '-5' }, /SLOTFLEET_API_RATE_LIMIT/],
    [{ SLOTFLEET_API_RATE_LIMIT: '1e3' }, /SLOTFLEET_API_RATE_LIMIT/],
    [{ SLOTFLEET_API_RATE_LIMIT: '1000001' }, /SLOTFLEET_API_RATE_LIMIT/],
    [{ SLOTFLEET_BATCH_KEYS: '0' }, /SLOTFLEET_BATCH_KEYS/],
    [{ SLOTFLEET_CONTROL_URL: 'http://x' }, /SLOTFLEET_CONTROL_URL: protocol "http:"/],
    [{ SLOTFLEET_CLUSTERS: 'redis://:pw@h:1' }, /SLOTFLEET_CLUSTERS: entry 1 of 1 is not name=/],
    [{ SLOTFLEET_LOG_LEVEL: 'loud' }, /SLOTFLEET_LOG_LEVEL/],
    [{ SLOTFLEET_JOB_LOCK_MS: '999' }, /SLOTFLEET_JOB_LOCK_MS: "999" is not a whole number from 1000/],
    [{ SLOTFLEET_SHUTDOWN_TIMEOUT_MS: '5s' }, /SLOTFLEET_SHUTDOWN_TIMEOUT_MS: "5s"/],
  ])('rejects %j naming the variable', (env, message) => {
    expect(() => loadConfig(env)).toThrow(message);
  });

  it.each([
    { SLOTFLEET_CLUSTERS: 'bad name=redis://:topsecret@h:1' },
    // Unencoded reserved characters: the URL splits somewhere inside the password.
    { SLOTFLEET_CLUSTER_URL: 'redis://:top/secret@h:1' },
    { SLOTFLEET_CLUSTER_URL: 'redis://user:top#secret@h:1' },
    { SLOTFLEET_CLUSTER_URL: 'redis://:topsecret%zz@h:1' },
    { SLOTFLEET_CLUSTERS: 'us=redis://:top,secret@h:1' },
    { SLOTFLEET_CONTROL_URL: 'redis://:top/secret@h:1' },
    { SLOTFLEET_API_URL: 'http://user:top/secret@[h' },
  ])('never echoes a password in an error: %j', (env) => {
    let message = '';
    try {
      loadConfig(env);
    } catch (error) {
      message = (error as Error).message;
    }
    expect(message).toMatch(/^SLOTFLEET_/);
    expect(message).not.toMatch(/top|secret/);
  });
});

describe('mapRedisError', () => {
  it.each([
    ["ERR I'm already the owner of hash slot 5", 'ALREADY_OWNER'],
    ["ERR I'm not the owner of hash slot 5", 'NOT_OWNER'],
    [
      "ERR Can't assign hashslot 5 to a different node while I still hold keys for this hash slot.",
      'STILL_HOLDS_KEYS',
    ],
    ['IOERR error or timeout reading to target instance', 'IOERR'],
    ['ERR Target instance replied with error: BUSYKEY Target key name already exists.', 'BUSYKEY'],
    ['ERR Target instance replied with error: MOVED 5 127.0.0.1:7000', 'MOVED'],
    ['CLUSTERDOWN The cluster is down', 'CLUSTERDOWN'],
    ['READONLY You can not write against a read only replica.', 'READONLY'],
    ['TRYAGAIN Multiple keys request during rehashing of slot', 'TRYAGAIN'],
    ['MOVED 5 127.0.0.1:7001', 'MOVED'],
    ['ASK 5 127.0.0.1:7001', 'ASK'],
    // cluster-preferred-endpoint-type hostname (a node without one: "?"), unknown-endpoint, IPv6.
    ['MOVED 5 redis-1.redis.default.svc:7001', 'MOVED'],
    ['ASK 5 ?:7001', 'ASK'],
    ['MOVED 5 :7001', 'MOVED'],
    ['ASK 5 ::1:7001', 'ASK'],
    ['ERR Target instance replied with error: MOVED 5 localhost:7000', 'MOVED'],
    ['connect ECONNREFUSED 127.0.0.1:7000', 'CONNECTION'],
    ['getaddrinfo ENOTFOUND redis-1.redis', 'CONNECTION'],
    ['getaddrinfo EAI_AGAIN redis-1.redis', 'CONNECTION'],
    ['WRONGPASS invalid username-password pair or user is disabled.', 'AUTH_FAILED'],
    ['NOAUTH Authentication required.', 'AUTH_FAILED'],
    [
      "ERR Target instance replied with error: NOPERM this user has no permissions to run the 'select' command",
      'AUTH_FAILED',
    ],
    ['ERR unknown command', 'REDIS_ERROR'],
  ])('%s -> %s', (message, code) => {
    expect(mapRedisError(new Error(message), 'test').code).toBe(code);
  });
});

describe('mapRedisError keeps credentials out of the cause', () => {
  const withCommand = (name: string, args: unknown[]) =>
    Object.assign(new Error('ERR Target instance replied with error: MOVED 5 h:1'), {
      command: { name, args },
    });

  it.each([
    [
      'migrate',
      ['h', 1, '', 0, 5000, 'REPLACE', 'AUTH2', 'user', 'pw', 'KEYS', 'AUTH', 'k'],
      ['h', 1, '', 0, 5000, 'REPLACE', 'AUTH2', '[redacted]', '[redacted]', 'KEYS', 'AUTH', 'k'],
    ],
    [
      'migrate',
      ['h', 1, '', 0, 5000, 'auth', 'pw', 'KEYS', 'a'],
      ['h', 1, '', 0, 5000, 'auth', '[redacted]', 'KEYS', 'a'],
    ],
    ['migrate', ['h', 1, '', 0, 5000, 'KEYS', 'AUTH', 'pw'], ['h', 1, '', 0, 5000, 'KEYS', 'AUTH', 'pw']],
    ['auth', ['user', 'pw'], ['[redacted]', '[redacted]']],
    ['cluster', ['NODES'], ['NODES']],
  ])('%s %j', (name, args, expected) => {
    const cause = withCommand(name, args);
    const mapped = mapRedisError(cause, 'test');
    expect((mapped.cause as typeof cause).command.args).toEqual(expected);
  });
});

describe('TLS, Sentinel and the metrics host', () => {
  it('gives every rediss:// endpoint the TLS files, checked readable at start', () => {
    const file = fileURLToPath(import.meta.url);
    const config = loadConfig({
      SLOTFLEET_CLUSTER_URL: 'rediss://node:6380',
      SLOTFLEET_CONTROL_URL: 'rediss://control:6380',
      SLOTFLEET_TLS_CA_FILE: file,
      SLOTFLEET_TLS_SERVERNAME: 'redis.internal',
    });
    expect(config.clusters.default?.tls).toEqual({ caFile: file, servername: 'redis.internal' });
    expect(config.control.tls).toEqual({ caFile: file, servername: 'redis.internal' });
    expect(loadConfig({ SLOTFLEET_CLUSTER_URL: 'redis://node:6379' }).clusters.default?.tls).toBeUndefined();
    expect(() => loadConfig({ SLOTFLEET_TLS_CA_FILE: '/nonexistent/ca.pem' })).toThrow(
      /SLOTFLEET_TLS_CA_FILE: cannot read \/nonexistent\/ca.pem \(ENOENT\)/,
    );
    expect(() => loadConfig({ SLOTFLEET_TLS_CERT_FILE: file })).toThrow(
      /SLOTFLEET_TLS_KEY_FILE: a client certificate needs both/,
    );
  });

  it('reads redis+sentinel:// for the control Redis only', () => {
    const config = loadConfig({
      SLOTFLEET_CONTROL_URL:
        'redis+sentinel://app:p%40ss@10.0.0.1:26380,[::1],sentinel-2:26379/control-main/2',
      SLOTFLEET_SENTINEL_PASSWORD: 'sentinel-secret',
    });
    expect(config.control).toEqual({
      host: '10.0.0.1',
      port: 26380,
      username: 'app',
      password: 'p@ss',
      db: 2,
      sentinel: {
        nodes: [
          { host: '10.0.0.1', port: 26380 },
          { host: '::1', port: 26379 },
          { host: 'sentinel-2', port: 26379 },
        ],
        name: 'control-main',
        password: 'sentinel-secret',
      },
    });
    expect(loadConfig({ SLOTFLEET_CONTROL_URL: 'rediss+sentinel://s1/m' }).control.tls).toEqual({});
    expect(() => loadConfig({ SLOTFLEET_CLUSTER_URL: 'redis+sentinel://s1/m' })).toThrow(
      /SLOTFLEET_CLUSTER_URL: Sentinel .* is for SLOTFLEET_CONTROL_URL only/,
    );
    expect(() => loadConfig({ SLOTFLEET_CONTROL_URL: 'redis+sentinel://s1:26379' })).toThrow(
      /names no master group/,
    );
    expect(() => loadConfig({ SLOTFLEET_CONTROL_URL: 'redis+sentinel://s1:x/m' })).toThrow(/not host:port/);
  });

  it('binds the metrics port to SLOTFLEET_METRICS_HOST, else the API host', () => {
    expect(loadConfig({}).worker.metricsHost).toBe('127.0.0.1');
    expect(loadConfig({ SLOTFLEET_API_HOST: '10.1.1.1' }).worker.metricsHost).toBe('10.1.1.1');
    expect(
      loadConfig({ SLOTFLEET_API_HOST: '10.1.1.1', SLOTFLEET_METRICS_HOST: '0.0.0.0' }).worker.metricsHost,
    ).toBe('0.0.0.0');
  });
});
