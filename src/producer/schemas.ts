/**
 * TypeBox schemas of the API: bodies, params and every response. OpenAPI is generated from them.
 * Input schemas are closed (additionalProperties: false) and bound every string, array and map, so
 * hostile input is refused with a 400 before any handler runs: the body limit (64 KiB) caps the
 * whole request, these cap each field.
 */
import { Type } from '@fastify/type-provider-typebox';
import { EngineChoice, LIMIT_RANGES, type LimitName, MigrationEngine } from '../shared/domain/migration.js';
import { ServerMigrationOutcome } from '../shared/domain/server-migrations.js';
import { SLOT_STEPS } from '../shared/domain/slot-migration.js';
import { SLOT_COUNT } from '../shared/domain/slots.js';
import { explainPattern } from './http-errors.js';

const LIMIT_DESCRIPTIONS: Record<LimitName, string> = {
  maxKeysPerSecond: 'keys per second moved off each source node, by the whole fleet',
  maxBytesPerSecond:
    'bytes per second (MEMORY USAGE of the keys) moved off each source node, by the whole fleet; ' +
    'needs SLOTFLEET_BATCH_BYTES above 0 on the workers',
  batchKeys: "keys per MIGRATE for this migration, instead of the workers' SLOTFLEET_BATCH_KEYS",
  maxClientLatencyMs:
    'how long (ms) a client of a source node may wait because of this migration: the workers pace ' +
    "their MIGRATEs to it; instead of the workers' SLOTFLEET_MAX_CLIENT_LATENCY_MS",
};

function limitSchema(name: LimitName) {
  return Type.Integer({ ...LIMIT_RANGES[name], description: LIMIT_DESCRIPTIONS[name] });
}

/** Limits given when a migration is created; each can be changed later with PATCH /v1/migrations/:id. */
export const LimitsInput = Type.Object(
  {
    maxKeysPerSecond: Type.Optional(limitSchema('maxKeysPerSecond')),
    maxBytesPerSecond: Type.Optional(limitSchema('maxBytesPerSecond')),
    batchKeys: Type.Optional(limitSchema('batchKeys')),
    maxClientLatencyMs: Type.Optional(limitSchema('maxClientLatencyMs')),
  },
  { additionalProperties: false },
);

/** PATCH /v1/migrations/:id: a number sets a limit, null clears it, a missing name keeps it. */
export const LimitsPatchBody = Type.Object(
  {
    maxKeysPerSecond: Type.Optional(Type.Union([limitSchema('maxKeysPerSecond'), Type.Null()])),
    maxBytesPerSecond: Type.Optional(Type.Union([limitSchema('maxBytesPerSecond'), Type.Null()])),
    batchKeys: Type.Optional(Type.Union([limitSchema('batchKeys'), Type.Null()])),
    maxClientLatencyMs: Type.Optional(Type.Union([limitSchema('maxClientLatencyMs'), Type.Null()])),
  },
  { additionalProperties: false, minProperties: 1 },
);

export const Limits = Type.Object(
  {
    maxKeysPerSecond: Type.Union([Type.Integer(), Type.Null()]),
    maxBytesPerSecond: Type.Union([Type.Integer(), Type.Null()]),
    batchKeys: Type.Union([Type.Integer(), Type.Null()]),
    maxClientLatencyMs: Type.Union([Type.Integer(), Type.Null()]),
  },
  {
    description:
      "the migration's limits; null: no limit (rates), the workers' setting (batchKeys, maxClientLatencyMs)",
  },
);

const LimitsOnCreate = Type.Optional(LimitsInput);

/** Redis Cluster's own ceiling on nodes (cluster-spec: "up to 1000 nodes"): bounds node lists and maps. */
export const MAX_NODES = 1000;
/**
 * Longest slot list: every other slot spelt out one by one ("0,2,4,...,16382") still fits. Its syntax
 * is checked by parseSlotRanges, whose message names the offending part.
 */
export const MAX_SLOT_LIST_LENGTH = 50_000;

const NODE_REFERENCE_FORM = '[0-9a-f]{8,40}|[0-9A-Za-z._:\\[\\]-]{1,250}:[0-9]{1,5}';
const NODE_REFERENCE_PATTERN = explainPattern(
  `^(?:${NODE_REFERENCE_FORM})$`,
  'must be a node id (8 to 40 lowercase hex characters) or host:port',
);
const SOURCE_REFERENCE_PATTERN = explainPattern(
  `^(?:all|${NODE_REFERENCE_FORM})$`,
  'must be "all", a node id (8 to 40 lowercase hex characters) or host:port',
);
const NAME_PATTERN = explainPattern('^[a-zA-Z0-9_-]{1,64}$', 'must be 1 to 64 letters, digits, "-" or "_"');
const MIGRATION_ID_PATTERN = explainPattern(
  '^[a-zA-Z0-9_-]{1,80}$',
  'must be a migration id: 1 to 80 letters, digits, "-" or "_"',
);

