/** Routes that create, list, read and control migrations. */
import { EngineChoice, MigrationControl } from '../../shared/domain/migration.js';
import { planExplicitMoves } from '../../shared/domain/plan.js';
import { parseSlotRanges } from '../../shared/domain/slots.js';
import type { MigrationRecord } from '../../shared/queue/migration-store.js';
import { ConflictKind, conflictError } from '../conflicts.js';
import { assertSlotsFree, createIdempotently, preflight } from '../create-migration.js';
import type { AppDeps, TypedApp } from '../deps.js';
import { errorResponses } from '../http-errors.js';
import { migrationRate, remainingKeys } from '../remaining-keys.js';
import {
  assertNotEnded,
  clusterAdapter,
  idempotencyKey,
  migrationSummary,
  requireRecord,
} from '../route-helpers.js';
import {
  ClusterParams,
  CreateMigrationBody,
  EmptyBody,
  IdempotencyHeaders,
  ListQuery,
  Migration,
  MigrationCreated,
  MigrationList,
  MigrationParams,
  MigrationSummary,
} from '../schemas.js';
import { serverTasks } from '../server-tasks-view.js';

export function registerMigrationRoutes(app: TypedApp, deps: AppDeps): void {
  app.post(
    '/v1/clusters/:cluster/migrations',
    {
      schema: {
        description:
          'Move explicit slots to target masters. The source of each slot is its current owner. ' +
          'Enqueues one job per slot; slots the target owns already are counted, not moved. ' +
          'An Idempotency-Key header makes the call safe to repeat.',
        params: ClusterParams,
        headers: IdempotencyHeaders,
        body: CreateMigrationBody,
        response: { 202: MigrationCreated, ...errorResponses(400, 401, 404, 409, 422, 503) },
      },
    },
    async (request, reply) => {
      const { cluster } = request.params;
      const adapter = clusterAdapter(deps, cluster);
      let alreadyOnTarget = 0;
      const created = await createIdempotently(
        deps,
        { cluster, kind: 'migrations', body: request.body, idempotencyKey: idempotencyKey(request) },
        async () => {
          // Slots of an active migration are open on the cluster too; say which migration holds them.
          const named = request.body.moves.flatMap((move) => {
            try {
              return parseSlotRanges(move.slots);
            } catch {
              return [];
            }
          });
          await assertSlotsFree(deps, cluster, named);
          const snapshot = await adapter.snapshot();
          const plan = planExplicitMoves(snapshot, request.body.moves);
          const engine = await preflight(
            adapter,
            snapshot,
            plan.moves,
            request.body.engine ?? EngineChoice.Auto,
          );
          alreadyOnTarget = plan.alreadyOnTarget.length;
          return { moves: plan.moves, engine };
        },
      );
      request.log.info(
        { migrationId: created.id, cluster, slots: created.slots, reused: created.reused },
        'migration enqueued',
      );
      return reply.status(202).send({
        id: created.id,
        cluster,
        engine: created.engine,
        slots: created.slots,
        alreadyOnTarget,
        plan: created.plan,
        ...(created.reused ? { reused: true } : {}),
      });
    },
  );

  app.get(
    '/v1/migrations',
    {
      schema: {
        description: 'Migrations, newest first, a page at a time (pass `next` back as `cursor`).',
        querystring: ListQuery,
        response: { 200: MigrationList, ...errorResponses(400, 401, 503) },
      },
    },
    async (request) => {
      const limit = request.query.limit === undefined ? 50 : Number(request.query.limit);
      const page = await deps.store.list(
        limit,
        request.query.cursor === undefined ? undefined : Number(request.query.cursor),
      );
      const records = await Promise.all(page.ids.map((id) => deps.store.get(id)));
      return {
        items: records.filter((record): record is MigrationRecord => record !== null).map(migrationSummary),
        next: page.next === null ? null : String(page.next),
      };
    },
  );

  app.get(
    '/v1/migrations/:id',
    {
      schema: {
        description:
          'State of a migration: slots by step, keys moved and remaining, rate, ETA, per-slot errors, timestamps, ' +
          "and an atomic migration's server tasks.",
        params: MigrationParams,
        response: { 200: Migration, ...errorResponses(401, 404, 503) },
      },
    },
    async (request) => {
      const record = await requireRecord(deps, request.params.id);
      const [keysRemaining, tasks] = await Promise.all([
        remainingKeys(deps, record),
        serverTasks(deps, record),
      ]);
      const { keysPerSecond, etaSeconds } = migrationRate(record, keysRemaining);
      return {
        ...migrationSummary(record),
        plan: [...record.plan],
        errors: [...record.errors],
        keysRemaining,
        keysPerSecond,
        etaSeconds,
        serverTasks: tasks,
      };
    },
  );

  const controls = [
    [
      'pause',
      MigrationControl.Pause,
      'Stop starting slots and batches; a batch in flight completes. Slots in flight stay open but safe.',
    ],
    ['resume', MigrationControl.Run, 'Continue a paused migration.'],
    [
      'cancel',
      MigrationControl.Cancel,
      'Stop the migration: slots already MIGRATING finish cleanly (a slot is never left open), the rest are dropped. ' +
        'The record then says which slots moved (done) and which did not (cancelled).',
    ],
  ] as const;
  for (const [name, control, description] of controls) {
    app.post(
      `/v1/migrations/:id/${name}`,
      {
        schema: {
          description,
          params: MigrationParams,
          body: EmptyBody,
          response: { 200: MigrationSummary, ...errorResponses(400, 401, 404, 409, 503) },
        },
      },
      async (request) => {
        const record = await requireRecord(deps, request.params.id);
        assertNotEnded(record, `nothing to ${name}`);
        if (record.control === MigrationControl.Cancel && control !== MigrationControl.Cancel) {
          throw conflictError({
            kind: ConflictKind.MigrationCancelling,
            migrationId: record.id,
            action: name,
          });
        }
        await deps.store.setControl(record.id, control);
        request.log.info({ migrationId: record.id, control }, `migration ${name}`);
        return migrationSummary((await deps.store.get(record.id))!);
      },
    );
  }
}
