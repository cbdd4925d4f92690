/** TypeBox schemas of the API: bodies, params and every response. OpenAPI is generated from them. */
import { Type } from '@fastify/type-provider-typebox';
import { SLOT_STEPS } from '../shared/domain/slot-migration.js';

export const ClusterParams = Type.Object({
  cluster: Type.String({ pattern: '^[a-zA-Z0-9_-]{1,64}$', description: 'configured cluster name' }),
});

export const MigrationParams = Type.Object({
  id: Type.String({ pattern: '^[a-zA-Z0-9_-]{1,80}$', description: 'migration id' }),
});

export const Move = Type.Object(
  {
    slots: Type.String({
      minLength: 1,
      maxLength: 200_000,
      description: 'slots and ranges, e.g. "0-99,4000"',
      examples: ['0-99,4000'],
    }),
    target: Type.String({
      minLength: 1,
      maxLength: 256,
      description: 'target master: node id, 8+ character id prefix, or host:port',
    }),
  },
  { additionalProperties: false },
);

export const CreateMigrationBody = Type.Object(
  { moves: Type.Array(Move, { minItems: 1, maxItems: 16384 }) },
  { additionalProperties: false },
);

export const PlanGroup = Type.Object({
  source: Type.String(),
  target: Type.String(),
  sourceId: Type.String(),
  targetId: Type.String(),
  slots: Type.String(),
  slotCount: Type.Integer(),
});

export const MigrationCreated = Type.Object({
  id: Type.String(),
  cluster: Type.String(),
  slots: Type.Integer({ description: 'slots that will move' }),
  alreadyOnTarget: Type.Integer({ description: 'slots named in the request that the target owns already' }),
  plan: Type.Array(PlanGroup),
});

export const MigrationState = Type.Union([
  Type.Literal('pending'),
  Type.Literal('running'),
  Type.Literal('done'),
  Type.Literal('failed'),
]);

export const SlotCounts = Type.Object(
  Object.fromEntries(SLOT_STEPS.map((step) => [step, Type.Integer()])) as Record<
    (typeof SLOT_STEPS)[number],
    ReturnType<typeof Type.Integer>
  >,
);

export const Migration = Type.Object({
  id: Type.String(),
  cluster: Type.String(),
  state: MigrationState,
  slotsTotal: Type.Integer(),
  slots: SlotCounts,
  keysMoved: Type.Integer(),
  plan: Type.Array(PlanGroup),
  errors: Type.Array(
    Type.Object({ slot: Type.Integer(), code: Type.String(), message: Type.String(), at: Type.String() }),
  ),
  createdAt: Type.String(),
  updatedAt: Type.String(),
});

export const Health = Type.Object({ status: Type.Literal('ok') });
