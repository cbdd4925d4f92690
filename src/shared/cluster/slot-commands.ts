/**
 * The slot commands, sent through the node connections: SETSLOT, key counts and lists, MIGRATE and
 * the batch script that picks a batch on the source itself, and the reads that compare a key's two
 * copies after a BUSYKEY.
 */
import type { RedisEndpoint } from '../config.js';
import { formatSlotRanges } from '../domain/slots.js';
import { nodeAddress } from '../domain/topology.js';
import type { NodeConnections } from './connections.js';
import { mapRedisError } from './error-map.js';
import type { BatchLimits, MigrateBatchResult, MigrateOptions, NodeAddress } from './port.js';

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
 * Valkey answers TIME with the time its top-level command began (server.ustime, updated only
 * outside nested calls), so inside the script both times are the script's start: see
 * SlotCommands.frozenScriptClocks.
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

/** Lua's unpack() is bounded by the C stack (LUAI_MAXCSTACK 8000): keys per script call stay below. */
export const MAX_SCRIPT_BATCH_KEYS = 5_000;

/** COUNTKEYSINSLOT of each slot of ARGV, in order (SlotCommands.countKeysInSlot). */
const COUNT_KEYS_SCRIPT = `
local counts = {}
for i = 1, #ARGV do counts[i] = redis.call('CLUSTER', 'COUNTKEYSINSLOT', ARGV[i]) end
return counts`;

/**
 * Slots per count script at most: the node serves nobody else while it runs, and 256 counts take it
 * well under a millisecond (as long as the same counts pipelined in one write).
 */
export const COUNTS_PER_SCRIPT = 256;

/**
 * CLUSTER SETSLOT of each (slot, subcommand, node id) of ARGV, in order, each with pcall: one
 * refused does not stop the others, as in a pipeline. Reply: per SETSLOT, "" or its error.
 * Refused as a whole (false) on Valkey: from 8.0 its SETSLOT on a primary with replicas blocks its
 * caller until they have it (clusterCommandSetSlot), which a script cannot do; there each SETSLOT
 * stays a command of its own (SlotCommands.setSlot).
 */
const SET_SLOTS_SCRIPT = `
if redis.VALKEY_VERSION ~= nil then return false end
local errors = {}
for i = 1, #ARGV, 3 do
  local reply = redis.pcall('CLUSTER', 'SETSLOT', ARGV[i], ARGV[i + 1], ARGV[i + 2])
  errors[#errors + 1] = type(reply) == 'table' and reply.err or ''
end
return errors`;

/**
 * SETSLOTs per script call at most. Each is O(1) but may broadcast a PONG to every node (NODE on the
 * importing target) and schedules a config save for the node's next turn: 128 take a Redis 7.0 node
 * well under a millisecond, the time they took pipelined in one write.
 */
export const SETSLOTS_PER_SCRIPT = 128;

/** The scripts every node connection defines (NodeConnections' scripts option). */
export const NODE_SCRIPTS = {
  slotfleetMigrateBatch: { numberOfKeys: 0, lua: MIGRATE_BATCH_SCRIPT },
  slotfleetCountKeys: { numberOfKeys: 0, lua: COUNT_KEYS_SCRIPT },
  slotfleetSetSlots: { numberOfKeys: 0, lua: SET_SLOTS_SCRIPT },
} as const;

interface ScriptCommands {
  slotfleetMigrateBatchBuffer(...args: (string | number)[]): Promise<(number | Buffer | null)[]>;
  slotfleetCountKeys(...slots: number[]): Promise<number[]>;
  slotfleetSetSlots(...args: (string | number)[]): Promise<string[] | null>;
}

type SetSlotSubcommand = 'IMPORTING' | 'MIGRATING' | 'NODE';

/** A SETSLOT asked of a node, waiting to leave with the others asked in the same turn. */
interface SetSlotAsked {
  readonly slot: number;
  readonly subcommand: SetSlotSubcommand;
  readonly nodeId: string;
  resolve(): void;
  reject(error: unknown): void;
}

/** A count asked of a node, waiting to leave with the others asked in the same turn. */
interface CountAsked {
  readonly slot: number;
  resolve(count: number): void;
  reject(error: unknown): void;
}

interface TimedPipeline {
  time(): { exec(): Promise<[Error | null, unknown][] | null> };
}

