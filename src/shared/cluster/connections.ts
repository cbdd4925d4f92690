/**
 * One ioredis connection per node address, shared by every slot job of the process, and the command
 * window in front of each: commands that concurrent jobs send to the same node within a millisecond
 * leave in one write, and the node answers them in one turn (so it also saves its cluster config once
 * for all of them). Every command goes through run(), which bounds its wait and maps its error.
 */
import { Redis, type RedisOptions } from 'ioredis';
import type { RedisEndpoint } from '../config.js';
import { nodeAddress } from '../domain/topology.js';
import { ErrorCode, SlotfleetError } from '../errors.js';
import type { Logger } from '../logger.js';
import { tlsConnectionOptions, tlsGuardedConnector } from '../tls.js';
import { mapRedisError } from './error-map.js';
import type { NodeAddress } from './port.js';

export interface NodeConnectionsOptions {
  /** Commands that get no reply within this time fail (a SIGSTOPped node must not hang a job forever). */
  readonly commandTimeoutMs: number;
  readonly logger?: Logger;
  /** Lua scripts defined on every node connection (ioredis defineCommand: sent once, then by SHA). */
  readonly scripts?: Readonly<Record<string, { readonly numberOfKeys: number; readonly lua: string }>>;
}

export interface RunOptions {
  /** How long the command may wait for its reply. @defaultValue the commandTimeoutMs option */
  readonly timeoutMs?: number;
  /**
   * The command does not wait in the node's command window. A MIGRATE batch gains nothing from
   * company (it is a write of its own on the node's side), and a slot with one batch in flight would
   * otherwise leave its source idle for the window between two batches.
   */
  readonly immediate?: boolean;
}

/** How long a node's commands wait for company before they are sent (see windowFor). */
const COMMAND_WINDOW_MS = 1;

interface CommandWindow {
  readonly sends: (() => void)[];
}

export class NodeConnections {
  private readonly connections = new Map<string, Redis>();
  /**
   * The last refused login (WRONGPASS, NOAUTH, NOPERM) or failed TLS handshake per address, until the
   * connection is ready.
   */
  private readonly refusals = new Map<string, Error>();
  /** Commands waiting to leave together, by address: see windowFor. */
  private readonly openWindows = new Map<string, CommandWindow>();
  private closed = false;

  constructor(
    readonly clusterName: string,
    private readonly seed: RedisEndpoint,
    private readonly options: NodeConnectionsOptions,
  ) {}

