/**
 * The only code that speaks to Redis Cluster nodes. One ioredis connection per node address, shared
 * by every slot job of the process and auto-pipelined: commands that concurrent jobs issue to the
 * same node in one event-loop turn leave in one write, and the node answers them in one turn (so it
 * also saves its cluster config once for all of them).
 */
import { Redis, type RedisOptions } from 'ioredis';
import type { RedisEndpoint } from '../config.js';
import type { ClusterSnapshot, NodeRef } from '../domain/plan.js';
import { snapshotFromViews } from '../domain/plan.js';
import type { NodeSlotState, SlotObservation } from '../domain/slot-migration.js';
import {
  type ClusterNode,
  indexSlotViews,
  NodeRole,
  type NodeView,
  parseClusterNodes,
  type SlotView,
  type SlotViewIndex,
} from '../domain/topology.js';
import { ErrorCode, SlotfleetError } from '../errors.js';
import type { Logger } from '../logger.js';
import { mapRedisError } from './error-map.js';

export interface ClusterAdapterOptions {
  /** Commands that get no reply within this time fail (a SIGSTOPped node must not hang a job forever). */
  readonly commandTimeoutMs: number;
  readonly logger?: Logger;
}

type Address = Pick<NodeRef, 'host' | 'port'>;

interface BufferClusterCommand {
  clusterBuffer(subcommand: 'GETKEYSINSLOT', slot: number, count: number): Promise<Buffer[]>;
}

export interface MigrateOptions {
  readonly timeoutMs: number;
  readonly replace?: boolean;
}

/**
 * Runs on the source: the next keys of the slot (GETKEYSINSLOT) go to the target in one MIGRATE,
 * without their names making a round trip through the worker. A script is atomic, so no key can be
 * created or removed between the calls. With a byte budget, keys are taken while the sum of their
 * MEMORY USAGE fits (about 0.5 us a key); a key bigger than the budget is not migrated here (a long
 * script would make every other client of the source get BUSY) but named, to move alone.
 *   ARGV: slot, count, byte budget (0: none), then MIGRATE's arguments up to KEYS.
 *   Reply: {keys in the batch, 1 if MIGRATE sent them (0: +NOKEY, they had expired), 1 if the slot
 *          may hold more keys, name of a key bigger than the budget (or false), bytes (of that key,
 *          or of the batch; 0 without a budget), then, for a batch sent, the source's TIME (seconds,
 *          microseconds) when the script began and when it ended: how long the source served nobody.
 *          TIME is asked with pcall: a user whose ACL rules predate pacing (no +time) still migrates,
 *          without the times (false), and so without pacing}
 */
const MIGRATE_BATCH_SCRIPT = `
local function clock()
  local time = redis.pcall('TIME')
  if time.err then return {false, false} end
  return time
end
local began = clock()
local keys = redis.call('CLUSTER', 'GETKEYSINSLOT', ARGV[1], ARGV[2])
if #keys == 0 then return {0, 0, 0} end
local more = 0
if #keys == tonumber(ARGV[2]) then more = 1 end
local budget = tonumber(ARGV[3])
local batch = keys
local bytes = 0
if budget > 0 then
  batch = {}
  for i = 1, #keys do
    local size = redis.call('MEMORY', 'USAGE', keys[i])
    if size then
      if size > budget and #batch == 0 then return {0, 0, 1, keys[i], size} end
      if bytes + size > budget then
        more = 1
        break
      end
      bytes = bytes + size
      batch[#batch + 1] = keys[i]
    end
  end
  if #batch == 0 then return {0, 0, more} end
end
local args = {}
for i = 4, #ARGV do args[#args + 1] = ARGV[i] end
args[#args + 1] = 'KEYS'
for i = 1, #batch do args[#args + 1] = batch[i] end
local reply = redis.call('MIGRATE', unpack(args))
local ended = clock()
local sent = 1
if type(reply) == 'table' and reply.ok == 'NOKEY' then sent = 0 end
return {#batch, sent, more, false, bytes, began[1], began[2], ended[1], ended[2]}`;

/**
 * The source's key count in an observation made without COUNTKEYSINSLOT: not zero, so the state
 * machine sends a drain, whose batch script finds out (an empty slot costs one script call).
 */
export const UNCOUNTED_KEYS = 1;

/** Lua's unpack() is bounded by the C stack (LUAI_MAXCSTACK 8000): keys per script call stay below. */
export const MAX_SCRIPT_BATCH_KEYS = 5_000;

