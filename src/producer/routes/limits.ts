/** PATCH /v1/migrations/:id: the limits of a migration, changed while it runs. */
import type { AppDeps, TypedApp } from '../deps.js';
import { errorResponses } from '../http-errors.js';
import { assertNotEnded, migrationSummary, requireRecord } from '../route-helpers.js';
import { LimitsPatchBody, MigrationParams, MigrationSummary } from '../schemas.js';

export function registerLimitRoutes(app: TypedApp, deps: AppDeps): void {
  app.patch(
    '/v1/migrations/:id',
    {
      schema: {
        description:
          'Change the limits of a migration that has not ended: maxKeysPerSecond and maxBytesPerSecond per ' +
          'source node (fleet-wide token buckets), batchKeys (keys per MIGRATE). A number sets a limit, null ' +
          'clears it, a missing field keeps it. Workers apply it from their next batch, within a second.',
        params: MigrationParams,
        body: LimitsPatchBody,
        response: { 200: MigrationSummary, ...errorResponses(400, 401, 404, 409, 503) },
      },
    },
    async (request) => {
      const record = await requireRecord(deps, request.params.id);
      assertNotEnded(record, 'its limits no longer apply');
      await deps.store.setLimits(record.id, request.body);
      request.log.info({ migrationId: record.id, limits: request.body }, 'migration limits changed');
      return migrationSummary((await deps.store.get(record.id))!);
    },
  );
}
