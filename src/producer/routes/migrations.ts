/** Routes that create and read migrations. */
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type {
  FastifyBaseLogger,
  FastifyInstance,
  RawReplyDefaultExpression,
  RawRequestDefaultExpression,
  RawServerDefault,
} from 'fastify';
import { planExplicitMoves } from '../../shared/domain/plan.js';
import { ErrorCode, SlotfleetError } from '../../shared/errors.js';
import { groupMoves } from '../../shared/queue/migration-store.js';
import { newMigrationId } from '../../shared/queue/names.js';
import type { AppDeps } from '../app.js';
import { enqueueSlotMoves } from '../enqueue.js';
import { errorResponses } from '../http-errors.js';
import {
  ClusterParams,
  CreateMigrationBody,
  Migration,
  MigrationCreated,
  MigrationParams,
} from '../schemas.js';

export type TypedApp = FastifyInstance<
  RawServerDefault,
  RawRequestDefaultExpression,
  RawReplyDefaultExpression,
  FastifyBaseLogger,
  TypeBoxTypeProvider
>;

export function registerMigrationRoutes(app: TypedApp, deps: AppDeps): void {
  app.post(
    '/v1/clusters/:cluster/migrations',
    {
      schema: {
        description:
          'Move explicit slots to target masters. The source of each slot is its current owner. ' +
          'Enqueues one job per slot; slots the target owns already are counted, not moved.',
        params: ClusterParams,
        body: CreateMigrationBody,
        response: { 202: MigrationCreated, ...errorResponses(400, 404, 409, 422, 503) },
      },
    },
    async (request, reply) => {
      const { cluster } = request.params;
      const adapter = clusterAdapter(deps, cluster);
      const snapshot = await adapter.snapshot();
      const plan = planExplicitMoves(snapshot, request.body.moves);
      const id = newMigrationId();
      await deps.store.create({ id, cluster, request: request.body, moves: plan.moves });
      await enqueueSlotMoves(deps.flowProducer, id, cluster, plan.moves, deps.config.jobs);
      request.log.info(
        { migrationId: id, cluster, slots: plan.moves.length, alreadyOnTarget: plan.alreadyOnTarget.length },
        'migration enqueued',
      );
      return reply.status(202).send({
        id,
        cluster,
        slots: plan.moves.length,
        alreadyOnTarget: plan.alreadyOnTarget.length,
        plan: [...groupMoves(plan.moves)],
      });
    },
  );

  app.get(
    '/v1/migrations/:id',
    {
      schema: {
        description: 'State of a migration: slots by step, keys moved, per-slot errors.',
        params: MigrationParams,
        response: { 200: Migration, ...errorResponses(404, 503) },
      },
    },
    async (request) => {
      const record = await deps.store.get(request.params.id);
      if (!record)
        throw new SlotfleetError(ErrorCode.NotFound, `migration ${request.params.id} does not exist`);
      const { request: _request, ...rest } = record;
      return { ...rest, plan: [...rest.plan], errors: [...rest.errors] };
    },
  );
}

function clusterAdapter(deps: AppDeps, cluster: string) {
  const adapter = deps.adapterFor(cluster);
  if (!adapter) {
    const known = Object.keys(deps.config.clusters);
    throw new SlotfleetError(
      ErrorCode.UnknownCluster,
      `cluster "${cluster}" is not configured (configured: ${known.length ? known.join(', ') : 'none; set SLOTFLEET_CLUSTER_URL'})`,
    );
  }
  return adapter;
}