/** How long a node's commands wait for company before they are sent (see windowFor). */
const COMMAND_WINDOW_MS = 1;

interface CommandWindow {
  readonly sends: (() => void)[];
}

/** A node's CLUSTER NODES reads: the one awaiting its reply, and the one waiting to be sent. */
interface NodesReads {
  answering?: Promise<void>;
  queued?: Promise<string>;
}

interface ScriptCommands {
  slotfleetMigrateBatchBuffer(...args: (string | number)[]): Promise<(number | Buffer | null)[]>;
}

export interface MigrateBatchResult {
  /** Keys in the batch (0 with more = false: the slot is empty on the source). */
  readonly keys: number;
  /** Keys MIGRATE sent: 0 when every one had expired meanwhile (+NOKEY). */
  readonly moved: number;
  /** MEMORY USAGE of the keys sent (0 without a byte budget: not measured). */
  readonly bytes: number;
  /** The slot may hold more keys on the source. */
  readonly more: boolean;
  /** The next key is bigger than the byte budget: nothing was sent; move it alone. */
  readonly bigKey?: { readonly name: Buffer; readonly bytes: number };
  /** When the source ran the batch, by its own clock (µs): it served nobody else in between. */
  readonly ranUs?: { readonly start: number; readonly end: number };
}

export class ClusterAdapter {
  private readonly connections = new Map<string, Redis>();
  /** The last refused login (WRONGPASS, NOAUTH, NOPERM) per address, until the connection is ready. */
  private readonly refusedLogins = new Map<string, Error>();
  /** Commands waiting to leave together, by address: see windowFor. */
  private readonly openWindows = new Map<string, CommandWindow>();
  private readonly nodesReads = new Map<string, NodesReads>();
  /** The last CLUSTER NODES text parsed per address, so concurrent readers parse it once. */
  private readonly parsedViews = new Map<string, { text: string; view: NodeView }>();
  private readonly slotIndexes = new Map<string, { text: string; index: SlotViewIndex }>();
  private knownAddresses: Address[] = [];
  private closed = false;

  constructor(
    readonly name: string,
    private readonly seed: RedisEndpoint,
    private readonly options: ClusterAdapterOptions,
  ) {
    this.knownAddresses = [{ host: seed.host, port: seed.port }];
  }

  /** CLUSTER NODES of one node, parsed. */
  async readView(node: Address): Promise<NodeView> {
    const text = await this.clusterNodesText(node);
    const key = addressKey(node);
    const parsed = this.parsedViews.get(key);
    if (parsed?.text === text) return parsed.view;
    const view = parseClusterNodes(text);
    this.parsedViews.set(key, { text, view });
    return view;
  }

  /**
   * CLUSTER NODES of one node. Redis 7.0 builds this reply from all 16384 slots on every call, and
   * dozens of slot jobs ask each node at once, so the requests made before a read is written share
   * it. That is still a fresh read for each of them: it is answered after every command whose reply
   * they had already seen.
   */
  private clusterNodesText(node: Address): Promise<string> {
    const key = addressKey(node);
    let reads = this.nodesReads.get(key);
    if (!reads) {
      reads = {};
      this.nodesReads.set(key, reads);
    }
    const state = reads;
    if (state.queued) return state.queued;
    // One read in flight per node: the next one leaves when it is answered, for everyone who asked
    // meanwhile. Under load a node's view is then built once per round trip, not once per slot job.
    const previous = state.answering ?? Promise.resolve();
    const read: Promise<string> = previous.then(() => {
      const sent = this.run(node, 'CLUSTER NODES', (redis) => {
        // Written now: whoever asks from here on needs a read that leaves later.
        if (state.queued === read) state.queued = undefined;
        return redis.call('CLUSTER', 'NODES');
      }).then(String);
      state.answering = sent.then(
        () => undefined,
        () => undefined,
      );
      return sent;
    });
    state.queued = read;
    const forget = () => {
      if (state.queued === read) state.queued = undefined;
    };
    read.then(forget, forget);
    return read;
  }

