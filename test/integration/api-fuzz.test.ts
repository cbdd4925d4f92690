/**
 * Hostile input, generated. fast-check sends thousands of requests to every route of the app (read
 * from app.printRoutes, so a new route is fuzzed without touching this file): valid bodies for the
 * planning routes and mutations of them (fields dropped, added, renamed; wrong types; boundary and
 * huge numbers; huge, unicode and prototype-polluting strings and keys; deep nesting), random JSON,
 * random bytes, cut-off JSON, odd methods, paths, query strings and headers. The app runs on a real
 * control Redis and a real 3-master cluster without workers, so well-formed requests are planned
 * for real and accepted ones leave their jobs waiting.
 *
 * Every answer must be below 500, and every refusal an ErrorResponse whose status matches. After
 * the run, the control Redis must hold exactly what the 2xx answers account for (records, jobs,
 * slot claims, Idempotency-Keys) and the cluster must be exactly as it was: no slot opened or moved.
 *
 * SLOTFLEET_FUZZ_SEED=<n> replays a run (the seed is printed at the start and in a failure, with
 * fast-check's shrunk counterexample); SLOTFLEET_FUZZ_RUNS=<n> sends more requests than the default.
 */

import { Worker } from 'node:worker_threads';
import { Queue } from 'bullmq';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QueueName } from '../../src/shared/queue/names.js';
import { ownershipFingerprint, type Stack, startStack } from './support/stack.js';

const TOKEN = 'fuzz-token-0123456789abcdef';
/** Requests per run: bounded so the file stays under a minute on two shared cores. */
const RUNS = process.env.SLOTFLEET_FUZZ_RUNS ? Number(process.env.SLOTFLEET_FUZZ_RUNS) : 2000;
const SEED = process.env.SLOTFLEET_FUZZ_SEED
  ? Number(process.env.SLOTFLEET_FUZZ_SEED)
  : Math.floor(Math.random() * 2 ** 31);
/** Well-formed requests to the routes that count the keys of every slot (see buildRequest). */
const EXPENSIVE_REQUESTS = 5;
const CREATE_ROUTE = /^\/v1\/clusters\/:cluster\/(migrations|rebalance|reshard|drain|fix)$/;
const ALL_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const;

interface Route {
  readonly method: string;
  readonly path: string;
}

/** Every route of the app with its methods, read from printRoutes' tree (one node per line). */
function routesOf(tree: string): Route[] {
  const segments: string[] = [];
  const routes: Route[] = [];
  for (const line of tree.split('\n')) {
    const branch = line.indexOf('── ');
    if (branch < 0) continue;
    const start = branch + 3;
    const depth = start / 4 - 1;
    const match = /^(.*?)(?: \(([A-Z, ]+)\))?$/.exec(line.slice(start))!;
    segments.length = depth;
    segments[depth] = match[1]!;
    for (const method of match[2]?.split(', ') ?? []) {
      if (method !== 'HEAD') routes.push({ method, path: segments.join('') });
    }
  }
  return routes;
}

// ---------------------------------------------------------------------------------------------
// Arbitraries. Choices that depend on the live cluster (which node, which accepted migration) are
// drawn as numbers and resolved when the request is built, so a seed replays the same requests.

const junkText = fc.oneof(
  fc.string({ maxLength: 40 }),
  fc.string({ unit: 'grapheme', maxLength: 20 }),
  fc.string({ unit: 'binary', maxLength: 20 }),
  fc.constantFrom('', ' ', '..', '.', '%', 'all', '__proto__', 'constructor', 'prototype', '0-16383', '-1'),
  fc.constantFrom(
    '1e400',
    'null',
    '{}',
    '[]',
    'default ',
    'DEFAULT',
    '\u0000',
    'a'.repeat(300),
    '💥'.repeat(50),
  ),
);
const asciiText = fc.string({ unit: 'grapheme-ascii', maxLength: 60 });

