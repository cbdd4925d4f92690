/**
 * The control Redis's connection options by role, for a plain URL and for Sentinel, built from
 * SLOTFLEET_CONTROL_URL the way the processes build them (loadConfig, then controlConnectionOptions).
 * test/integration/sentinel-control.test.ts fails a master over under a running migration.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Redis, ReplyError } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { describeEndpoint, loadConfig } from '../../src/shared/config.js';
import { ConnectionRole, controlConnectionOptions } from '../../src/shared/queue/connections.js';

const SENTINEL_URL = 'redis+sentinel://app:p%40ss@10.0.0.1:26380,[::1],sentinel-2:26379/control-main/2';
const READONLY = new ReplyError("READONLY You can't write against a read only replica.");
const SCRIPT_READONLY = new ReplyError(
  "READONLY You can't write against a read only replica. script: 67ed14c1, on @user_script:1.",
);

describe('controlConnectionOptions', () => {
  it('connects a plain URL to its host and port, and leaves READONLY to the caller', () => {
    const { control } = loadConfig({ SLOTFLEET_CONTROL_URL: 'redis://:pw@10.0.0.9:6380/1' });
    for (const role of Object.values(ConnectionRole)) {
      const options = controlConnectionOptions(control, role);
      expect(options).toMatchObject({ host: '10.0.0.9', port: 6380, password: 'pw', db: 1 });
      expect(options.sentinels).toBeUndefined();
      // A standalone replica stays one: reconnecting to it would only loop.
      expect(options.reconnectOnError).toBeUndefined();
    }
    expect(describeEndpoint(control)).toBe('10.0.0.9:6380');
  });

  it.each([
    [ConnectionRole.Worker, { maxRetriesPerRequest: null, enableReadyCheck: true }],
    [ConnectionRole.Api, { maxRetriesPerRequest: 1, enableOfflineQueue: false }],
  ] as const)(
    'asks the sentinels for the master (%s), with the data credentials for the master',
    (role, byRole) => {
      const { control } = loadConfig({
        SLOTFLEET_CONTROL_URL: SENTINEL_URL,
        SLOTFLEET_SENTINEL_PASSWORD: 'sentinel-secret',
      });
      const options = controlConnectionOptions(control, role);
      expect(options).toMatchObject({
        ...byRole,
        sentinels: [
          { host: '10.0.0.1', port: 26380 },
          { host: '::1', port: 26379 },
          { host: 'sentinel-2', port: 26379 },
        ],
        name: 'control-main',
        sentinelPassword: 'sentinel-secret',
        username: 'app',
        password: 'p@ss',
        db: 2,
        // Off: in ioredis 5.9 it can end a reconnecting client for good (connections.ts).
        failoverDetector: false,
        connectionName: `slotfleet-${role}`,
      });
      // The first sentinel is no data node: nothing may connect to it as one.
      expect(options.host).toBeUndefined();
      expect(options.tls).toBeUndefined();
      expect(options.enableTLSForSentinelMode).toBeUndefined();
      expect(options.sentinelCommandTimeout).toBeGreaterThan(0);
      expect(options.sentinelRetryStrategy?.(100)).toBeLessThanOrEqual(2_000);
    },
  );

  it('reconnects on READONLY: a worker resends the command, the API fails the request', () => {
    const { control } = loadConfig({ SLOTFLEET_CONTROL_URL: SENTINEL_URL });
    const worker = controlConnectionOptions(control, ConnectionRole.Worker).reconnectOnError!;
    const api = controlConnectionOptions(control, ConnectionRole.Api).reconnectOnError!;
    for (const error of [READONLY, SCRIPT_READONLY]) {
      expect(worker(error)).toBe(2);
      expect(api(error)).toBe(1);
    }
    for (const error of [
      new ReplyError('NOSCRIPT No matching script.'),
      new ReplyError('WRONGTYPE Operation against a key holding the wrong kind of value'),
      new Error('connect ECONNREFUSED 10.0.0.1:6379'),
    ]) {
      expect(worker(error)).toBe(false);
      expect(api(error)).toBe(false);
    }
  });

  it('speaks TLS to the sentinels and to the master for rediss+sentinel://', () => {
    const caFile = fileURLToPath(import.meta.url);
    const { control } = loadConfig({
      SLOTFLEET_CONTROL_URL: 'rediss+sentinel://s1:26379,s2:26379/control-main',
      SLOTFLEET_TLS_CA_FILE: caFile,
      SLOTFLEET_TLS_SERVERNAME: 'redis.internal',
    });
    const tls = { ca: readFileSync(caFile), servername: 'redis.internal' };
    for (const role of Object.values(ConnectionRole)) {
      expect(controlConnectionOptions(control, role)).toMatchObject({
        tls,
        enableTLSForSentinelMode: true,
        sentinelTLS: tls,
      });
    }
  });

  it('gives ioredis options it takes as Sentinel: the connector asks the sentinels', () => {
    const { control } = loadConfig({ SLOTFLEET_CONTROL_URL: SENTINEL_URL });
    for (const role of Object.values(ConnectionRole)) {
      const redis = new Redis({ ...controlConnectionOptions(control, role), lazyConnect: true });
      try {
        const connector = (redis as unknown as { connector: { constructor: { name: string } } }).connector;
        expect(connector.constructor.name).toBe('SentinelConnector');
      } finally {
        redis.disconnect();
      }
    }
  });

  it('describes a Sentinel endpoint by its master group and sentinels, never its credentials', () => {
    const { control } = loadConfig({
      SLOTFLEET_CONTROL_URL: SENTINEL_URL,
      SLOTFLEET_SENTINEL_PASSWORD: 'sentinel-secret',
    });
    const described = describeEndpoint(control);
    expect(described).toBe('sentinel master control-main via 10.0.0.1:26380,[::1]:26379,sentinel-2:26379');
    expect(described).not.toMatch(/p@ss|sentinel-secret|app/);
  });
});