const IDEMPOTENCY_KEY_PATTERN = explainPattern(
  '^[\\x21-\\x7e]{1,200}$',
  'must be 1 to 200 visible ASCII characters (no spaces)',
);

/** Headers of the routes that start a migration. */
export const IdempotencyHeaders = Type.Object({
  'idempotency-key': Type.Optional(
    Type.String({
      pattern: IDEMPOTENCY_KEY_PATTERN,
      description: 'the same key and body return the same migration and enqueue nothing',
    }),
  ),
});

export const ClusterParams = Type.Object(
  { cluster: Type.String({ pattern: NAME_PATTERN, description: 'configured cluster name' }) },
  { additionalProperties: false },
);

export const MigrationParams = Type.Object(
  { id: Type.String({ pattern: MIGRATION_ID_PATTERN, description: 'migration id' }) },
  { additionalProperties: false },
);

const SlotList = (description: string) =>
  Type.String({
    minLength: 1,
    maxLength: MAX_SLOT_LIST_LENGTH,
    description,
  });

const NodeReference = Type.String({
  minLength: 1,
  maxLength: 256,
  pattern: NODE_REFERENCE_PATTERN,
  description: 'node id, 8+ char id prefix, or host:port',
});

export const Move = Type.Object(
  {
    slots: SlotList('slots and ranges, e.g. "0-99,4000"'),
    target: Type.String({
      minLength: 1,
      maxLength: 256,
      pattern: NODE_REFERENCE_PATTERN,
      description: 'target master: node id, 8+ character id prefix, or host:port',
    }),
  },
  { additionalProperties: false },
);

/** Every route that moves keys accepts it. */
const Replace = Type.Optional(
  Type.Boolean({
    description:
      "when the target already holds a key with another value (BUSYKEY), overwrite it with the source's " +
      '(MIGRATE REPLACE) instead of failing the slot. Default false. Keys with the same value are ' +
      'replaced either way (the DUMP payloads are compared).',
  }),
);

/** How a migration's slots move, as the request asks (resolved when it is created). */
const EngineInput = (description: string) =>
  Type.Optional(
    // One literal per EngineChoice (a mapped array would lose the literal types).
    Type.Union(
      [Type.Literal(EngineChoice.Auto), Type.Literal(EngineChoice.Keys), Type.Literal(EngineChoice.Atomic)],
      { description },
    ),
  );

const ENGINE_DESCRIPTION =
  "how the slots move. auto (default): atomic when every master has the servers' own slot migration " +
  '(Valkey 9 CLUSTER MIGRATESLOTS), else keys. keys: SETSLOT and MIGRATE batches, key by key, database 0 ' +
  'only (refused while a master holds keys in another database). atomic: every database, whole slots at ' +
  'once; refused when a master lacks it, or when a source or target has slots open by hand';

/** Every route that moves keys accepts it; fix its own (it never runs atomic). */
const Engine = EngineInput(ENGINE_DESCRIPTION);

export const CreateMigrationBody = Type.Object(
  {
    moves: Type.Array(Move, { minItems: 1, maxItems: MAX_NODES }),
    replace: Replace,
    limits: LimitsOnCreate,
    engine: Engine,
  },
  { additionalProperties: false },
);

export const PlanGroup = Type.Object({
  source: Type.String({ description: 'host:port of the node giving the slots' }),
  target: Type.String({ description: 'host:port of the node receiving them' }),
  sourceId: Type.String(),
  targetId: Type.String(),
  slots: Type.String({ description: 'the slots, as ranges' }),
  slotCount: Type.Integer(),
  keys: Type.Optional(Type.Integer({ description: 'keys in those slots when planned (COUNTKEYSINSLOT)' })),
});

/** The engine a migration runs with; one literal per MigrationEngine. */
const EngineOutput = (description: string) =>
  Type.Union([Type.Literal(MigrationEngine.Keys), Type.Literal(MigrationEngine.Atomic)], { description });

export const MigrationCreated = Type.Object({
  id: Type.String(),
  cluster: Type.String(),
  engine: EngineOutput('the engine its slots move with, resolved from the request'),
  slots: Type.Integer({ description: 'slots that will move' }),
  alreadyOnTarget: Type.Optional(
    Type.Integer({ description: 'slots named in the request that the target owns already' }),
  ),
  plan: Type.Array(PlanGroup),
  reused: Type.Optional(
    Type.Boolean({ description: 'true when an Idempotency-Key matched an earlier request' }),
  ),
});