const boundaryNumber = fc.constantFrom(
  -1,
  0,
  1,
  2,
  99,
  100,
  100.0001,
  16383,
  16384,
  16385,
  65535,
  1_000_000,
  1_000_001,
  2 ** 31,
  2 ** 53,
  -(2 ** 53),
  1e308,
  -1e308,
  0.5,
  1e-9,
  -0,
);
/** Texts spliced into the JSON as they are: numbers JSON.stringify cannot write, deep nesting, junk. */
const rawValueText = fc.oneof(
  fc.constantFrom('1e400', '-1e400', '123456789012345678901234567890', '-0', '0.0000000000000000001', '1E2'),
  fc.constantFrom(
    '"\\ud800"',
    '"\\u0000"',
    '"\\uffff"',
    '01',
    'NaN',
    'Infinity',
    '.5',
    '+1',
    '0x10',
    'undefined',
  ),
  fc
    .constantFrom(16, 1000, 10_000, 30_000)
    .chain((depth) =>
      fc.constantFrom('['.repeat(depth) + ']'.repeat(depth), `${'{"a":'.repeat(depth)}0${'}'.repeat(depth)}`),
    ),
  fc.constantFrom('{"__proto__":{"polluted":true}}', '{"constructor":{"prototype":{"polluted":true}}}'),
);
const hostileKey = fc.oneof(
  fc.constantFrom('__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty', 'valueOf'),
  fc.constantFrom('force', 'dryrun', 'DryRun', 'Moves', 'slots', 'target', 'weights', 'from', '', ' '),
  junkText,
);
const hostileValue = fc.oneof(
  fc.jsonValue({ maxDepth: 3 }),
  boundaryNumber,
  junkText,
  fc.integer({ min: 1000, max: 70_000 }).map((length) => 'x'.repeat(length)),
  fc.integer({ min: 1, max: 3000 }).map((length) => '1,'.repeat(length)),
  fc.constantFrom(null, true, false, [], {}, '', ' ', [[]], [{}], { '': '' }),
);

const nodeReference = fc.record({
  node: fc.nat(),
  form: fc.constantFrom('address', 'id', 'prefix'),
  prefixLength: fc.integer({ min: 8, max: 40 }),
});
type NodeChoice = typeof nodeReference extends fc.Arbitrary<infer T> ? T : never;

const slotSpec = fc.oneof(
  fc
    .record({ start: fc.integer({ min: 0, max: 16383 }), length: fc.integer({ min: 1, max: 400 }) })
    .map(({ start, length }) => `${start}-${start + length - 1}`),
  fc
    .uniqueArray(fc.integer({ min: 0, max: 16383 }), { minLength: 1, maxLength: 20 })
    .map((slots) => slots.join(',')),
  fc.integer({ min: 0, max: 16383 }).map(String),
  fc.constantFrom('0-16383', '16383', '0', '5-1', '1,1', ' 7 ', '100 - 200'),
);

const bodyChoice = fc.record({
  moves: fc.array(fc.record({ slots: slotSpec, target: nodeReference }), { minLength: 1, maxLength: 3 }),
  weights: fc.option(
    fc.array(
      fc.tuple(
        nodeReference,
        fc.oneof(fc.integer({ min: 0, max: 5 }), fc.double({ min: 0, max: 10, noNaN: true })),
      ),
      {
        maxLength: 4,
      },
    ),
  ),
  threshold: fc.option(fc.double({ min: 0, max: 100, noNaN: true })),
  useEmptyMasters: fc.option(fc.boolean()),
  // by: "keys" counts the keys of all 16384 slots: rare, so the run stays short.
  by: fc.option(fc.constantFrom('slots', 'slots', 'slots', 'keys')),
  from: fc.oneof(fc.constant('all' as const), fc.array(nodeReference, { minLength: 1, maxLength: 3 })),
  to: nodeReference,
  count: fc.integer({ min: 1, max: 16384 }),
  ranges: slotSpec,
  useRanges: fc.boolean(),
  node: nodeReference,
  dryRun: fc.constantFrom(true, true, false, undefined),
});
type BodyChoice = typeof bodyChoice extends fc.Arbitrary<infer T> ? T : never;

const mutation = fc.oneof(
  fc.record({ op: fc.constant('drop' as const), at: fc.nat() }),
  fc.record({ op: fc.constant('add' as const), at: fc.nat(), key: hostileKey, value: hostileValue }),
  fc.record({
    op: fc.constant('rename' as const),
    at: fc.nat(),
    suffix: fc.constantFrom('x', '_', 'S', ' ', '\u200b'),
  }),
  fc.record({ op: fc.constant('replace' as const), at: fc.nat(), value: hostileValue }),
  fc.record({ op: fc.constant('raw' as const), at: fc.nat(), text: rawValueText }),
  fc.record({ op: fc.constant('wrap' as const), at: fc.nat(), how: fc.constantFrom('array', 'object') }),
);
type Mutation = typeof mutation extends fc.Arbitrary<infer T> ? T : never;

