/**
 * Deterministic test data for the sandbox cluster.
 *
 * A manifest is a recipe, not a copy: every key name, type, value and expiry is a pure
 * function of (manifest, index), so a million keys cost a few numbers of memory and
 * `verifyDataset` can recompute what each key must hold after any number of migrations.
 *
 * Writes go straight to the owning masters as raw RESP pipelines (fast, but they need a stable
 * topology: a MOVED reply fails the seed); reads go through an ioredis `Cluster` so they follow
 * MOVED and ASK the way a real client would.
 */
import type { ConnectionOptions } from 'node:tls';
import calculateSlot from 'cluster-key-slot';
import { Cluster, Redis } from 'ioredis';
import { SLOT_COUNT } from '../shared/domain/slots.js';
import { NodeRole, parseClusterNodes } from '../shared/domain/topology.js';
import { SANDBOX_HOST } from './redis-process.js';
import { encodeCommand, RespPipeline, type RespTarget } from './resp-pipeline.js';

export type DatasetTypes = 'mixed' | 'string';

export const MIXED_KEY_TYPES = ['string', 'hash', 'list', 'set', 'zset', 'stream'] as const;
export type KeyType = (typeof MIXED_KEY_TYPES)[number];

/**
 * A seed node as a URL (`redis://[[user]:password@]host:port`, or `rediss://` for TLS with Node's
 * default CAs) or as parts (SandboxCluster.seedTarget: with the sandbox CA and client certificate).
 */
export type ClusterTarget = string | NodeTarget;

export interface NodeTarget {
  host: string;
  port: number;
  username?: string;
  password?: string;
  /** Node TLS options: set, every connection to the cluster's nodes uses TLS with them. */
  tls?: ConnectionOptions;
}

export interface SeedOptions {
  keys: number;
  /** @defaultValue 'sf' */
  prefix?: string;
  /** `mixed` cycles string, hash, list, set, zset, stream. @defaultValue 'mixed' */
  types?: DatasetTypes;
  /** Length of every string value. @defaultValue 64 */
  valueBytes?: number;
  /** Fraction of keys that get an expiry between 1 h and 2 h from now. @defaultValue 0 */
  ttlFraction?: number;
  /** Put every key in this hash tag's slot, e.g. `{hot}`. */
  hashTag?: string;
  /** Seed of the deterministic generator. @defaultValue 1 */
  seed?: number;
}

/** Everything needed to recompute the dataset; plain JSON. */
export interface DatasetManifest {
  formatVersion: 1;
  prefix: string;
  count: number;
  types: DatasetTypes;
  valueBytes: number;
  hashTag: string | null;
  seed: number;
  ttlFraction: number;
  /** Expiries are absolute (PEXPIREAT), from this epoch ms plus 1 h to 2 h. */
  ttlBaseMs: number;
  keysWithTtl: number;
}

export type ExpectedValue =
  | { type: 'string'; value: string }
  | { type: 'hash'; value: Record<string, string> }
  | { type: 'list'; value: string[] }
  /** Sorted, as `verifyDataset` sorts SMEMBERS. */
  | { type: 'set'; value: string[] }
  /** In ZRANGE order: [member, score] pairs. */
  | { type: 'zset'; value: Array<[string, string]> }
  | { type: 'stream'; value: Array<[string, string[]]> };

export type ExpectedKey = ExpectedValue & {
  index: number;
  key: string;
  /** Absolute expiry in epoch ms, or null for a key without TTL. */
  expireAtMs: number | null;
};

export interface VerifyOptions {
  /** Check only keys whose index is a multiple of this. @defaultValue 1 */
  sampleEvery?: number;
  /** Pipelines in flight at once. @defaultValue 32 */
  concurrency?: number;
}

export interface VerifyResult {
  checked: number;
  /** The first 20 missing key names, in index order; `missingCount` counts all. */
  missing: string[];
  wrongValue: string[];
  wrongTtl: string[];
  missingCount: number;
  wrongValueCount: number;
  wrongTtlCount: number;
  ok: boolean;
}

const ELEMENTS_PER_COLLECTION = 5;
const STREAM_ENTRIES = 3;
const HOUR_MS = 3_600_000;
const WRITE_CHUNK_KEYS = 1000;
/** Two in flight: Redis parses one chunk while the next is being encoded. */
const WRITE_PIPELINES_IN_FLIGHT_PER_NODE = 2;
const READ_CHUNK_KEYS = 300;
const REPORTED_NAMES = 20;
const TTL_TOLERANCE_BELOW_MS = 5000;
const TTL_TOLERANCE_ABOVE_MS = 1000;
const POOL_OFFSETS = 8192;
const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
const SALT_VALUE = 0x5f3759df;
const SALT_TTL_CHOICE = 0x2545f491;
const SALT_TTL_LENGTH = 0x68e31da4;