  /**
   * The open command window of a node. Every socket write costs a system call on both ends, which
   * on a small machine costs more than the command itself (profiled: a third of a worker's CPU), and
   * dozens of concurrent slot jobs each send a command every few hundred microseconds. So a node's
   * commands wait up to COMMAND_WINDOW_MS and leave in one write (ioredis auto-pipelines what is
   * sent in one turn); the node also answers them in one turn, and saves its cluster config once.
   */
  private windowFor(node: Address): CommandWindow {
    const key = addressKey(node);
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

  /** A view from the seed node, or from any node seen before if the seed does not answer. */
  async readAnyView(): Promise<NodeView> {
    let lastError: unknown;
    for (const address of this.knownAddresses) {
      try {
        const view = await this.readView(address);
        this.knownAddresses = uniqueAddresses([
          address,
          ...view.nodes.filter((node) => !node.failed).map((node) => ({ host: node.host, port: node.port })),
          { host: this.seed.host, port: this.seed.port },
        ]);
        return view;
      } catch (error) {
        lastError = error;
      }
    }
    throw mapRedisError(lastError, `cluster ${this.name}: no node answered CLUSTER NODES`);
  }

  /** The seed's node list plus every reachable master's own open slots. */
  async snapshot(): Promise<ClusterSnapshot> {
    const seedView = await this.readAnyView();
    const masters = seedView.nodes.filter((node) => node.role === NodeRole.Master && !node.failed);
    const views = await Promise.all(masters.map((master) => this.readView(master)));
    return snapshotFromViews(seedView, views);
  }

  /** cluster_state of every reachable master (CLUSTER INFO), by host:port. */
  async clusterStates(): Promise<Map<string, string>> {
    const masters = await this.masters();
    const states = await Promise.all(
      masters.map(async (master) => {
        const info = String(await this.run(master, 'CLUSTER INFO', (redis) => redis.call('CLUSTER', 'INFO')));
        return [`${master.host}:${master.port}`, /cluster_state:(\w+)/.exec(info)?.[1] ?? 'unknown'] as const;
      }),
    );
    return new Map(states);
  }

  /** DBSIZE of each node, or null for a node that did not answer. */
  async dbSizes(nodes: readonly Address[]): Promise<(number | null)[]> {
    return Promise.all(
      nodes.map((node) =>
        this.run(node, 'DBSIZE', (redis) => redis.dbsize()).then(
          (size) => size,
          () => null,
        ),
      ),
    );
  }

  /** COUNTKEYSINSLOT for many slots of one node, pipelined. */
  async countKeysInSlots(node: Address, slots: readonly number[]): Promise<number[]> {
    return Promise.all(slots.map((slot) => this.countKeysInSlot(node, slot)));
  }

  /** The masters reachable according to a fresh view, for finalization and checks. */
  async masters(): Promise<ClusterNode[]> {
    const view = await this.readAnyView();
    return view.nodes.filter((node) => node.role === NodeRole.Master && !node.failed);
  }

  /**
   * What the source and the target (and, when asked, every other master) say about one slot.
   * Issued in parallel: one round trip per node.
   */
  async observeSlot(
    slot: number,
    source: NodeRef,
    target: NodeRef,
    options: { includeOthers: boolean; countKeys?: boolean },
  ): Promise<SlotObservation> {
    const [sourceView, sourceKeys, targetView] = await Promise.all([
      this.readSlotView(source, slot),
      // Not counted: reported as UNCOUNTED_KEYS, "maybe some", which only a drain can settle.
      options.countKeys === false ? UNCOUNTED_KEYS : this.countKeysInSlot(source, slot),
      this.readSlotView(target, slot),
    ]);
    const otherMasters = sourceView.masters.filter((node) => node.id !== source.id && node.id !== target.id);
    // Without includeOthers their opinion is unknown (null): the state machine then assigns the slot
    // on all of them, which is idempotent and cheaper than asking each first.
    const others: SlotObservation['others'] = options.includeOthers
      ? await Promise.all(
          otherMasters.map(async (node) => ({
            nodeId: node.id,
            host: node.host,
            port: node.port,
            owner: (await this.readSlotView(node, slot)).owner,
          })),
        )
      : otherMasters.map((node) => ({ nodeId: node.id, host: node.host, port: node.port, owner: null }));
    return {
      slot,
      sourceId: source.id,
      targetId: target.id,
      source: {
        ...slotStateIn(sourceView, source.id),
        keys: sourceKeys,
        isMaster: sourceView.myselfIsMaster,
        masterId: sourceView.myselfMasterId,
      },
      target: {
        ...slotStateIn(targetView, target.id),
        isMaster: targetView.myselfIsMaster,
        masterId: targetView.myselfMasterId,
      },
      epochs: {
        source: sourceView.myselfEpoch,
        target: targetView.myselfEpoch,
        sourceSeenByTarget: targetView.epochs.get(source.id) ?? 0,
      },
      others,
    };
  }

  /** One node's opinion of one slot (owner, open state, epochs), read cheaply from CLUSTER NODES. */
  async readSlotView(node: Address, slot: number): Promise<SlotView> {
    const text = await this.clusterNodesText(node);
    const key = addressKey(node);
    const indexed = this.slotIndexes.get(key);
    if (indexed?.text === text) return indexed.index.slotView(slot);
    const index = indexSlotViews(text);
    this.slotIndexes.set(key, { text, index });
    return index.slotView(slot);
  }

  async countKeysInSlot(node: Address, slot: number): Promise<number> {
    const count = await this.run(node, `COUNTKEYSINSLOT ${slot}`, (redis) =>
      redis.call('CLUSTER', 'COUNTKEYSINSLOT', slot),
    );
    return Number(count);
  }

  /** Key names as Buffers: keys are binary-safe and must reach MIGRATE byte for byte. */
  async getKeysInSlot(node: Address, slot: number, count: number): Promise<Buffer[]> {
    // Not callBuffer: under auto-pipelining ioredis 5.9 drops its command name (autoPipelining.js
    // re-adds it for `call` only). The generated clusterBuffer has no typing, hence the cast.
    const keys = await this.run(node, `GETKEYSINSLOT ${slot}`, (redis) =>
      (redis as unknown as BufferClusterCommand).clusterBuffer('GETKEYSINSLOT', slot, count),
    );
    return keys;
  }

  async setSlotImporting(target: Address, slot: number, sourceId: string): Promise<void> {
    await this.setSlot(target, slot, 'IMPORTING', sourceId);
  }

  async setSlotMigrating(source: Address, slot: number, targetId: string): Promise<void> {
    await this.setSlot(source, slot, 'MIGRATING', targetId);
  }

  async setSlotNode(node: Address, slot: number, ownerId: string): Promise<void> {
    await this.setSlot(node, slot, 'NODE', ownerId);
  }

  private async setSlot(
    node: Address,
    slot: number,
    subcommand: 'IMPORTING' | 'MIGRATING' | 'NODE',
    nodeId: string,
  ) {
    await this.run(node, `SETSLOT ${slot} ${subcommand} ${nodeId}`, (redis) =>
      redis.call('CLUSTER', 'SETSLOT', slot, subcommand, nodeId),
    );
  }

  /** CLUSTER ADDSLOTS for one slot no master serves (fix of an uncovered slot). */
  async addSlot(node: Address, slot: number): Promise<void> {
    await this.run(node, `ADDSLOTS ${slot}`, (redis) => redis.call('CLUSTER', 'ADDSLOTS', slot));
  }

  async setSlotStable(node: Address, slot: number): Promise<void> {
    await this.run(node, `SETSLOT ${slot} STABLE`, (redis) =>
      redis.call('CLUSTER', 'SETSLOT', slot, 'STABLE'),
    );
  }

  /**
   * MIGRATE host port "" 0 timeout [REPLACE] [AUTH2 user pass] KEYS ...: moves the keys atomically
   * per key (the source deletes a key only after the target acknowledged its RESTORE).
   * @returns the number of keys sent (0 when none of them existed any more: +NOKEY).
   */
  async migrate(
    source: Address,
    target: Address,
    keys: readonly Buffer[],
    options: MigrateOptions,
  ): Promise<number> {
    if (keys.length === 0) return 0;
    const args: (string | number | Buffer)[] = [...this.migrateArguments(target, options), 'KEYS', ...keys];
    const reply = await this.run(
      source,
      `MIGRATE ${keys.length} keys to ${target.host}:${target.port}`,
      (redis) => redis.call('MIGRATE', ...args),
      options.timeoutMs + this.options.commandTimeoutMs,
      { immediate: true },
    );
    return reply === 'NOKEY' ? 0 : keys.length;
  }

  /**
   * Moves the next batch of the slot's keys from the source to the target, chosen on the source
   * itself (MIGRATE_BATCH_SCRIPT). The source blocks for the MIGRATE as it would for a plain one.
   */
  async migrateNextBatch(
    source: Address,
    target: Address,
    slot: number,
    limits: { readonly maxKeys: number; readonly maxBytes: number },
    options: MigrateOptions,
  ): Promise<MigrateBatchResult> {
    const keys = Math.min(limits.maxKeys, MAX_SCRIPT_BATCH_KEYS);
    const args = [slot, keys, limits.maxBytes, ...this.migrateArguments(target, options)];
    const reply = await this.run(
      source,
      `MIGRATE of up to ${keys} keys of slot ${slot} to ${target.host}:${target.port}`,
      // The Buffer variant: a key named in the reply must come back byte for byte.
      (redis) => (redis as unknown as ScriptCommands).slotfleetMigrateBatchBuffer(...args),
      options.timeoutMs + this.options.commandTimeoutMs,
      { immediate: true },
    );
    const [count, sent, more, bigKey, bytes, beganS, beganUs, endedS, endedUs] = reply;
    // Lua's false arrives as a nil bulk reply (null).
    if (bigKey instanceof Buffer) {
      return { keys: 0, moved: 0, bytes: 0, more: true, bigKey: { name: bigKey, bytes: Number(bytes) } };
    }
    const moved = Number(sent) === 1 ? Number(count) : 0;
    const microseconds = (seconds: unknown, micros: unknown) =>
      Number(String(seconds)) * 1e6 + Number(String(micros));
    return {
      keys: Number(count),
      moved,
      bytes: moved > 0 ? Number(bytes ?? 0) : 0,
      more: Number(more) === 1,
      ...(endedUs instanceof Buffer && beganUs instanceof Buffer
        ? { ranUs: { start: microseconds(beganS, beganUs), end: microseconds(endedS, endedUs) } }
        : {}),
    };
  }

  /**
   * DUMP of each key (null where the node has none), for comparing a target's copy with the
   * source's. asking: the node is IMPORTING the slot and must be asked with ASKING before each DUMP,
   * which only holds for the next command: so on a connection of its own, where no other job's
   * command can come in between. Rare (a BUSYKEY), so a short-lived connection is fine.
   */
  async dumpKeys(
    node: Address,
    keys: readonly Buffer[],
    options: { asking: boolean },
  ): Promise<(Buffer | null)[]> {
    const replies = await this.privateCommands(
      node,
      `DUMP of ${keys.length} keys`,
      keys.map((key) => ['DUMP', key]),
      options,
    );
    return replies.map((reply) => (reply as Buffer | null) ?? null);
  }

  /**
   * Each key's value in a canonical form (null where the node has none), for deciding whether two
   * copies hold the same data when their DUMP payloads differ: RESTORE may pick another encoding
   * (a small hashtable-encoded hash loads as a listpack, a set of integers as an intset), so equal
   * values do not always DUMP alike. Types: string, list, set, zset, hash, stream (entries; groups
   * by name and last delivered id). asking: as for dumpKeys.
   */
  async canonicalValues(
    node: Address,
    keys: readonly Buffer[],
    options: { asking: boolean },
  ): Promise<(string | null)[]> {
    const reads: Record<string, (key: Buffer) => (string | Buffer | number)[][]> = {
      string: (key) => [['GET', key]],
      list: (key) => [['LRANGE', key, 0, -1]],
      set: (key) => [['SMEMBERS', key]],
      zset: (key) => [['ZRANGE', key, 0, -1, 'WITHSCORES']],
      hash: (key) => [['HGETALL', key]],
      stream: (key) => [
        ['XRANGE', key, '-', '+'],
        ['XINFO', 'GROUPS', key],
      ],
    };
    const types = (
      await this.privateCommands(
        node,
        'TYPE',
        keys.map((key) => ['TYPE', key]),
        options,
      )
    ).map((reply) => String(reply));
    const commands = keys.flatMap((key, index) => reads[types[index]!]?.(key) ?? []);
    const replies = await this.privateCommands(node, 'value reads', commands, options);
    let next = 0;
    return keys.map((_, index) => {
      const type = types[index]!;
      if (type === 'none') return null;
      const read = reads[type];
      if (!read) return `unsupported type ${type}`;
      const parts = read(Buffer.alloc(0)).map(() => replies[next++]);
      const order = type === 'set' ? 'members' : type === 'hash' ? 'pairs' : 'kept';
      return JSON.stringify([type, ...parts.map((part) => canonical(part, order))]);
    });
  }

  /** Commands on a connection of their own, each preceded by ASKING when asked (see dumpKeys). */
  private async privateCommands(
    node: Address,
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
          if (error) throw mapRedisError(error, `${what} on ${node.host}:${node.port}`);
          return value;
        });
    } finally {
      redis.disconnect();
    }
  }

  /** MIGRATE's arguments before KEYS: host port "" 0 timeout [REPLACE] [AUTH pass | AUTH2 user pass]. */
  private migrateArguments(target: Address, options: MigrateOptions): (string | number)[] {
    const args: (string | number)[] = [target.host, target.port, '', 0, options.timeoutMs];
    if (options.replace) args.push('REPLACE');
    if (this.seed.password !== undefined) {
      if (this.seed.username !== undefined) args.push('AUTH2', this.seed.username, this.seed.password);
      else args.push('AUTH', this.seed.password);
    }
    return args;
  }

  async ping(): Promise<void> {
    await this.run(this.knownAddresses[0]!, 'PING', (redis) => redis.ping());
  }

  async close(): Promise<void> {
    this.closed = true;
    const connections = [...this.connections.values()];
    this.connections.clear();
    await Promise.all(connections.map((redis) => redis.quit().catch(() => redis.disconnect())));
  }

  private connection(node: Address): Redis {
    if (this.closed)
      throw new SlotfleetError(ErrorCode.Connection, `cluster ${this.name}: adapter is closed`);
    const key = addressKey(node);
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
      redis.defineCommand('slotfleetMigrateBatch', { numberOfKeys: 0, lua: MIGRATE_BATCH_SCRIPT });
      redis.on('error', (error) => {
        this.options.logger?.debug({ node: key, err: error.message }, 'node connection');
        // A refused login fails the commands waiting at that moment with its reply, but a command
        // that arrives while the connection retries fails later as "max retries": remember why.
        if (mapRedisError(error, key).code === ErrorCode.AuthFailed) this.refusedLogins.set(key, error);
      });
      redis.on('ready', () => this.refusedLogins.delete(key));
      this.connections.set(key, redis);
    }
    return redis;
  }

  private connectionOptions(node: Address): RedisOptions {
    return {
      host: node.host,
      port: node.port,
      ...(this.seed.username !== undefined ? { username: this.seed.username } : {}),
      ...(this.seed.password !== undefined ? { password: this.seed.password } : {}),
      ...(this.seed.tls ? { tls: {} } : {}),
    };
  }

  /**
   * immediate: the command does not wait in the node's command window. A MIGRATE batch gains nothing
   * from company (it is a write of its own on the node's side), and a slot with one batch in flight
   * would otherwise leave its source idle for the window between two batches.
   */
  private async run<T>(
    node: Address,
    what: string,
    command: (redis: Redis) => Promise<T>,
    timeoutMs = this.options.commandTimeoutMs,
    options: { readonly immediate?: boolean } = {},
  ): Promise<T> {
    const context = `${what} on ${node.host}:${node.port}`;
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
      const refused = this.refusedLogins.get(addressKey(node));
      if (mapped.code === ErrorCode.Connection && refused) throw mapRedisError(refused, context);
      throw mapped;
    } finally {
      clearTimeout(timer);
    }
  }
}