const bodySpec = fc.oneof(
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('valid' as const),
      choice: bodyChoice,
      mutations: fc.constant([] as Mutation[]),
    }),
  },
  {
    weight: 10,
    arbitrary: fc.record({
      kind: fc.constant('valid' as const),
      choice: bodyChoice,
      mutations: fc.array(mutation, { minLength: 1, maxLength: 3 }),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({ kind: fc.constant('json' as const), value: fc.jsonValue({ maxDepth: 4 }) }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ kind: fc.constant('bytes' as const), bytes: fc.uint8Array({ maxLength: 512 }) }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('text' as const),
      text: fc.string({ unit: 'binary', maxLength: 200 }),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('cut' as const),
      choice: bodyChoice,
      at: fc.double({ min: 0, max: 1, noNaN: true }),
    }),
  },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('none' as const) }) },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('huge' as const),
      bytes: fc.constantFrom(65_000, 65_536, 65_537, 300_000),
    }),
  },
);
type BodySpec = typeof bodySpec extends fc.Arbitrary<infer T> ? T : never;

const paramChoice = fc.record({
  mode: fc.constantFrom('known', 'known', 'known', 'known', 'junk', 'malformed'),
  pick: fc.nat(),
  junk: junkText,
});
type ParamChoice = typeof paramChoice extends fc.Arbitrary<infer T> ? T : never;

/** Mostly `null`: present about once in `every` draws. */
function sometimes<T>(arbitrary: fc.Arbitrary<T>, every: number): fc.Arbitrary<T | null> {
  return fc.oneof({ weight: every - 1, arbitrary: fc.constant(null) }, { weight: 1, arbitrary });
}

/**
 * What a request gets wrong. Mostly one thing, so that everything else is right and the request
 * reaches the code behind the check it probes; sometimes nothing (it must then reach planning), and
 * sometimes several at once.
 */
const HOSTILITIES = [
  'body',
  'path',
  'query',
  'auth',
  'contentType',
  'idempotencyKey',
  'contentLength',
  'method',
] as const;
type Hostility = (typeof HOSTILITIES)[number];
const hostilities = fc.oneof(
  { weight: 6, arbitrary: fc.constant([] as Hostility[]) },
  { weight: 6, arbitrary: fc.constant(['body'] as Hostility[]) },
  { weight: 6, arbitrary: fc.constantFrom(...HOSTILITIES).map((one) => [one]) },
  { weight: 1, arbitrary: fc.subarray([...HOSTILITIES], { minLength: 2 }) },
);

const requestSpec = fc.record({
  hostile: hostilities,
  focusOnPlanning: fc.boolean(),
  route: fc.nat(),
  method: fc.constantFrom(...ALL_METHODS),
  params: fc.array(paramChoice, { minLength: 4, maxLength: 4 }),
  knownParams: fc.array(fc.nat(), { minLength: 4, maxLength: 4 }),
  wildcard: fc.array(junkText, { maxLength: 3 }),
  query: fc.array(
    fc.tuple(
      fc.oneof(
        fc.constantFrom(
          'limit',
          'cursor',
          'cluster',
          'activeQueue',
          'status',
          'page',
          'jobsPerPage',
          '__proto__',
        ),
        junkText,
      ),
      fc.oneof(fc.nat().map(String), boundaryNumber.map(String), junkText, fc.constant('9'.repeat(400))),
    ),
    { minLength: 1, maxLength: 4 },
  ),
  auth: fc.constantFrom('none', 'wrong', 'basic', 'bare', 'longer', 'empty'),
  contentType: fc.oneof(
    fc.constantFrom(
      'application/json; charset=utf-8',
      'Application/JSON',
      'application/json; charset=utf-16',
      'text/plain',
      'application/x-www-form-urlencoded',
      'multipart/form-data; boundary=x',
      'application/jsonx',
      'application/json, text/plain',
      '',
      undefined,
    ),
    asciiText,
  ),
  // A key from a small pool, so that the same key comes back with the same body (reused) and with
  // another (422); or a hostile one.
  cleanIdempotencyKey: sometimes(fc.constantFrom('key-1', 'key-2', 'key-3', 'key-4'), 4),
  idempotencyKey: fc.oneof(
    fc.string({ unit: 'grapheme-ascii', minLength: 1, maxLength: 40 }),
    fc.constantFrom('', ' ', 'k'.repeat(200), 'k'.repeat(201), 'k'.repeat(4000), 'a b', 'x\u00e9', '\t'),
  ),
  contentLength: fc.oneof(fc.integer({ min: 0, max: 100_000 }), fc.constantFrom(-1, 0, 2 ** 53, 1.5)),
  validBody: bodyChoice,
  body: bodySpec,
});
type RequestSpec = typeof requestSpec extends fc.Arbitrary<infer T> ? T : never;

// ---------------------------------------------------------------------------------------------
// Building requests from the drawn choices.