  /**
   * Sends one command (or script call) to a node through its command window, and maps its failure:
   * every error leaves here as a SlotfleetError naming what was sent where.
   */
  async run<T>(
    node: NodeAddress,
    what: string,
    command: (redis: Redis) => Promise<T>,
    options: RunOptions = {},
  ): Promise<T> {
    const context = `${what} on ${nodeAddress(node)}`;
    const timeoutMs = options.timeoutMs ?? this.options.commandTimeoutMs;
    let timer: NodeJS.Timeout | undefined;
    try {
      const reply = new Promise<T>((resolve, reject) => {
        const send = () => {
          try {
            command(this.connection(node)).then(resolve, reject);
          } catch (error) {
            reject(error);
          }
        };
        if (options.immediate) send();
        else this.windowFor(node).sends.push(send);
      });
      // Past the deadline nobody awaits the reply any more: its late failure (a handshake that
      // keeps failing, the connection's retries running out) must not surface as an unhandled
      // rejection, which would end the process.
      reply.catch(() => undefined);
      return await Promise.race([
        reply,
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () =>
              reject(new SlotfleetError(ErrorCode.Connection, `${context}: no reply within ${timeoutMs} ms`)),
            timeoutMs,
          );
        }),
      ]);
    } catch (error) {
      const mapped = mapRedisError(error, context);
      const refused = this.refusals.get(nodeAddress(node));
      if (mapped.code === ErrorCode.Connection && refused) throw mapRedisError(refused, context);
      throw mapped;
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Commands on a connection of their own, each preceded by ASKING when asked: ASKING only holds for
   * the next command, so no other job's command may come in between. Rare (a BUSYKEY), so a
   * short-lived connection is fine.
   */
  async privateCommands(
    node: NodeAddress,
    what: string,
    commands: readonly (string | Buffer | number)[][],
    options: { asking: boolean },
  ): Promise<unknown[]> {
    if (commands.length === 0) return [];
    const redis = new Redis({
      ...this.connectionOptions(node),
      enableAutoPipelining: false,
      lazyConnect: true,
    });
    redis.on('error', () => undefined);
    try {
      const pipeline = redis.pipeline();
      for (const [name, ...args] of commands) {
        if (options.asking) pipeline.call('ASKING');
        pipeline.callBuffer(String(name), ...args);
      }
      const replies = await this.run(node, what, async () => {
        await redis.connect();
        return (await pipeline.exec()) ?? [];
      });
      return replies
        .filter((_, index) => !options.asking || index % 2 === 1)
        .map(([error, value]) => {
          if (error) throw mapRedisError(error, `${what} on ${nodeAddress(node)}`);
          return value;
        });
    } finally {
      redis.disconnect();
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    const connections = [...this.connections.values()];
    this.connections.clear();
    await Promise.all(connections.map((redis) => redis.quit().catch(() => redis.disconnect())));
  }

  /**
   * The open command window of a node. Every socket write costs a system call on both ends, which
   * on a small machine costs more than the command itself (profiled: a third of a worker's CPU), and
   * dozens of concurrent slot jobs each send a command every few hundred microseconds. So a node's
   * commands wait up to COMMAND_WINDOW_MS and leave in one write (ioredis auto-pipelines what is
   * sent in one turn); the node also answers them in one turn, and saves its cluster config once.
   */
  private windowFor(node: NodeAddress): CommandWindow {
    const key = nodeAddress(node);
    let window = this.openWindows.get(key);
    if (!window) {
      const opened: CommandWindow = { sends: [] };
      window = opened;
      this.openWindows.set(key, opened);
      setTimeout(() => {
        this.openWindows.delete(key);
        for (const send of opened.sends) send();
      }, COMMAND_WINDOW_MS);
    }
    return window;
  }

  private connection(node: NodeAddress): Redis {
    if (this.closed)
      throw new SlotfleetError(ErrorCode.Connection, `cluster ${this.clusterName}: adapter is closed`);
    const key = nodeAddress(node);
    let redis = this.connections.get(key);
    if (!redis) {
      redis = new Redis({
        ...this.connectionOptions(node),
        enableAutoPipelining: true,
        // Fail a command quickly when a node is down; the job's retry policy decides what follows.
        maxRetriesPerRequest: 1,
        connectTimeout: 5_000,
        retryStrategy: (attempt) => Math.min(attempt * 200, 2_000),
        connectionName: 'slotfleet',
      });
      for (const [name, script] of Object.entries(this.options.scripts ?? {})) {
        redis.defineCommand(name, { numberOfKeys: script.numberOfKeys, lua: script.lua });
      }
      redis.on('error', (error) => {
        this.options.logger?.debug({ node: key, err: error.message }, 'node connection');
        // A refused login fails the commands waiting at that moment with its reply, but a command
        // that arrives while the connection retries fails later as "max retries": remember why. A
        // failed TLS handshake reaches commands only that way, as "max retries".
        const { code } = mapRedisError(error, key);
        if (code === ErrorCode.AuthFailed || code === ErrorCode.TlsFailed) this.refusals.set(key, error);
      });
      redis.on('ready', () => this.refusals.delete(key));
      this.connections.set(key, redis);
    }
    return redis;
  }

  private connectionOptions(node: NodeAddress): RedisOptions {
    return {
      host: node.host,
      port: node.port,
      // No CLIENT SETINFO on connect: Valkey 8+ has it, and slotfleet's ACL rules cannot allow it
      // (Redis 7.0 refuses +client|setinfo in ACL SETUSER), so every connect left an ACL LOG entry.
      disableClientInfo: true,
      ...(this.seed.username !== undefined ? { username: this.seed.username } : {}),
      ...(this.seed.password !== undefined ? { password: this.seed.password } : {}),
      ...(this.seed.tls ? { tls: tlsConnectionOptions(this.seed.tls), Connector: tlsGuardedConnector } : {}),
    };
  }
}