function slotStateIn(view: SlotView, selfId: string): NodeSlotState {
  if (view.myselfId !== selfId) {
    throw new SlotfleetError(
      ErrorCode.OwnerChanged,
      `the node expected to be ${selfId} now answers as ${view.myselfId}: the cluster changed`,
    );
  }
  return { owner: view.owner, importingFrom: view.importingFrom, migratingTo: view.migratingTo };
}

/** A reply as comparable data: Buffers as base64; a set's members and a hash's pairs sorted. */
function canonical(reply: unknown, order: 'kept' | 'members' | 'pairs'): unknown {
  const plain = (value: unknown): unknown =>
    Buffer.isBuffer(value) ? value.toString('base64') : Array.isArray(value) ? value.map(plain) : value;
  const value = plain(reply);
  if (order === 'kept' || !Array.isArray(value)) return value;
  if (order === 'members') return value.map(String).sort();
  const pairs: string[] = [];
  for (let index = 0; index + 1 < value.length; index += 2)
    pairs.push(JSON.stringify([value[index], value[index + 1]]));
  return pairs.sort();
}

function addressKey(node: Address): string {
  return `${node.host}:${node.port}`;
}

function uniqueAddresses(addresses: Address[]): Address[] {
  const seen = new Set<string>();
  return addresses.filter((address) => {
    const key = `${address.host}:${address.port}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}