interface ClusterNodeInfo {
  readonly id: string;
  readonly address: string;
  readonly master: boolean;
}

function pick<T>(items: readonly T[], index: number): T {
  return items[index % items.length]!;
}

function referenceTo(nodes: readonly ClusterNodeInfo[], choice: NodeChoice): string {
  const node = pick(nodes, choice.node);
  if (choice.form === 'address') return node.address;
  if (choice.form === 'id') return node.id;
  return node.id.slice(0, choice.prefixLength);
}

/** A body the route accepts as far as its schema goes (whether the plan is possible is the cluster's business). */
function validBody(path: string, nodes: readonly ClusterNodeInfo[], choice: BodyChoice): unknown {
  const dryRun = choice.dryRun === undefined ? {} : { dryRun: choice.dryRun };
  const weights = choice.weights
    ? {
        weights: Object.fromEntries(
          choice.weights.map(([node, weight]) => [referenceTo(nodes, node), weight]),
        ),
      }
    : {};
  const kind = CREATE_ROUTE.exec(path)?.[1];
  switch (kind) {
    case 'migrations':
      return {
        moves: choice.moves.map((move) => ({ slots: move.slots, target: referenceTo(nodes, move.target) })),
      };
    case 'rebalance':
      return {
        ...weights,
        ...(choice.threshold === null ? {} : { threshold: choice.threshold }),
        ...(choice.useEmptyMasters === null ? {} : { useEmptyMasters: choice.useEmptyMasters }),
        ...(choice.by === null ? {} : { by: choice.by }),
        ...dryRun,
      };
    case 'reshard':
      return {
        from: choice.from === 'all' ? ['all'] : choice.from.map((node) => referenceTo(nodes, node)),
        to: referenceTo(nodes, choice.to),
        ...(choice.useRanges ? { ranges: choice.ranges } : { slots: choice.count }),
        ...dryRun,
      };
    case 'drain':
      return { node: referenceTo(nodes, choice.node), ...weights, ...dryRun };
    case 'fix':
      return dryRun;
    default:
      return {};
  }
}

interface Slot {
  readonly parent: Record<string, unknown> | unknown[];
  readonly key: string | number;
}

/** Every place in the value a mutation can touch, the root included (as holder.root). */
function slotsOf(holder: { root: unknown }): Slot[] {
  const found: Slot[] = [{ parent: holder as Record<string, unknown>, key: 'root' }];
  const visit = (value: unknown, depth: number) => {
    if (depth > 6 || value === null || typeof value !== 'object') return;
    for (const key of Object.keys(value)) {
      const parent = value as Record<string, unknown>;
      // An array's own non-index property (an earlier "add" may name one) stays a name.
      found.push({ parent, key: Array.isArray(value) && /^\d+$/.test(key) ? Number(key) : key });
      visit(parent[key], depth + 1);
    }
  };
  visit(holder.root, 0);
  return found;
}

/** Sets an own property, even "__proto__" (plain assignment would change the prototype instead). */
function define(target: object, key: string | number, value: unknown): void {
  Object.defineProperty(target, key, { value, enumerable: true, writable: true, configurable: true });
}

/**
 * Removes an array's element without splice: an earlier mutation may have given the array an own
 * "constructor" property, and splice builds its result through it (Symbol.species).
 */
function removeAt(array: unknown[], index: number): void {
  if (index >= array.length) return;
  for (let at = index; at < array.length - 1; at++) array[at] = array[at + 1];
  array.length -= 1;
}

function mutate(body: unknown, mutations: readonly Mutation[]): string {
  const holder = { root: structuredClone(body) };
  const rawTexts: string[] = [];
  for (const change of mutations) {
    const slot = pick(slotsOf(holder), change.at);
    const parent = slot.parent as Record<string | number, unknown>;
    const current = parent[slot.key];
    switch (change.op) {
      case 'drop':
        if (Array.isArray(parent) && Number.isInteger(slot.key)) removeAt(parent, Number(slot.key));
        else if (slot.parent !== (holder as object)) delete parent[slot.key];
        else holder.root = undefined;
        break;
      case 'add': {
        const container =
          current !== null && typeof current === 'object' && !Array.isArray(current) ? current : undefined;
        const value = structuredClone(change.value);
        if (container) define(container, change.key, value);
        else if (Array.isArray(current)) current.push(value);
        else define(parent, change.key, value);
        break;
      }
      case 'rename':
        if (!Array.isArray(parent) && slot.parent !== (holder as object)) {
          delete parent[slot.key];
          define(parent, `${slot.key}${change.suffix}`, current);
        }
        break;
      case 'replace':
        define(parent, slot.key, structuredClone(change.value));
        break;
      case 'raw':
        define(parent, slot.key, `\u0000raw${rawTexts.length}\u0000`);
        rawTexts.push(change.text);
        break;
      case 'wrap':
        define(parent, slot.key, change.how === 'array' ? [current] : { value: current });
        break;
    }
  }
  let text = JSON.stringify(holder.root) ?? '';
  rawTexts.forEach((raw, index) => {
    text = text.replace(JSON.stringify(`\u0000raw${index}\u0000`), raw);
  });
  return text;
}