export const PlanPreview = Type.Object({
  dryRun: Type.Literal(true),
  cluster: Type.String(),
  engine: EngineOutput('the engine the slots would move with'),
  slots: Type.Integer(),
  keys: Type.Integer(),
  plan: Type.Array(PlanGroup),
  unrepairable: Type.Optional(Type.Array(Type.Object({ slot: Type.Integer(), reason: Type.String() }))),
});

export const MigrationState = Type.Union([
  Type.Literal('pending'),
  Type.Literal('running'),
  Type.Literal('paused'),
  Type.Literal('done'),
  Type.Literal('failed'),
  Type.Literal('cancelled'),
]);

export const SlotCounts = Type.Object(
  Object.fromEntries(SLOT_STEPS.map((step) => [step, Type.Integer()])) as Record<
    (typeof SLOT_STEPS)[number],
    ReturnType<typeof Type.Integer>
  >,
);

export const MigrationSummary = Type.Object({
  id: Type.String(),
  cluster: Type.String(),
  kind: Type.String({ description: 'migrations, rebalance, reshard, drain or fix' }),
  state: MigrationState,
  control: Type.Union([Type.Literal('run'), Type.Literal('pause'), Type.Literal('cancel')]),
  slotsTotal: Type.Integer(),
  slots: SlotCounts,
  keysMoved: Type.Integer(),
  createdAt: Type.String(),
  updatedAt: Type.String(),
  startedAt: Type.Union([Type.String(), Type.Null()]),
  limits: Limits,
  engine: EngineOutput(
    "how its slots move: keys (SETSLOT and MIGRATE batches, key by key) or atomic (the servers' own slot migration, Valkey 9 CLUSTER MIGRATESLOTS)",
  ),
});

/** A server task of an atomic migration, as its source lists it (CLUSTER GETSLOTMIGRATIONS). */
export const ServerTask = Type.Object({
  name: Type.String({ description: "the task's name (40 hex characters), the same on source and target" }),
  source: Type.String({ description: 'host:port of the source that lists it' }),
  target: Type.String({
    description: 'host:port of its target (its node id when the plan does not name it)',
  }),
  slots: Type.String({ description: 'its slots, as ranges, e.g. "0-99,200"' }),
  state: Type.String({
    description:
      "the server's state name: connecting ... waiting-to-snapshot, snapshotting, replicating, waiting-to-pause, " +
      'failover-paused, failover-granted while it runs; success, failed or cancelled once ended',
  }),
  // One literal per ServerMigrationOutcome (a mapped array would lose the literal types).
  outcome: Type.Union(
    [
      Type.Literal(ServerMigrationOutcome.InProgress),
      Type.Literal(ServerMigrationOutcome.Succeeded),
      Type.Literal(ServerMigrationOutcome.Failed),
      Type.Literal(ServerMigrationOutcome.Cancelled),
    ],
    { description: 'in-progress, or how it ended' },
  ),
  message: Type.String({ description: 'why it failed or was cancelled; often empty otherwise' }),
});

export const Migration = Type.Object({
  ...MigrationSummary.properties,
  plan: Type.Array(PlanGroup),
  errors: Type.Array(
    Type.Object({ slot: Type.Integer(), code: Type.String(), message: Type.String(), at: Type.String() }),
  ),
  keysRemaining: Type.Union([Type.Integer(), Type.Null()], {
    description:
      'keys still on the sources of slots not yet done (COUNTKEYSINSLOT); null if the cluster did not answer',
  }),
  keysPerSecond: Type.Number({ description: 'keys moved per second since the first slot started' }),
  etaSeconds: Type.Union([Type.Number(), Type.Null()]),
  serverTasks: Type.Union([Type.Array(ServerTask), Type.Null()], {
    description:
      "an atomic migration's server tasks that have not ended, then those that ended since it was created " +
      '(at most 20), read from its sources at most once a second; [] for engine keys and once it has ended; ' +
      'null if the cluster did not answer',
  }),
});

export const MigrationList = Type.Object({
  items: Type.Array(MigrationSummary),
  next: Type.Union([Type.String(), Type.Null()], { description: 'cursor of the next page, or null' }),
});

export const ListQuery = Type.Object(
  {
    limit: Type.Optional(
      Type.String({ pattern: '^([1-9][0-9]?|1[0-9][0-9]|200)$', description: '1 to 200, default 50' }),
    ),
    cursor: Type.Optional(Type.String({ pattern: '^[0-9]{1,16}$' })),
  },
  { additionalProperties: false },
);