export async function seedDataset(target: ClusterTarget, options: SeedOptions): Promise<DatasetManifest> {
  const manifest = createManifest(options);
  const seedNode = parseTarget(target);
  const masters = await readSlotOwners(seedNode);
  const indexesByMaster = partitionByOwner(manifest, masters.ownerBySlot, masters.addresses.length);
  await Promise.all(
    masters.addresses.map((address, masterIndex) =>
      writeToMaster(
        { ...address, username: seedNode.username, password: seedNode.password, tls: seedNode.tls },
        manifest,
        indexesByMaster[masterIndex] ?? [],
      ),
    ),
  );
  return manifest;
}

export function createManifest(options: SeedOptions, nowMs = Date.now()): DatasetManifest {
  if (!Number.isInteger(options.keys) || options.keys < 0) {
    throw new Error(`keys must be a non-negative integer, got ${options.keys}`);
  }
  const ttlFraction = options.ttlFraction ?? 0;
  if (!(ttlFraction >= 0 && ttlFraction <= 1))
    throw new Error(`ttlFraction must be in [0, 1], got ${ttlFraction}`);
  const valueBytes = options.valueBytes ?? 64;
  if (!Number.isInteger(valueBytes) || valueBytes < 1) {
    throw new Error(`valueBytes must be a positive integer, got ${valueBytes}`);
  }
  const manifest: DatasetManifest = {
    formatVersion: 1,
    prefix: options.prefix ?? 'sf',
    count: options.keys,
    types: options.types ?? 'mixed',
    valueBytes,
    hashTag: options.hashTag ?? null,
    seed: (options.seed ?? 1) >>> 0,
    ttlFraction,
    ttlBaseMs: nowMs,
    keysWithTtl: 0,
  };
  for (let index = 0; index < manifest.count; index++) if (hasTtl(manifest, index)) manifest.keysWithTtl++;
  return manifest;
}

export function datasetKey(manifest: DatasetManifest, index: number): string {
  return manifest.hashTag === null
    ? `${manifest.prefix}:${index}`
    : `${manifest.prefix}:${manifest.hashTag}:${index}`;
}

export function keyTypeAt(manifest: DatasetManifest, index: number): KeyType {
  return manifest.types === 'string' ? 'string' : MIXED_KEY_TYPES[index % MIXED_KEY_TYPES.length]!;
}

/** The string value of key `index`: it starts with the index, so values never collide across keys. */
export function valueFor(manifest: DatasetManifest, index: number): string {
  const offset = mix(manifest.seed, index, SALT_VALUE) % POOL_OFFSETS;
  const head = `${index}:`;
  return (head + randomPool(manifest.seed, manifest.valueBytes).substr(offset, manifest.valueBytes)).slice(
    0,
    manifest.valueBytes,
  );
}

export function expireAtFor(manifest: DatasetManifest, index: number): number | null {
  if (!hasTtl(manifest, index)) return null;
  return manifest.ttlBaseMs + HOUR_MS + (mix(manifest.seed, index, SALT_TTL_LENGTH) % HOUR_MS);
}

export function expectedKey(manifest: DatasetManifest, index: number): ExpectedKey {
  const key = datasetKey(manifest, index);
  const expireAtMs = expireAtFor(manifest, index);
  const type = keyTypeAt(manifest, index);
  // The string case is the million-key hot path: no closures or arrays for it.
  if (type === 'string') return { index, key, expireAtMs, type, value: valueFor(manifest, index) };
  const pool = randomPool(manifest.seed, manifest.valueBytes);
  const start = mix(manifest.seed, index, SALT_VALUE);
  const element = (tag: string, position: number): string =>
    `${index}:${tag}${position}:${pool.substr((start + position * 7) % POOL_OFFSETS, 8)}`;
  const positions = Array.from({ length: ELEMENTS_PER_COLLECTION }, (_, position) => position);
  const base = { index, key, expireAtMs };
  switch (type) {
    case 'hash':
      return {
        ...base,
        type,
        value: Object.fromEntries(positions.map((position) => [`f${position}`, element('h', position)])),
      };
    case 'list':
      return { ...base, type, value: positions.map((position) => element('l', position)) };
    case 'set':
      return { ...base, type, value: positions.map((position) => element('s', position)).sort() };
    case 'zset':
      // Scores grow with the position, so ZRANGE order is position order.
      return {
        ...base,
        type,
        value: positions.map((position) => [
          element('z', position),
          String(position * 1000 + (start % 1000)),
        ]),
      };
    case 'stream':
      return {
        ...base,
        type,
        value: Array.from({ length: STREAM_ENTRIES }, (_, position) => [
          `${index + 1}-${position + 1}`,
          ['f', element('x', position)],
        ]),
      };
    default: {
      const never: never = type;
      throw new Error(`unhandled key type: ${never}`);
    }
  }
}