function payloadOf(
  spec: BodySpec,
  path: string,
  nodes: readonly ClusterNodeInfo[],
): string | Buffer | undefined {
  switch (spec.kind) {
    case 'valid':
      return mutate(validBody(path, nodes, spec.choice), spec.mutations);
    case 'json':
      return JSON.stringify(spec.value);
    case 'bytes':
      return Buffer.from(spec.bytes);
    case 'text':
      return spec.text;
    case 'cut': {
      const text = JSON.stringify(validBody(path, nodes, spec.choice));
      return text.slice(0, Math.floor(text.length * spec.at));
    }
    case 'none':
      return undefined;
    case 'huge':
      return `{"moves":[{"slots":"${'1'.repeat(Math.max(0, spec.bytes - 40))}","target":"x"}]}`;
  }
}

// ---------------------------------------------------------------------------------------------

/** A request that has not answered after this long has hung (see startWatchdog). */
const WATCHDOG_MS = 60_000;

/**
 * A request can hang two ways, and they need different catches. One that waits (on a reply, a promise
 * that never settles) leaves the event loop running: the request's own deadline (answerWithin) fails
 * the run, naming it and what the process still waits on. A handler stuck in a synchronous loop
 * blocks the event loop, so neither that deadline nor vitest's timeout can ever end the run. A worker
 * thread watches for that: the main thread stamps a heartbeat every HEARTBEAT_MS, and when the request
 * in flight is older than WATCHDOG_MS and the heartbeat too, it prints the request and how long the
 * loop has not run (with fs.writeSync: the main thread relays nothing now), kills the redis-servers of
 * the stack and then this process.
 */
const HEARTBEAT_MS = 250;

