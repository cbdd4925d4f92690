/**
 * ioredis options for the control Redis, by role (BullMQ's guidance): workers wait for the control
 * Redis forever (maxRetriesPerRequest: null) because a job in flight must not be abandoned by a
 * blip; the API fails fast (no offline queue) so a dead control Redis answers 503 at once.
 */
import type { RedisOptions } from 'ioredis';
import type { RedisEndpoint } from '../config.js';
import { tlsConnectionOptions } from '../tls.js';

export const ConnectionRole = { Worker: 'worker', Api: 'api' } as const;
export type ConnectionRole = (typeof ConnectionRole)[keyof typeof ConnectionRole];

export function controlConnectionOptions(endpoint: RedisEndpoint, role: ConnectionRole): RedisOptions {
  const base: RedisOptions = {
    host: endpoint.host,
    port: endpoint.port,
    ...(endpoint.username !== undefined ? { username: endpoint.username } : {}),
    ...(endpoint.password !== undefined ? { password: endpoint.password } : {}),
    ...(endpoint.db !== undefined ? { db: endpoint.db } : {}),
    ...(endpoint.tls ? { tls: tlsConnectionOptions(endpoint.tls) } : {}),
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

/**
 * Replies of a control Redis that is up but cannot serve us, by their first word: each needs the
 * operator, not a retry by the caller.
 */
const UNAVAILABLE_REPLIES: Readonly<Record<string, string>> = {
  LOADING: 'is loading its data (AOF replay after a restart)',
  MISCONF: 'refuses writes because it cannot persist them',
  READONLY: 'is a read-only replica',
  OOM: 'is out of memory (maxmemory)',
  NOAUTH: 'refused our credentials',
  WRONGPASS: 'refused our credentials',
  NOPERM: 'refused a command to our user (ACL)',
};

/**
 * Connection failures as ioredis and BullMQ report them. With enableOfflineQueue: false (the API
 * role) a command sent while disconnected or reconnecting fails at once with "Stream isn't
 * writeable..."; a command in flight when the connection dropped fails with
 * MaxRetriesPerRequestError after maxRetriesPerRequest reconnect attempts; a client that gave up
 * says "Connection is closed." (BullMQ: ConnectionClosedError). Socket errors carry errno codes.
 */
const CONNECTION_FAILURE =
  /Stream isn't writeable|enableOfflineQueue|Connection is closed|max retries per request|ECONNREFUSED|ECONNRESET|ETIMEDOUT|EPIPE|EHOSTUNREACH|ENOTFOUND|Command timed out/i;
const CONNECTION_ERROR_NAMES = new Set(['MaxRetriesPerRequestError', 'ConnectionClosedError']);

/**
 * Why the control Redis could not serve a command (e.g. "is unreachable"), or undefined when the
 * error says nothing about the control Redis being unavailable. The one place that reads ioredis'
 * and BullMQ's error texts for the control connection; callers turn the answer into their own
 * error (the API: 503 CONTROL_STORE).
 */
export function controlUnavailableReason(error: unknown): string | undefined {
  if (!(error instanceof Error)) return undefined;
  const firstWord = /^[A-Z]+/.exec(error.message)?.[0];
  if (firstWord !== undefined && UNAVAILABLE_REPLIES[firstWord] !== undefined) {
    return `${UNAVAILABLE_REPLIES[firstWord]}: ${error.message.slice(0, 160)}`;
  }
  const code = (error as { code?: unknown }).code;
  if (
    CONNECTION_ERROR_NAMES.has(error.name) ||
    CONNECTION_FAILURE.test(error.message) ||
    (typeof code === 'string' && CONNECTION_FAILURE.test(code))
  ) {
    return 'is unreachable';
  }
  return undefined;
}