interface BufferClusterCommand {
  clusterBuffer(subcommand: 'GETKEYSINSLOT', slot: number, count: number): Promise<Buffer[]>;
}

/**
 * Adds what was asked of a node to what else was asked of it in this turn of the event loop; the
 * turn's first ask schedules send, which then gets them all, in the order asked.
 */
function askInTurn<T>(
  waiting: Map<string, T[]>,
  node: NodeAddress,
  ask: T,
  send: (asked: readonly T[]) => void,
): void {
  const address = nodeAddress(node);
  const asked = waiting.get(address);
  if (asked) {
    asked.push(ask);
    return;
  }
  const created = [ask];
  waiting.set(address, created);
  setImmediate(() => {
    waiting.delete(address);
    send(created);
  });
}

export class SlotCommands {
  constructor(
    /** Its credentials go into MIGRATE (AUTH / AUTH2): the target asks the source for them. */
    private readonly seed: RedisEndpoint,
    private readonly connections: NodeConnections,
    private readonly commandTimeoutMs: number,
  ) {}

  /**
   * Nodes whose TIME does not advance inside a script (Valkey 8 and 9): their batch script reports
   * its start as its end. Once a batch that moved keys shows that, the node's batches go with a TIME
   * of their own in the same write, answered as soon as the script returns (a node runs a
   * connection's pipelined commands one after the other), and that is the batch's end. Without it
   * pacing read every batch as taking no time, and the client-latency budget held nothing on Valkey.
   */
  private readonly frozenScriptClocks = new Set<string>();

  /** Counts asked of each node (by address) in this turn of the event loop, not sent yet. */
  private readonly countsAsked = new Map<string, CountAsked[]>();

  /** SETSLOTs asked of each node (by address) in this turn of the event loop, not sent yet. */
  private readonly setSlotsAsked = new Map<string, SetSlotAsked[]>();

  /** Nodes that refused the SETSLOT script (Valkey): their SETSLOTs go one command each. */
  private readonly setSlotsOneByOne = new Set<string>();

  /**
   * COUNTKEYSINSLOT, sent with every other count asked of the node in the same turn of the event
   * loop as one script call (the slots of a finalize batch, the API's progress reads): each
   * command costs the worker far more than the node's count does (a command object, a timer, a
   * promise, a reply to parse), and a finalizer counts every slot twice.
   */
  countKeysInSlot(node: NodeAddress, slot: number): Promise<number> {
    return new Promise((resolve, reject) =>
      askInTurn(this.countsAsked, node, { slot, resolve, reject }, (asked) => this.sendCounts(node, asked)),
    );
  }

  private sendCounts(node: NodeAddress, asked: readonly CountAsked[]): void {
    for (let start = 0; start < asked.length; start += COUNTS_PER_SCRIPT) {
      const chunk = asked.slice(start, start + COUNTS_PER_SCRIPT);
      const slots = chunk.map((count) => count.slot);
      const counting =
        slots.length === 1
          ? this.connections
              .run(node, `COUNTKEYSINSLOT ${slots[0]}`, (redis) =>
                redis.call('CLUSTER', 'COUNTKEYSINSLOT', slots[0]!),
              )
              .then((count) => [Number(count)])
          : this.connections
              .run(node, `COUNTKEYSINSLOT of ${slots.length} slots (${formatSlotRanges(slots)})`, (redis) =>
                (redis as unknown as ScriptCommands).slotfleetCountKeys(...slots),
              )
              .then((counts) => counts.map(Number));
      counting.then(
        (counts) => {
          for (const [index, count] of chunk.entries()) count.resolve(counts[index]!);
        },
        (error: unknown) => {
          for (const count of chunk) count.reject(error);
        },
      );
    }
  }

  async getKeysInSlot(node: NodeAddress, slot: number, count: number): Promise<Buffer[]> {
    // Not callBuffer: under auto-pipelining ioredis 5.9 drops its command name (autoPipelining.js
    // re-adds it for `call` only). The generated clusterBuffer has no typing, hence the cast.
    return this.connections.run(node, `GETKEYSINSLOT ${slot}`, (redis) =>
      (redis as unknown as BufferClusterCommand).clusterBuffer('GETKEYSINSLOT', slot, count),
    );
  }