/**
 * Reads every key (or every `sampleEvery`-th) through an ioredis `Cluster`, one slot per
 * pipeline, and compares type, full value and TTL with what the manifest says.
 */
export async function verifyDataset(
  target: ClusterTarget,
  manifest: DatasetManifest,
  options: VerifyOptions = {},
): Promise<VerifyResult> {
  const sampleEvery = options.sampleEvery ?? 1;
  if (!Number.isInteger(sampleEvery) || sampleEvery < 1) {
    throw new Error(`sampleEvery must be a positive integer, got ${sampleEvery}`);
  }
  const batches = readBatches(manifest, sampleEvery);
  const cluster = clusterClient(parseTarget(target));
  const missing: number[] = [];
  const wrongValue: number[] = [];
  const wrongTtl: number[] = [];
  let checked = 0;
  try {
    const suspects: number[] = [];
    await runPool(batches, options.concurrency ?? 32, async (batch) => {
      const findings = await checkBatch(cluster, manifest, batch);
      checked += batch.length;
      suspects.push(...findings);
    });
    // A pipeline that met ASK mid-migration is replayed whole on the importing node, where
    // keys not moved yet look missing; single commands follow ASK key by key, so they decide.
    for (const index of suspects) {
      const finding = await checkKey(cluster, expectedKey(manifest, index));
      if (finding.missing) missing.push(index);
      if (finding.wrongValue) wrongValue.push(index);
      if (finding.wrongTtl) wrongTtl.push(index);
    }
  } finally {
    await cluster.quit().catch(() => cluster.disconnect());
  }
  const names = (indexes: number[]): string[] =>
    indexes
      .sort((left, right) => left - right)
      .slice(0, REPORTED_NAMES)
      .map((index) => datasetKey(manifest, index));
  return {
    checked,
    missing: names(missing),
    wrongValue: names(wrongValue),
    wrongTtl: names(wrongTtl),
    missingCount: missing.length,
    wrongValueCount: wrongValue.length,
    wrongTtlCount: wrongTtl.length,
    ok: missing.length + wrongValue.length + wrongTtl.length === 0,
  };
}

/** DBSIZE summed over the masters that the seed node does not consider failed. */
export async function countKeys(target: ClusterTarget): Promise<number> {
  const seedNode = parseTarget(target);
  const { addresses } = await readSlotOwners(seedNode, { includeEmptyMasters: true });
  const sizes = await Promise.all(
    addresses.map(async (address) => {
      const connection = new Redis({
        ...address,
        username: seedNode.username,
        password: seedNode.password,
        ...(seedNode.tls ? { tls: seedNode.tls } : {}),
        lazyConnect: true,
      });
      try {
        await connection.connect();
        return await connection.dbsize();
      } finally {
        connection.disconnect();
      }
    }),
  );
  return sizes.reduce((total, size) => total + size, 0);
}

function parseTarget(target: ClusterTarget): NodeTarget {
  if (typeof target !== 'string') return target;
  const url = new URL(target);
  if (url.protocol !== 'redis:' && url.protocol !== 'rediss:') {
    throw new Error(`expected a redis:// or rediss:// URL, got ${target}`);
  }
  const username = url.username === '' ? undefined : decodeURIComponent(url.username);
  const password = url.password === '' ? undefined : decodeURIComponent(url.password);
  return {
    host: url.hostname || SANDBOX_HOST,
    port: Number(url.port || 6379),
    username,
    password,
    ...(url.protocol === 'rediss:' ? { tls: {} } : {}),
  };
}

