/**
 * ioredis options for the control Redis, by role (BullMQ's guidance): workers wait for the control
 * Redis forever (maxRetriesPerRequest: null) because a job in flight must not be abandoned by a
 * blip; the API fails fast (no offline queue) so a dead control Redis answers 503 at once.
 */
import type { RedisOptions } from 'ioredis';
import type { RedisEndpoint } from '../config.js';

export const ConnectionRole = { Worker: 'worker', Api: 'api' } as const;
export type ConnectionRole = (typeof ConnectionRole)[keyof typeof ConnectionRole];

export function controlConnectionOptions(endpoint: RedisEndpoint, role: ConnectionRole): RedisOptions {
  const base: RedisOptions = {
    host: endpoint.host,
    port: endpoint.port,
    ...(endpoint.username !== undefined ? { username: endpoint.username } : {}),
    ...(endpoint.password !== undefined ? { password: endpoint.password } : {}),
    ...(endpoint.db !== undefined ? { db: endpoint.db } : {}),
    ...(endpoint.tls ? { tls: {} } : {}),
    connectionName: `slotfleet-${role}`,
    retryStrategy: (attempt: number) => Math.min(attempt * 200, 2_000),
  };
  switch (role) {
    case ConnectionRole.Worker:
      return { ...base, maxRetriesPerRequest: null, enableReadyCheck: true };
    case ConnectionRole.Api:
      return { ...base, maxRetriesPerRequest: 1, enableOfflineQueue: false, connectTimeout: 2_000 };
    default: {
      const never: never = role;
      throw new Error(`unhandled connection role: ${never}`);
    }
  }
}