  /**
   * CLUSTER SETSLOT, sent with every other SETSLOT asked of the node in the same turn of the event
   * loop as one script call (SET_SLOTS_SCRIPT), in the order asked: a block's opening, a finalize
   * batch's assignments on each master. Each command costs the worker far more than the node's
   * SETSLOT does, and a rebalance sends six per slot (sixteen or more on a wide cluster). Each
   * caller still gets its own SETSLOT's reply, mapped as a command of its own would be.
   */
  setSlot(node: NodeAddress, slot: number, subcommand: SetSlotSubcommand, nodeId: string): Promise<void> {
    if (this.setSlotsOneByOne.has(nodeAddress(node)))
      return this.setSlotAlone(node, slot, subcommand, nodeId);
    return new Promise((resolve, reject) =>
      askInTurn(this.setSlotsAsked, node, { slot, subcommand, nodeId, resolve, reject }, (asked) =>
        this.sendSetSlots(node, asked),
      ),
    );
  }

  private async setSlotAlone(
    node: NodeAddress,
    slot: number,
    subcommand: SetSlotSubcommand,
    nodeId: string,
  ): Promise<void> {
    await this.connections.run(node, `SETSLOT ${slot} ${subcommand} ${nodeId}`, (redis) =>
      redis.call('CLUSTER', 'SETSLOT', slot, subcommand, nodeId),
    );
  }

  private sendSetSlots(node: NodeAddress, asked: readonly SetSlotAsked[]): void {
    const alone = (entry: SetSlotAsked) =>
      this.setSlotAlone(node, entry.slot, entry.subcommand, entry.nodeId).then(entry.resolve, entry.reject);
    for (let start = 0; start < asked.length; start += SETSLOTS_PER_SCRIPT) {
      const chunk = asked.slice(start, start + SETSLOTS_PER_SCRIPT);
      if (chunk.length === 1) {
        alone(chunk[0]!);
        continue;
      }
      const args = chunk.flatMap((entry) => [entry.slot, entry.subcommand, entry.nodeId]);
      const what = `SETSLOT of ${chunk.length} slots (${formatSlotRanges(chunk.map((entry) => entry.slot))})`;
      this.connections
        .run(node, what, (redis) => (redis as unknown as ScriptCommands).slotfleetSetSlots(...args))
        .then(
          (errors) => {
            if (errors === null) {
              // Valkey: this node's SETSLOTs go one by one from now on, these first.
              this.setSlotsOneByOne.add(nodeAddress(node));
              for (const entry of chunk) alone(entry);
              return;
            }
            for (const [index, entry] of chunk.entries()) {
              const error = String(errors[index] ?? '');
              if (error === '') entry.resolve();
              else {
                const context = `SETSLOT ${entry.slot} ${entry.subcommand} ${entry.nodeId} on ${nodeAddress(node)}`;
                entry.reject(mapRedisError(new Error(error), context));
              }
            }
          },
          (error: unknown) => {
            for (const entry of chunk) entry.reject(error);
          },
        );
    }
  }

  async setSlotStable(node: NodeAddress, slot: number): Promise<void> {
    await this.connections.run(node, `SETSLOT ${slot} STABLE`, (redis) =>
      redis.call('CLUSTER', 'SETSLOT', slot, 'STABLE'),
    );
  }

  async addSlot(node: NodeAddress, slot: number): Promise<void> {
    await this.connections.run(node, `ADDSLOTS ${slot}`, (redis) => redis.call('CLUSTER', 'ADDSLOTS', slot));
  }

  /** MIGRATE host port "" 0 timeout [REPLACE] [AUTH2 user pass] KEYS ... */
  async migrate(
    source: NodeAddress,
    target: NodeAddress,
    keys: readonly Buffer[],
    options: MigrateOptions,
  ): Promise<number> {
    if (keys.length === 0) return 0;
    const args: (string | number | Buffer)[] = [...this.migrateArguments(target, options), 'KEYS', ...keys];
    const reply = await this.connections.run(
      source,
      `MIGRATE ${keys.length} keys to ${nodeAddress(target)}`,
      (redis) => redis.call('MIGRATE', ...args),
      { timeoutMs: options.timeoutMs + this.commandTimeoutMs, immediate: true },
    );
    return reply === 'NOKEY' ? 0 : keys.length;
  }