function clusterClient(seedNode: NodeTarget): Cluster {
  return new Cluster([{ host: seedNode.host, port: seedNode.port }], {
    redisOptions: {
      username: seedNode.username,
      password: seedNode.password,
      ...(seedNode.tls ? { tls: seedNode.tls } : {}),
    },
    // Slots move under our feet during migrations; follow them rather than give up.
    maxRedirections: 64,
    retryDelayOnMoved: 0,
  });
}

/**
 * Masters and a slot -> master index map, from CLUSTER NODES on the seed node. Masters the
 * seed flags as failed are left out: their slots belong to whoever replaced them.
 */
async function readSlotOwners(
  seedNode: NodeTarget,
  options: { includeEmptyMasters?: boolean } = {},
): Promise<{ addresses: Array<{ host: string; port: number }>; ownerBySlot: Int32Array }> {
  const connection = new Redis({ ...seedNode, lazyConnect: true, maxRetriesPerRequest: 1 });
  let text: string;
  try {
    await connection.connect();
    text = String(await connection.cluster('NODES'));
  } finally {
    connection.disconnect();
  }
  const ownerBySlot = new Int32Array(SLOT_COUNT).fill(-1);
  const addresses: Array<{ host: string; port: number }> = [];
  for (const node of parseClusterNodes(text).nodes) {
    // Only a confirmed `fail`: a master merely suspected (fail?) still serves its slots.
    if (node.role !== NodeRole.Master || node.flags.includes('fail')) continue;
    if (node.slots.length === 0 && !options.includeEmptyMasters) continue;
    const masterIndex = addresses.push({ host: node.host, port: node.port }) - 1;
    for (const range of node.slots) {
      for (let slot = range.start; slot <= range.end; slot++) ownerBySlot[slot] = masterIndex;
    }
  }
  return { addresses, ownerBySlot };
}

function partitionByOwner(
  manifest: DatasetManifest,
  ownerBySlot: Int32Array,
  masterCount: number,
): number[][] {
  const indexesByMaster: number[][] = Array.from({ length: masterCount }, () => []);
  const fixedSlot = manifest.hashTag === null ? undefined : calculateSlot(datasetKey(manifest, 0));
  for (let index = 0; index < manifest.count; index++) {
    const slot = fixedSlot ?? calculateSlot(datasetKey(manifest, index));
    const owner = ownerBySlot[slot] ?? -1;
    if (owner < 0) throw new Error(`slot ${slot} has no master: is the cluster up?`);
    indexesByMaster[owner]!.push(index);
  }
  return indexesByMaster;
}

async function writeToMaster(
  target: RespTarget,
  manifest: DatasetManifest,
  indexes: number[],
): Promise<void> {
  if (indexes.length === 0) return;
  const connection = await RespPipeline.open(target);
  try {
    const chunks: number[][] = [];
    for (let start = 0; start < indexes.length; start += WRITE_CHUNK_KEYS) {
      chunks.push(indexes.slice(start, start + WRITE_CHUNK_KEYS));
    }
    await runPool(chunks, WRITE_PIPELINES_IN_FLIGHT_PER_NODE, async (chunk) => {
      let payload = '';
      let commandCount = 0;
      for (const index of chunk) {
        for (const command of writeCommands(expectedKey(manifest, index))) {
          payload += encodeCommand(command);
          commandCount++;
        }
      }
      await connection.send(payload, commandCount);
    });
  } finally {
    connection.close();
  }
}

function writeCommands(expected: ExpectedKey): string[][] {
  const { key, expireAtMs } = expected;
  if (expected.type === 'string') {
    return expireAtMs === null
      ? [['SET', key, expected.value]]
      : [['SET', key, expected.value, 'PXAT', String(expireAtMs)]];
  }
  // Re-seeding must not append to collections left by an earlier run.
  const commands: string[][] = [['DEL', key]];
  switch (expected.type) {
    case 'hash':
      commands.push(['HSET', key, ...Object.entries(expected.value).flat()]);
      break;
    case 'list':
      commands.push(['RPUSH', key, ...expected.value]);
      break;
    case 'set':
      commands.push(['SADD', key, ...expected.value]);
      break;
    case 'zset':
      commands.push(['ZADD', key, ...expected.value.flatMap(([member, score]) => [score, member])]);
      break;
    case 'stream':
      for (const [id, fields] of expected.value) commands.push(['XADD', key, id, ...fields]);
      break;
    default: {
      const never: never = expected;
      throw new Error(`unhandled key type: ${JSON.stringify(never)}`);
    }
  }
  if (expireAtMs !== null) commands.push(['PEXPIREAT', key, String(expireAtMs)]);
  return commands;
}