async function startWatchdog(pids: readonly number[]) {
  const shared = new SharedArrayBuffer(8 + 8 + 4 + 16_384);
  const startedAt = new Float64Array(shared, 0, 1);
  const heartbeat = new Float64Array(shared, 8, 1);
  const length = new Int32Array(shared, 16, 1);
  const text = new Uint8Array(shared, 20);
  heartbeat[0] = Date.now();
  const beat = setInterval(() => {
    heartbeat[0] = Date.now();
  }, HEARTBEAT_MS);
  beat.unref();
  const worker = new Worker(
    `const { parentPort, workerData } = require('node:worker_threads');
    const { writeSync } = require('node:fs');
    const startedAt = new Float64Array(workerData.shared, 0, 1);
    const heartbeat = new Float64Array(workerData.shared, 8, 1);
    const length = new Int32Array(workerData.shared, 16, 1);
    const text = new Uint8Array(workerData.shared, 20);
    setInterval(() => {
      const now = Date.now();
      if (startedAt[0] === 0 || now - startedAt[0] < workerData.limitMs) return;
      // The loop still runs: the request waits, and its own deadline reports it.
      if (now - heartbeat[0] < workerData.limitMs) return;
      const request = Buffer.from(text.slice(0, length[0])).toString();
      writeSync(2, '\\napi-fuzz watchdog: the event loop has not run for ' + (now - heartbeat[0]) +
        ' ms, blocked during\\n' + request + '\\n');
      for (const pid of workerData.pids) { try { process.kill(pid, 'SIGKILL'); } catch {} }
      process.kill(process.pid, 'SIGKILL');
    }, 1000);
    parentPort.postMessage('ready');`,
    { eval: true, workerData: { shared, pids, limitMs: WATCHDOG_MS } },
  );
  // A watchdog that failed to start would let a hang go unseen: wait until it says it is ready.
  await new Promise((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
  worker.unref();
  return {
    begin(description: string) {
      const bytes = Buffer.from(description.slice(0, 4000));
      text.set(bytes.subarray(0, text.length));
      length[0] = Math.min(bytes.length, text.length);
      startedAt[0] = Date.now();
    },
    end() {
      startedAt[0] = 0;
    },
    stop: () => {
      clearInterval(beat);
      return worker.terminate();
    },
  };
}

class HungRequest extends Error {}

/**
 * The answer, or after WATCHDOG_MS an error naming the request and what the process still waits on
 * (its sockets, timers...): a request that waits that long has hung, though the event loop runs.
 */
async function answerWithin<T>(answer: Promise<T>, description: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      const resources = process.getActiveResourcesInfo();
      const counts = new Map<string, number>();
      for (const resource of resources) counts.set(resource, (counts.get(resource) ?? 0) + 1);
      reject(
        new HungRequest(
          `no answer in ${WATCHDOG_MS} ms while the event loop ran (the request waits on something that ` +
            `never answers): ${description}; the process waits on ${JSON.stringify(Object.fromEntries(counts))}`,
        ),
      );
    }, WATCHDOG_MS);
  });
  try {
    return await Promise.race([answer, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

describe('API under generated hostile input', () => {
  let stack: Stack;
  let routes: Route[];
  let nodes: ClusterNodeInfo[];
  let ownersBefore: string;
  const queues: Queue[] = [];
  const accepted = new Map<string, number>();
  const hits = new Map<string, number>();
  const statuses = new Map<number, number>();
  let sent = 0;
  let expensiveBudget = EXPENSIVE_REQUESTS;
  let slowest = { ms: 0, request: '' };
  let watchdog: Awaited<ReturnType<typeof startWatchdog>> | undefined;
  /** The first request that got no answer in time, as its deadline described it. */
  let hung: string | undefined;

  beforeAll(async () => {
    stack = await startStack({
      masters: 3,
      replicasPerMaster: 1,
      workers: 0,
      env: { SLOTFLEET_API_TOKEN: TOKEN, SLOTFLEET_API_RATE_LIMIT: '1000000', SLOTFLEET_LOG_LEVEL: 'fatal' },
    });
    await stack.api.app.ready();
    routes = routesOf(stack.api.app.printRoutes({ commonPrefix: false }));
    nodes = (await stack.cluster.topology()).map((node) => ({
      id: node.id,
      address: `${node.host}:${node.port}`,
      master: node.role === 'master',
    }));
    ownersBefore = await ownershipFingerprint(stack.cluster);
    watchdog = await startWatchdog([...stack.cluster.startedPids(), stack.control.pid]);
    for (const name of [QueueName.MigrateSlot, QueueName.FinalizeSlot]) {
      queues.push(
        new Queue(name, {
          connection: { host: stack.control.host, port: stack.control.port },
          prefix: stack.config.queuePrefix,
        }),
      );
    }
  });

  afterAll(async () => {
    await watchdog?.stop();
    await Promise.allSettled(queues.map((queue) => queue.close()));
    await stack?.stop();
  });

  function paramValue(name: string, choice: ParamChoice): string {
    if (choice.mode === 'junk') return encodeURIComponent(choice.junk);
    // A percent sign not followed by two hex digits: a URL the router cannot decode.
    if (choice.mode === 'malformed') return `%${encodeURIComponent(choice.junk).replace(/%/g, '')}%zz`;
    const ids = [...accepted.keys()];
    const migrationId = ids.length > 0 ? pick(ids, choice.pick) : 'mig-nothing-00000000';
    switch (name) {
      case 'cluster':
        return 'default';
      case 'id':
        return migrationId;
      case 'queueName':
        return pick([QueueName.MigrateSlot, QueueName.FinalizeSlot], choice.pick);
      case 'jobId':
        return `${migrationId}-slot-${choice.pick % 16384}`;
      case 'queueStatus':
        return pick(
          ['failed', 'completed', 'delayed', 'active', 'waiting', 'paused', 'prioritized'],
          choice.pick,
        );
      default:
        return encodeURIComponent(choice.junk);
    }
  }

  function buildRequest(spec: RequestSpec) {
    const hostile = new Set(spec.hostile);
    const planning = routes.filter((route) => route.method === 'POST' && CREATE_ROUTE.test(route.path));
    const route = pick(spec.focusOnPlanning ? planning : routes, spec.route);
    // fix and rebalance by keys read COUNTKEYSINSLOT of all 16384 slots on every master (more than a
    // second here): past a small budget they carry an unknown field, refused before that work.
    const expensive =
      route.path.endsWith('/fix') || (route.path.endsWith('/rebalance') && spec.validBody.by === 'keys');
    if (expensive) expensiveBudget -= 1;
    const overBudget = expensive && expensiveBudget < 0;
    let paramIndex = 0;
    const path = route.path
      .replace(/:([A-Za-z]+)/g, (_match, name: string) => {
        const index = paramIndex++ % 4;
        return hostile.has('path')
          ? paramValue(name, spec.params[index]!)
          : paramValue(name, { mode: 'known', pick: spec.knownParams[index]!, junk: '' });
      })
      .replace(
        /\*$/,
        hostile.has('path') ? spec.wildcard.map((part) => encodeURIComponent(part)).join('/') : '',
      );
    const query = hostile.has('query')
      ? `?${spec.query.map(([key, value]) => `${encodeURIComponent(key)}=${encodeURIComponent(value)}`).join('&')}`
      : '';
    const headers: Record<string, string> = {};
    const authorization = hostile.has('auth')
      ? {
          none: undefined,
          wrong: 'Bearer wrong-token-0123456789abcdef',
          basic: `Basic ${Buffer.from(`user:${TOKEN}`).toString('base64')}`,
          bare: TOKEN,
          longer: `Bearer ${TOKEN}x`,
          empty: 'Bearer ',
        }[spec.auth]
      : `Bearer ${TOKEN}`;
    if (authorization !== undefined) headers.authorization = authorization;
    const payload = overBudget
      ? JSON.stringify({ ...(validBody(route.path, nodes, spec.validBody) as object), overBudget: true })
      : hostile.has('body')
        ? payloadOf(spec.body, route.path, nodes)
        : ['POST', 'PUT', 'PATCH'].includes(route.method)
          ? JSON.stringify(validBody(route.path, nodes, spec.validBody))
          : undefined;
    const contentType = hostile.has('contentType') ? spec.contentType : 'application/json';
    if (payload !== undefined && contentType !== undefined) headers['content-type'] = contentType;
    const idempotencyKey = hostile.has('idempotencyKey') ? spec.idempotencyKey : spec.cleanIdempotencyKey;
    if (idempotencyKey !== null) headers['idempotency-key'] = idempotencyKey;
    if (hostile.has('contentLength')) headers['content-length'] = String(spec.contentLength);
    return {
      route,
      method: hostile.has('method') ? spec.method : route.method,
      url: path + query,
      headers,
      payload,
    };
  }

  it(`answers every request below 500, in the ErrorResponse shape when it refuses (seed ${SEED})`, async () => {
    console.log(`api-fuzz: seed ${SEED} (replay with SLOTFLEET_FUZZ_SEED=${SEED}), ${RUNS} runs`);
    expect(routes.length).toBeGreaterThan(40);
    expect(routes).toEqual(
      expect.arrayContaining([
        { method: 'POST', path: '/v1/clusters/:cluster/migrations' },
        { method: 'POST', path: '/v1/migrations/:id/cancel' },
        { method: 'GET', path: '/status.json' },
        { method: 'PUT', path: '/queues/api/queues/:queueName/empty' },
      ]),
    );
    const started = Date.now();
    await fc.assert(
      fc.asyncProperty(requestSpec, async (spec) => {
        const request = buildRequest(spec);
        const sentAt = Date.now();
        const description =
          `seed ${SEED}, request ${sent + 1}: ${request.method} ${request.url} ` +
          `${JSON.stringify(request.headers)} body ${String(request.payload ?? '(none)')}`;
        // After a hang every request fails at once: shrinking must not wait out the deadline again.
        if (hung !== undefined) throw new Error(`an earlier request hung: ${hung}`);
        watchdog!.begin(description);
        let response: Awaited<ReturnType<typeof stack.api.app.inject>>;
        try {
          response = await answerWithin(
            stack.api.app.inject({
              method: request.method as 'GET',
              url: request.url,
              headers: request.headers,
              ...(request.payload !== undefined ? { payload: request.payload } : {}),
            }),
            description,
          );
        } catch (error) {
          if (error instanceof HungRequest) hung = error.message;
          throw error;
        } finally {
          watchdog!.end();
        }
        sent += 1;
        const tookMs = Date.now() - sentAt;
        if (tookMs > slowest.ms)
          slowest = { ms: tookMs, request: `${request.method} ${request.url.slice(0, 120)}` };
        const routeKey = `${request.route.method} ${request.route.path}`;
        if (request.method === request.route.method) hits.set(routeKey, (hits.get(routeKey) ?? 0) + 1);
        statuses.set(response.statusCode, (statuses.get(response.statusCode) ?? 0) + 1);
        const shown =
          `${request.method} ${request.url.slice(0, 300)} ${JSON.stringify(request.headers).slice(0, 300)} ` +
          `body ${String(request.payload ?? '(none)').slice(0, 300)} -> ${response.statusCode} ${response.body.slice(0, 500)}`;
        if (response.statusCode >= 500) throw new Error(`5xx for client input: ${shown}`);
        if (response.statusCode >= 400 && request.method !== 'HEAD') {
          let error: { statusCode?: unknown; code?: unknown; message?: unknown; error?: unknown };
          try {
            error = response.json();
          } catch {
            throw new Error(`refusal is not JSON: ${shown}`);
          }
          if (
            error.statusCode !== response.statusCode ||
            typeof error.code !== 'string' ||
            typeof error.error !== 'string' ||
            typeof error.message !== 'string' ||
            error.message.length === 0
          )
            throw new Error(`refusal is not an ErrorResponse: ${shown}`);
          // A refusal names what the client got wrong, not what went wrong inside.
          if (
            /Maximum call stack|TypeError|ReferenceError|Cannot read propert|is not a function/.test(
              error.message,
            )
          )
            throw new Error(`refusal leaks an internal failure: ${shown}`);
        }
        if (
          response.statusCode === 202 &&
          request.method === 'POST' &&
          CREATE_ROUTE.test(request.route.path)
        ) {
          const created = response.json() as { id: string; slots: number; reused?: boolean };
          if (!created.reused) {
            if (accepted.has(created.id)) throw new Error(`migration ${created.id} created twice: ${shown}`);
            accepted.set(created.id, created.slots);
          } else if (!accepted.has(created.id)) {
            throw new Error(`reused a migration no accepted request created: ${shown}`);
          }
        }
      }),
      { seed: SEED, numRuns: RUNS },
    );
    console.log(
      `api-fuzz: ${sent} requests in ${Date.now() - started} ms; statuses ${JSON.stringify(Object.fromEntries(statuses))}; ` +
        `${accepted.size} migrations accepted; slowest ${slowest.ms} ms (${slowest.request})`,
    );

    // Every route was reached with its own method, and well-formed requests got as far as planning.
    expect(routes.filter((route) => !hits.has(`${route.method} ${route.path}`))).toEqual([]);
    expect(statuses.get(202) ?? 0).toBeGreaterThan(0);
    expect(statuses.get(200) ?? 0).toBeGreaterThan(0);
    expect((statuses.get(409) ?? 0) + (statuses.get(422) ?? 0)).toBeGreaterThan(0);
  }, 180_000);

  it('leaves only what accepted requests created: records, jobs, slot claims, Idempotency-Keys', async () => {
    expect(sent).toBeGreaterThanOrEqual(RUNS);
    const control = stack.control.client();
    const prefix = stack.config.queuePrefix;
    try {
      const records = await control.zrange(`${prefix}:migrations`, 0, -1);
      expect(new Set(records)).toEqual(new Set(accepted.keys()));

      const [migrate, finalize] = queues as [Queue, Queue];
      const states = [
        'wait',
        'active',
        'delayed',
        'prioritized',
        'paused',
        'waiting-children',
        'completed',
        'failed',
      ] as const;
      const jobIds = await migrate.getRanges([...states], 0, -1);
      const jobsPerMigration = new Map<string, number>();
      for (const jobId of jobIds) {
        const migrationId = /^(.*)-slot-\d+$/.exec(jobId)?.[1] ?? `(unexpected job id ${jobId})`;
        jobsPerMigration.set(migrationId, (jobsPerMigration.get(migrationId) ?? 0) + 1);
      }
      expect(jobsPerMigration).toEqual(new Map([...accepted].filter(([, slots]) => slots > 0)));
      expect(await finalize.getRanges([...states], 0, -1)).toEqual([]);

      const claims = await control.hgetall(`${prefix}:active-slots:default`);
      const claimsPerMigration = new Map<string, number>();
      for (const holder of Object.values(claims))
        claimsPerMigration.set(holder, (claimsPerMigration.get(holder) ?? 0) + 1);
      expect(claimsPerMigration).toEqual(new Map([...accepted].filter(([, slots]) => slots > 0)));

      const idempotencyKeys: string[] = [];
      let cursor = '0';
      do {
        const [next, keys] = await control.scan(cursor, 'MATCH', `${prefix}:idempotency:*`, 'COUNT', 1000);
        idempotencyKeys.push(...keys);
        cursor = next;
      } while (cursor !== '0');
      for (const key of idempotencyKeys) {
        const stored = JSON.parse((await control.get(key)) ?? '{}') as { migrationId?: string | null };
        expect(accepted.has(stored.migrationId ?? ''), `${key} -> ${JSON.stringify(stored)}`).toBe(true);
      }
    } finally {
      control.disconnect();
    }
    // No worker runs here, so nothing may have touched the cluster: no slot opened, none moved.
    expect(await ownershipFingerprint(stack.cluster)).toBe(ownersBefore);
  });
});