  /**
   * Moves the next batch of the slot's keys from the source to the target, chosen on the source
   * itself (MIGRATE_BATCH_SCRIPT). The source blocks for the MIGRATE as it would for a plain one.
   */
  async migrateNextBatch(
    source: NodeAddress,
    target: NodeAddress,
    slot: number,
    limits: BatchLimits,
    options: MigrateOptions,
  ): Promise<MigrateBatchResult> {
    const keys = Math.min(limits.maxKeys, MAX_SCRIPT_BATCH_KEYS);
    const args = [slot, keys, limits.maxBytes, ...this.migrateArguments(target, options)];
    const frozenClock = this.frozenScriptClocks.has(nodeAddress(source));
    const { reply, endedAfter } = await this.connections.run(
      source,
      `MIGRATE of up to ${keys} keys of slot ${slot} to ${nodeAddress(target)}`,
      // The Buffer variant: a key named in the reply must come back byte for byte.
      async (redis) => {
        if (!frozenClock) {
          return { reply: await (redis as unknown as ScriptCommands).slotfleetMigrateBatchBuffer(...args) };
        }
        const pipeline = redis.pipeline() as unknown as ScriptCommands & TimedPipeline;
        pipeline.slotfleetMigrateBatchBuffer(...args);
        const [[scriptError, scriptReply], [timeError, time]] = (await pipeline.time().exec()) as [
          [Error | null, (number | Buffer | null)[]],
          [Error | null, [string, string]],
        ];
        if (scriptError) throw scriptError;
        // A user without +time migrates untimed, as the script's own pcall does.
        return { reply: scriptReply, ...(timeError ? {} : { endedAfter: time }) };
      },
      { timeoutMs: options.timeoutMs + this.commandTimeoutMs, immediate: true },
    );
    const [count, sent, more, bigKey, bytes, beganS, beganUs, endedS, endedUs] = reply;
    // Lua's false arrives as a nil bulk reply (null).
    if (bigKey instanceof Buffer) {
      return { keys: 0, moved: 0, bytes: 0, more: true, bigKey: { name: bigKey, bytes: Number(bytes) } };
    }
    const moved = Number(sent) === 1 ? Number(count) : 0;
    const microseconds = (seconds: unknown, micros: unknown) =>
      Number(String(seconds)) * 1e6 + Number(String(micros));
    let ranUs: MigrateBatchResult['ranUs'];
    if (endedUs instanceof Buffer && beganUs instanceof Buffer) {
      const start = microseconds(beganS, beganUs);
      const end = endedAfter ? microseconds(endedAfter[0], endedAfter[1]) : microseconds(endedS, endedUs);
      // A MIGRATE that sent keys waits for the target's reply: tens of µs at least, never 0. On a
      // node whose clock is frozen, only the TIME sent after the script says when it ended: without
      // it (a user without +time) the batch goes untimed, not timed at 0 µs.
      if (endedAfter !== undefined || (!frozenClock && end > start)) ranUs = { start, end };
      else if (!frozenClock && moved > 0) this.frozenScriptClocks.add(nodeAddress(source));
    }
    return {
      keys: Number(count),
      moved,
      bytes: moved > 0 ? Number(bytes ?? 0) : 0,
      more: Number(more) === 1,
      ...(ranUs ? { ranUs } : {}),
    };
  }

  /** DUMP of each key; asking: on a connection of its own (NodeConnections.privateCommands). */
  async dumpKeys(
    node: NodeAddress,
    keys: readonly Buffer[],
    options: { asking: boolean },
  ): Promise<(Buffer | null)[]> {
    const replies = await this.connections.privateCommands(
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
    node: NodeAddress,
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
      await this.connections.privateCommands(
        node,
        'TYPE',
        keys.map((key) => ['TYPE', key]),
        options,
      )
    ).map((reply) => String(reply));
    const commands = keys.flatMap((key, index) => reads[types[index]!]?.(key) ?? []);
    const replies = await this.connections.privateCommands(node, 'value reads', commands, options);
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

  /** MIGRATE's arguments before KEYS: host port "" 0 timeout [REPLACE] [AUTH pass | AUTH2 user pass]. */
  private migrateArguments(target: NodeAddress, options: MigrateOptions): (string | number)[] {
    const args: (string | number)[] = [target.host, target.port, '', 0, options.timeoutMs];
    if (options.replace) args.push('REPLACE');
    if (this.seed.password !== undefined) {
      if (this.seed.username !== undefined) args.push('AUTH2', this.seed.username, this.seed.password);
      else args.push('AUTH', this.seed.password);
    }
    return args;
  }
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