/** Batches of key indexes that share one slot, as ioredis needs for a cluster pipeline. */
function readBatches(manifest: DatasetManifest, sampleEvery: number): number[][] {
  const bySlot = new Map<number, number[]>();
  const fixedSlot = manifest.hashTag === null ? undefined : calculateSlot(datasetKey(manifest, 0));
  for (let index = 0; index < manifest.count; index += sampleEvery) {
    const slot = fixedSlot ?? calculateSlot(datasetKey(manifest, index));
    let group = bySlot.get(slot);
    if (group === undefined) {
      group = [];
      bySlot.set(slot, group);
    }
    group.push(index);
  }
  const batches: number[][] = [];
  for (const group of bySlot.values()) {
    for (let start = 0; start < group.length; start += READ_CHUNK_KEYS) {
      batches.push(group.slice(start, start + READ_CHUNK_KEYS));
    }
  }
  return batches;
}

type Reply = [error: Error | null, result: unknown];

/** Returns the indexes that look wrong; they are re-checked one by one. */
async function checkBatch(cluster: Cluster, manifest: DatasetManifest, batch: number[]): Promise<number[]> {
  const expectations = batch.map((index) => expectedKey(manifest, index));
  const withType = manifest.types !== 'string';
  const pipeline = cluster.pipeline();
  for (const expected of expectations) {
    if (withType) pipeline.type(expected.key);
    queueRead(pipeline, expected);
    pipeline.pttl(expected.key);
  }
  const replies = ((await pipeline.exec()) ?? []) as Reply[];
  const stride = withType ? 3 : 2;
  const nowMs = Date.now();
  const suspects: number[] = [];
  expectations.forEach((expected, position) => {
    const replyAt = position * stride;
    const typeReply: Reply = withType ? replies[replyAt]! : [null, expected.type];
    const valueReply = replies[replyAt + stride - 2]!;
    const ttlReply = replies[replyAt + stride - 1]!;
    const finding = judge(expected, typeReply, valueReply, ttlReply, nowMs);
    if (finding.missing || finding.wrongValue || finding.wrongTtl) suspects.push(expected.index);
  });
  return suspects;
}

async function checkKey(cluster: Cluster, expected: ExpectedKey): Promise<Finding> {
  const settle = (promise: Promise<unknown>): Promise<Reply> =>
    promise.then(
      (result): Reply => [null, result],
      (error: unknown): Reply => [error instanceof Error ? error : new Error(String(error)), null],
    );
  const typeReply = await settle(cluster.type(expected.key));
  const valueReply = await settle(read(cluster, expected));
  const ttlReply = await settle(cluster.pttl(expected.key));
  // Only a wrong type says something about the data; CLUSTERDOWN or a timeout says nothing.
  const inconclusive = [typeReply[0], valueReply[0], ttlReply[0]].find(
    (error) => error !== null && !error.message.startsWith('WRONGTYPE'),
  );
  if (inconclusive) {
    throw new Error(`could not verify key ${expected.key}: ${inconclusive.message}`, { cause: inconclusive });
  }
  return judge(expected, typeReply, valueReply, ttlReply, Date.now());
}

function queueRead(pipeline: ReturnType<Cluster['pipeline']>, expected: ExpectedKey): void {
  switch (expected.type) {
    case 'string':
      pipeline.get(expected.key);
      break;
    case 'hash':
      pipeline.hgetall(expected.key);
      break;
    case 'list':
      pipeline.lrange(expected.key, 0, -1);
      break;
    case 'set':
      pipeline.smembers(expected.key);
      break;
    case 'zset':
      pipeline.zrange(expected.key, 0, -1, 'WITHSCORES');
      break;
    case 'stream':
      pipeline.xrange(expected.key, '-', '+');
      break;
    default: {
      const never: never = expected;
      throw new Error(`unhandled key type: ${JSON.stringify(never)}`);
    }
  }
}

function read(cluster: Cluster, expected: ExpectedKey): Promise<unknown> {
  switch (expected.type) {
    case 'string':
      return cluster.get(expected.key);
    case 'hash':
      return cluster.hgetall(expected.key);
    case 'list':
      return cluster.lrange(expected.key, 0, -1);
    case 'set':
      return cluster.smembers(expected.key);
    case 'zset':
      return cluster.zrange(expected.key, 0, -1, 'WITHSCORES');
    case 'stream':
      return cluster.xrange(expected.key, '-', '+');
    default: {
      const never: never = expected;
      throw new Error(`unhandled key type: ${JSON.stringify(never)}`);
    }
  }
}