export const NodeSummary = Type.Object({
  id: Type.String(),
  address: Type.String(),
  role: Type.Union([Type.Literal('master'), Type.Literal('replica')]),
  masterId: Type.Union([Type.String(), Type.Null()]),
  flags: Type.Array(Type.String()),
  failed: Type.Boolean(),
  slots: Type.Integer(),
  keys: Type.Union([Type.Integer(), Type.Null()], { description: 'DBSIZE; null if the node did not answer' }),
});

export const ClusterSummary = Type.Object({
  name: Type.String(),
  seed: Type.String({ description: 'host:port of the configured node' }),
});

/** A slot IMPORTING or MIGRATING on a node, as that node reports it. */
export const OpenSlot = Type.Object({
  slot: Type.Integer(),
  nodeId: Type.String(),
  state: Type.Union([Type.Literal('importing'), Type.Literal('migrating')]),
  peerId: Type.String(),
});

export const ClusterDetail = Type.Object({
  name: Type.String(),
  state: Type.String({ description: 'cluster_state of the seed node' }),
  slotsCovered: Type.Integer(),
  masters: Type.Array(Type.Object({ ...NodeSummary.properties, replicas: Type.Array(NodeSummary) })),
  openSlots: Type.Array(OpenSlot),
  failedNodes: Type.Array(NodeSummary),
});

const DryRun = Type.Optional(Type.Boolean({ description: 'return the plan and enqueue nothing' }));

/** Smallest weight above 0 (see checkedWeights in routes/clusters.ts) and the largest. */
export const MIN_WEIGHT = 0.001;
export const MAX_WEIGHT = 1_000_000;

/** node reference -> weight; keys are node references, at most one per node of a cluster. */
const Weights = (description: string) =>
  Type.Record(
    Type.String({ pattern: NODE_REFERENCE_PATTERN }),
    Type.Number({
      minimum: 0,
      maximum: MAX_WEIGHT,
      description: `0 (empty the node) or from ${MIN_WEIGHT} to ${MAX_WEIGHT}`,
    }),
    { maxProperties: MAX_NODES, additionalProperties: false, description },
  );

export const RebalanceBody = Type.Object(
  {
    weights: Type.Optional(Weights('node reference -> weight (default 1; 0 empties the node)')),
    threshold: Type.Optional(Type.Number({ minimum: 0, maximum: 100, description: 'percent; default 2' })),
    useEmptyMasters: Type.Optional(Type.Boolean()),
    by: Type.Optional(Type.Enum(['slots', 'keys'], { description: 'what to even out; default slots' })),
    replace: Replace,
    limits: LimitsOnCreate,
    engine: Engine,
    dryRun: DryRun,
  },
  { additionalProperties: false },
);

export const ReshardBody = Type.Object(
  {
    from: Type.Array(
      Type.String({
        minLength: 1,
        maxLength: 256,
        pattern: SOURCE_REFERENCE_PATTERN,
        description: 'node id, 8+ char id prefix, host:port, or "all"',
      }),
      { minItems: 1, maxItems: MAX_NODES, description: 'source nodes, or ["all"]' },
    ),
    to: NodeReference,
    slots: Type.Optional(Type.Integer({ minimum: 1, maximum: SLOT_COUNT })),
    ranges: Type.Optional(SlotList('explicit slots and ranges to move, e.g. "0-99,4000"')),
    replace: Replace,
    limits: LimitsOnCreate,
    engine: Engine,
    dryRun: DryRun,
  },
  { additionalProperties: false },
);

export const DrainBody = Type.Object(
  {
    node: NodeReference,
    weights: Type.Optional(Weights('node reference -> weight of the masters that take the slots')),
    replace: Replace,
    limits: LimitsOnCreate,
    engine: Engine,
    dryRun: DryRun,
  },
  { additionalProperties: false },
);

export const FixBody = Type.Object(
  {
    dryRun: DryRun,
    replace: Replace,
    engine: EngineInput(
      'auto (default) or keys: fix repairs open slots with hand-made SETSLOT, which Valkey refuses ' +
        "alongside the servers' own slot migrations, so it runs with keys; atomic is refused (400)",
    ),
  },
  { additionalProperties: false },
);

/** Routes that take no input besides the URL accept no body, `{}` or `null`, and nothing else. */
export const EmptyBody = Type.Unsafe<Record<string, never> | null>({
  type: ['object', 'null'],
  properties: {},
  additionalProperties: false,
  description: 'no body (or {})',
});

export const Health = Type.Object({ status: Type.Literal('ok') });

export const MetricsText = Type.String({ description: 'Prometheus text exposition format 0.0.4' });

export const Readiness = Type.Object({
  status: Type.Union([Type.Literal('ready'), Type.Literal('not ready')]),
  checks: Type.Record(Type.String(), Type.String()),
});
