/**
 * ioredis options for the control Redis, by role (BullMQ's guidance): workers wait for the control
 * Redis forever (maxRetriesPerRequest: null) because a job in flight must not be abandoned by a
 * blip; the API fails fast (no offline queue) so a dead control Redis answers 503 at once.
 *
 * A control Redis behind Sentinel (redis+sentinel://) is found by asking the sentinels for the
 * master on every (re)connect. After a failover the connections reach the new master two ways: the
 * old master's death or demotion closes their sockets (Sentinel kills the normal clients of an
 * instance it turns into a replica), and a write that still meets the demoted master (READONLY)
 * reconnects. The ready check (INFO, on by default) refuses a master that a sentinel not yet told
 * of the failover still names, once it is a replica.
 *
 * ioredis' failover detector (a subscription to +switch-master) stays off: in ioredis 5.9 a
 * +switch-master that arrives while a client is reconnecting after its master died ends that
 * client for good ("Connection is closed."), which the Sentinel sandbox showed within a few
 * failovers; a worker would then wait forever. Without it, a master that hangs without closing its
 * connections (a frozen process, a host lost without a reset) holds them until it comes back and
 * is demoted, or until TCP gives up (docs/operations.md).
 */
import type { RedisOptions } from 'ioredis';
import { describeTlsFailure } from '../cluster/error-map.js';
import type { RedisEndpoint, SentinelSettings } from '../config.js';
import { tlsConnectionOptions, tlsGuardedConnector } from '../tls.js';

export const ConnectionRole = { Worker: 'worker', Api: 'api' } as const;
export type ConnectionRole = (typeof ConnectionRole)[keyof typeof ConnectionRole];

/** Between reconnects, and between rounds over every sentinel: 200 ms, 400 ms, ... at most 2 s. */
const reconnectDelayMs = (attempt: number) => Math.min(attempt * 200, 2_000);
/** A sentinel that accepts the connection but does not answer (hung, SIGSTOPped) is skipped after this. */
const SENTINEL_COMMAND_TIMEOUT_MS = 2_000;

export function controlConnectionOptions(endpoint: RedisEndpoint, role: ConnectionRole): RedisOptions {
  const tls = endpoint.tls ? tlsConnectionOptions(endpoint.tls) : undefined;
  const base: RedisOptions = {
    ...(endpoint.sentinel
      ? sentinelOptions(endpoint.sentinel, tls, role)
      : {
          host: endpoint.host,
          port: endpoint.port,
          ...(tls ? { tls, Connector: tlsGuardedConnector } : {}),
        }),
    ...(endpoint.username !== undefined ? { username: endpoint.username } : {}),
    ...(endpoint.password !== undefined ? { password: endpoint.password } : {}),
    ...(endpoint.db !== undefined ? { db: endpoint.db } : {}),
    connectionName: `slotfleet-${role}`,
    retryStrategy: reconnectDelayMs,
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
 * The Sentinel part of the options. The user, password and db stay the data node's (ioredis sends
 * them to the master it resolves); the sentinels get their own password. With rediss+sentinel://
 * both the sentinels and the master speak TLS (ioredis applies `tls` to a resolved master only with
 * enableTLSForSentinelMode).
 */
function sentinelOptions(
  sentinel: SentinelSettings,
  tls: RedisOptions['tls'],
  role: ConnectionRole,
): RedisOptions {
  return {
    sentinels: sentinel.nodes.map(({ host, port }) => ({ host, port })),
    name: sentinel.name,
    ...(sentinel.password !== undefined ? { sentinelPassword: sentinel.password } : {}),
    ...(tls ? { tls, enableTLSForSentinelMode: true, sentinelTLS: tls } : {}),
    sentinelRetryStrategy: reconnectDelayMs,
    sentinelCommandTimeout: SENTINEL_COMMAND_TIMEOUT_MS,
    failoverDetector: false,
    reconnectOnError: (error: Error) => readonlyReconnect(error, role),
  };
}

/**
 * A write refused with READONLY went to a master Sentinel has demoted (a client that kept its
 * socket: a partition, or a write sent just before the demotion). Redis executed nothing, so a
 * worker reconnects (to the master the sentinels name now) and sends the command again (2): the
 * job carries on instead of failing an attempt. The API has no offline queue to hold a resent
 * command: it reconnects and lets this request fail (1), 503 saying the control Redis is a
 * read-only replica; the next request meets the new master. Only with Sentinel: a standalone
 * control Redis that is a replica stays one, and reconnecting to it would loop.
 */
function readonlyReconnect(error: Error, role: ConnectionRole): 1 | 2 | false {
  if (replyWord(error) !== 'READONLY') return false;
  return role === ConnectionRole.Worker ? 2 : 1;
}

/** The first word of a Redis error reply (READONLY, LOADING, ...): what the two tables here read. */
function replyWord(error: Error): string | undefined {
  return /^[A-Z]+/.exec(error.message)?.[0];
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
 * Behind Sentinel, a round in which no sentinel named a reachable master says "All sentinels are
 * unreachable" (ioredis' SentinelConnector), which it also says through every failover.
 */
const CONNECTION_FAILURE =
  /Stream isn't writeable|enableOfflineQueue|Connection is closed|max retries per request|ECONNREFUSED|ECONNRESET|ETIMEDOUT|EPIPE|EHOSTUNREACH|ENOTFOUND|Command timed out|All sentinels are unreachable/i;
const CONNECTION_ERROR_NAMES = new Set(['MaxRetriesPerRequestError', 'ConnectionClosedError']);

/**
 * Why the control Redis could not serve a command (e.g. "is unreachable"), or undefined when the
 * error says nothing about the control Redis being unavailable. The one place that reads ioredis'
 * and BullMQ's error texts for the control connection; callers turn the answer into their own
 * error (the API: 503 CONTROL_STORE).
 */
export function controlUnavailableReason(error: unknown): string | undefined {
  if (!(error instanceof Error)) return undefined;
  const tls = describeTlsFailure(error);
  if (tls !== undefined) return `cannot be used: ${tls}`;
  const firstWord = replyWord(error);
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

type ErrorListenerSetter = (event: 'error', listener: () => void) => void;

/** A BullMQ Queue or Worker, as far as closing it is concerned. */
interface ClosableQueue {
  close(): Promise<void>;
}

/**
 * Closes a BullMQ Queue or Worker whose connection may not have become ready yet (the control
 * Redis down or refusing the TLS handshake). BullMQ 5.81's RedisConnection.close() removes all of
 * its listeners; if a connection attempt was in flight, the client's 'end' comes a moment later and
 * rejects the init still waiting for 'ready' with the last connection error, whose catch emits
 * 'error' with nobody listening: that throws inside a promise, an unhandled rejection, which ends a
 * Node process. A listener put back once close() has returned takes it.
 */
export async function closeQueue(queue: ClosableQueue): Promise<void> {
  try {
    await queue.close();
  } finally {
    // A Worker has a second connection, for its blocking reads.
    const { connection, blockingConnection } = queue as {
      connection?: { on?: ErrorListenerSetter };
      blockingConnection?: { on?: ErrorListenerSetter };
    };
    connection?.on?.('error', () => undefined);
    blockingConnection?.on?.('error', () => undefined);
  }
}