interface Finding {
  missing: boolean;
  wrongValue: boolean;
  wrongTtl: boolean;
}

function judge(
  expected: ExpectedKey,
  typeReply: Reply,
  valueReply: Reply,
  ttlReply: Reply,
  nowMs: number,
): Finding {
  const [typeError, type] = typeReply;
  const [valueError, value] = valueReply;
  const [ttlError, ttl] = ttlReply;
  const missing =
    typeError === null &&
    (type === 'none' || (expected.type === 'string' && valueError === null && value === null));
  if (missing) return { missing: true, wrongValue: false, wrongTtl: false };
  const wrongValue =
    typeError !== null || valueError !== null || type !== expected.type || !sameValue(expected, value);
  let wrongTtl = ttlError !== null || typeof ttl !== 'number';
  if (!wrongTtl) {
    const ttlMs = ttl as number;
    if (expected.expireAtMs === null) {
      wrongTtl = ttlMs !== -1;
    } else {
      const remainingMs = expected.expireAtMs - nowMs;
      wrongTtl = ttlMs < remainingMs - TTL_TOLERANCE_BELOW_MS || ttlMs > remainingMs + TTL_TOLERANCE_ABOVE_MS;
    }
  }
  return { missing: false, wrongValue, wrongTtl };
}

function sameValue(expected: ExpectedKey, actual: unknown): boolean {
  switch (expected.type) {
    case 'string':
      return actual === expected.value;
    case 'hash': {
      if (actual === null || typeof actual !== 'object') return false;
      const fields = actual as Record<string, string>;
      const names = Object.keys(expected.value);
      return (
        Object.keys(fields).length === names.length &&
        names.every((name) => fields[name] === expected.value[name])
      );
    }
    case 'list':
      return sameStrings(actual, expected.value);
    case 'set':
      return Array.isArray(actual) && sameStrings([...(actual as string[])].sort(), expected.value);
    case 'zset':
      return sameStrings(actual, expected.value.flat());
    case 'stream': {
      if (!Array.isArray(actual) || actual.length !== expected.value.length) return false;
      return expected.value.every(([id, fields], position) => {
        const entry = actual[position] as [string, string[]] | undefined;
        return entry?.[0] === id && sameStrings(entry[1], fields);
      });
    }
    default: {
      const never: never = expected;
      throw new Error(`unhandled key type: ${JSON.stringify(never)}`);
    }
  }
}

function sameStrings(actual: unknown, expected: string[]): boolean {
  return (
    Array.isArray(actual) &&
    actual.length === expected.length &&
    expected.every((item, position) => actual[position] === item)
  );
}

function hasTtl(manifest: DatasetManifest, index: number): boolean {
  return (
    manifest.ttlFraction > 0 && mix(manifest.seed, index, SALT_TTL_CHOICE) / 2 ** 32 < manifest.ttlFraction
  );
}

/** A 32-bit hash of (seed, index, salt): murmur3's finalizer, cheap and well spread. */
function mix(seed: number, index: number, salt: number): number {
  let hash = (seed ^ Math.imul(index + 1, 0x9e3779b1) ^ Math.imul(salt, 0x85ebca77)) >>> 0;
  hash ^= hash >>> 16;
  hash = Math.imul(hash, 0x85ebca6b);
  hash ^= hash >>> 13;
  hash = Math.imul(hash, 0xc2b2ae35);
  hash ^= hash >>> 16;
  return hash >>> 0;
}

let cachedPool: { seed: number; valueBytes: number; pool: string } | undefined;

/** A random-looking string that values are sliced from, so building one costs no per-byte work. */
function randomPool(seed: number, valueBytes: number): string {
  if (cachedPool?.seed === seed && cachedPool.valueBytes === valueBytes) return cachedPool.pool;
  const characters: string[] = [];
  let state = seed || 1;
  for (let position = 0; position < POOL_OFFSETS + Math.max(valueBytes, 64); position++) {
    // xorshift32
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    characters.push(ALPHABET[(state >>> 0) % ALPHABET.length]!);
  }
  cachedPool = { seed, valueBytes, pool: characters.join('') };
  return cachedPool.pool;
}

async function runPool<T>(items: T[], concurrency: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const item = items[next++]!;
      await work(item);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, worker));
}
