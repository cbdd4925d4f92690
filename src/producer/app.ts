/**
 * The HTTP API. buildApp() never listens: tests use app.inject, server.ts listens. Every route has
 * TypeBox schemas for params, body and each response.
 */
import bearerAuth from '@fastify/bearer-auth';
import rateLimit from '@fastify/rate-limit';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import Fastify, { type FastifyBaseLogger, type FastifyReply } from 'fastify';
import { ErrorCode, SlotfleetError } from '../shared/errors.js';
import { checkReadiness } from '../shared/readiness.js';
import type { AppDeps } from './deps.js';
import {
  BODY_LIMIT_BYTES,
  CONTROL_STORE_RETRY_AFTER_SECONDS,
  controlStoreError,
  ErrorResponse,
  errorBodyOf,
  HttpError,
  HttpErrorCode,
  quote,
} from './http-errors.js';
import { useJsonBodies } from './json-body.js';
import { registerQueueUi } from './queue-ui.js';
import { registerClusterRoutes } from './routes/clusters.js';
import { registerLimitRoutes } from './routes/limits.js';
import { registerMigrationRoutes } from './routes/migrations.js';
import { registerStatusPage } from './routes/status-page.js';
import { Health, MetricsText, Readiness } from './schemas.js';

export { QUEUE_UI_PATH } from './queue-ui.js';

/** Methods that change something: the ones the per-client rate limit counts. */
const MUTATING_METHODS = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

export function buildApp(deps: AppDeps) {
  const app = Fastify({
    // Widened to fastify's logger type (pino's Logger is one), so that the app's type is TypedApp.
    loggerInstance: deps.log as FastifyBaseLogger,
    bodyLimit: BODY_LIMIT_BYTES,
    // Unknown fields are an error, not silently dropped: a misspelt option must not be ignored.
    // No coercion either: "5" is not 5, [x] is not x. allErrors stays off so that a hostile body
    // costs one error, not one per field.
    ajv: {
      customOptions: { removeAdditional: false, coerceTypes: false, useDefaults: false, allErrors: false },
    },
    // A URL that is not valid percent-encoding, answered in the API's error shape. fastify types this
    // reply with a route's schema still unknown here, whose status() then takes no number: hence the cast.
    frameworkErrors: (error, request, reply) => {
      const body = errorBodyOf(error, request);
      return (reply as FastifyReply).status(body.statusCode).send(body);
    },
  }).withTypeProvider<TypeBoxTypeProvider>();
  useJsonBodies(app);

  app.addSchema(ErrorResponse);
  app.register(swagger, {
    openapi: {
      info: {
        title: 'slotfleet',
        version: '1',
        description: 'Move Redis Cluster slots with a fleet of workers.',
      },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: deps.config.api.token ? [{ bearer: [] }] : [],
    },
  });
  app.register(swaggerUi, { routePrefix: '/docs' });

  app.setErrorHandler((error, request, reply) => {
    // Routes let the control Redis' errors through as ioredis/BullMQ raise them; they become 503 here.
    const unavailable =
      error instanceof SlotfleetError
        ? undefined
        : controlStoreError(error, deps.config.control, deps.controlTlsFailure?.());
    const body = errorBodyOf(unavailable ?? error, request);
    if (body.code === ErrorCode.ControlStore) {
      // Expected while the control Redis is away, and its connection logs why: no stack per request.
      request.log.warn({ code: body.code, err: body.message }, 'request failed');
      reply.header('retry-after', String(CONTROL_STORE_RETRY_AFTER_SECONDS));
    } else if (body.statusCode >= 500) request.log.error({ err: error }, 'request failed');
    return reply.status(body.statusCode).send(body);
  });

  app.setNotFoundHandler((request, reply) =>
    reply.status(404).send({
      statusCode: 404,
      error: 'Not Found',
      code: ErrorCode.NotFound,
      message: `no route ${request.method} ${quote(request.url.split('?')[0]!)}`,
    }),
  );

  // Registered inside a plugin so that @fastify/swagger (a plugin loaded first) sees them too.
  app.register(async (open) => {
    // The status page shows addresses and progress, never credentials: open like /healthz.
    registerStatusPage(open, deps);
    open.get(
      '/healthz',
      { schema: { description: 'Liveness: the process answers.', response: { 200: Health } } },
      async () => ({ status: 'ok' as const }),
    );

    open.get(
      '/readyz',
      {
        schema: {
          description: 'Readiness: 200 only when the control Redis and every configured cluster answer.',
          response: { 200: Readiness, 503: Readiness },
        },
      },
      async (_request, reply) => {
        const probes: Record<string, () => Promise<unknown>> = {
          control: () =>
            deps.pingControl().catch((error: unknown) => {
              throw controlStoreError(error, deps.config.control, deps.controlTlsFailure?.()) ?? error;
            }),
        };
        for (const name of Object.keys(deps.config.clusters)) {
          const adapter = deps.adapterFor(name);
          if (adapter) probes[`cluster:${name}`] = () => adapter.ping();
        }
        const { ready, checks } = await checkReadiness(probes);
        return reply.status(ready ? 200 : 503).send({ status: ready ? 'ready' : 'not ready', checks });
      },
    );

    open.get(
      '/metrics',
      {
        schema: {
          description:
            'Prometheus metrics of the API process: queue depth by state, keys remaining per running ' +
            'migration, process metrics. Workers serve their own on SLOTFLEET_METRICS_PORT.',
          produces: ['text/plain'],
          response: { 200: MetricsText },
        },
      },
      async (_request, reply) => {
        const page = await deps.metrics.render();
        return reply.type(page.contentType).send(page.text);
      },
    );
  });

  // Everything under /v1 needs the token (constant-time comparison in @fastify/bearer-auth);
  // /healthz, /readyz, /metrics and /docs stay open.
  app.register(async (v1) => {
    // Mutating requests are counted per client IP before the token is checked, so guessing the
    // token costs a request of the same budget.
    await v1.register(rateLimit, {
      global: false,
      max: deps.config.api.rateLimitPerMinute,
      timeWindow: 60_000,
      allowList: (request) => !MUTATING_METHODS.has(request.method),
      errorResponseBuilder: (_request, context) =>
        new HttpError(
          429,
          HttpErrorCode.RateLimited,
          `rate limit: at most ${context.max} POST/PUT/PATCH/DELETE requests per minute from one client ` +
            `(SLOTFLEET_API_RATE_LIMIT); retry in ${context.after}`,
        ),
    });
    v1.addHook('onRequest', v1.rateLimit());
    const token = deps.config.api.token;
    if (token) {
      await v1.register(bearerAuth, {
        keys: [token],
        errorResponse: (error: Error) => ({
          statusCode: 401,
          error: 'Unauthorized',
          code: ErrorCode.Unauthorized,
          message: `${error.message}: send Authorization: Bearer <SLOTFLEET_API_TOKEN>`,
        }),
      });
    }
    registerMigrationRoutes(v1, deps);
    registerLimitRoutes(v1, deps);
    registerClusterRoutes(v1, deps);
    await registerQueueUi(v1, deps);
  });
  return app;
}

export type App = ReturnType<typeof buildApp>;
