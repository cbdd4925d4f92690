/**
 * The HTTP API. buildApp() never listens: tests use app.inject, server.ts listens. Every route has
 * TypeBox schemas for params, body and each response.
 */
import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { FastifyAdapter } from '@bull-board/fastify';
import bearerAuth from '@fastify/bearer-auth';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { Queue } from 'bullmq';
import Fastify, {
  type FastifyBaseLogger,
  type FastifyError,
  type FastifyReply,
  type FastifyRequest,
} from 'fastify';
import type { ClusterAdapter } from '../shared/cluster/adapter.js';
import type { Config } from '../shared/config.js';
import { ErrorCode, SlotfleetError } from '../shared/errors.js';
import type { Logger } from '../shared/logger.js';
import type { MigrationStore } from '../shared/queue/migration-store.js';
import type { ApiMetrics } from './api-metrics.js';
import {
  CONTROL_STORE_RETRY_AFTER_SECONDS,
  controlStoreError,
  ErrorResponse,
  statusForCode,
} from './http-errors.js';
import { registerClusterRoutes } from './routes/clusters.js';
import { registerLimitRoutes } from './routes/limits.js';
import { registerMigrationRoutes, type TypedApp } from './routes/migrations.js';
import { registerStatusPage } from './routes/status-page.js';
import { Health, MetricsText, Readiness } from './schemas.js';

export interface AppDeps {
  readonly config: Config;
  readonly log: Logger;
  readonly store: MigrationStore;
  /** The migrate-slot queue the API adds jobs to. */
  readonly migrateQueue: Queue;
  /** Every slot queue, for the queue UI at /queues. */
  readonly queues: readonly Queue[];
  /** The adapter of a configured cluster, or undefined when no cluster has that name. */
  readonly adapterFor: (cluster: string) => ClusterAdapter | undefined;
  /** Resolves when the control Redis answers. */
  readonly pingControl: () => Promise<void>;
  /** This process's Prometheus metrics, served on GET /metrics. */
  readonly metrics: Pick<ApiMetrics, 'render'>;
}

/** Where bull-board is mounted. */
export const QUEUE_UI_PATH = '/queues';

/** Request bodies larger than this are refused with 413 before they are parsed. */
const BODY_LIMIT_BYTES = 1_048_576;

export function buildApp(deps: AppDeps) {
  const app = Fastify({
    loggerInstance: deps.log as FastifyBaseLogger,
    bodyLimit: BODY_LIMIT_BYTES,
    // Unknown fields are an error, not silently dropped: a misspelt option must not be ignored.
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, allErrors: false } },
  }).withTypeProvider<TypeBoxTypeProvider>();

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

  app.setErrorHandler((error: FastifyError | SlotfleetError, request, reply) => {
    if (error instanceof SlotfleetError) return sendSlotfleetError(error, request, reply);
    // Routes let the control Redis' errors through as ioredis/BullMQ raise them; they become 503 here.
    const unavailable = controlStoreError(error, deps.config.control);
    if (unavailable) return sendSlotfleetError(unavailable, request, reply);
    if (error.validation) {
      return reply.status(400).send({
        statusCode: 400,
        error: 'Bad Request',
        code: ErrorCode.InvalidRequest,
        message: error.message,
      });
    }
    const statusCode = error.statusCode && error.statusCode >= 400 ? error.statusCode : 500;
    if (statusCode >= 500) request.log.error({ err: error }, 'request failed');
    return reply.status(statusCode).send({
      statusCode,
      error: reasonPhrase(statusCode),
      code: statusCode >= 500 ? 'INTERNAL' : ErrorCode.InvalidRequest,
      message: statusCode >= 500 ? 'internal error: see the API log' : error.message,
    });
  });

  app.setNotFoundHandler((request, reply) =>
    reply.status(404).send({
      statusCode: 404,
      error: 'Not Found',
      code: ErrorCode.NotFound,
      message: `no route ${request.method} ${request.url.split('?')[0]}`,
    }),
  );

  // Registered inside a plugin so that @fastify/swagger (a plugin loaded first) sees them too.
  app.register(async (open) => {
    // The status page shows addresses and progress, never credentials: open like /healthz.
    registerStatusPage(open as unknown as TypedApp, deps);
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
        const checks: Record<string, string> = {};
        const control = deps.pingControl().catch((error: unknown) => {
          throw controlStoreError(error, deps.config.control) ?? error;
        });
        const probes: [string, Promise<void>][] = [['control', control]];
        for (const name of Object.keys(deps.config.clusters)) {
          const adapter = deps.adapterFor(name);
          if (adapter) probes.push([`cluster:${name}`, adapter.ping()]);
        }
        await Promise.all(
          probes.map(async ([name, probe]) => {
            checks[name] = await probe.then(
              () => 'ok',
              (error: Error) => error.message.slice(0, 300),
            );
          }),
        );
        const ready = Object.values(checks).every((check) => check === 'ok');
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
    registerMigrationRoutes(v1 as unknown as TypedApp, deps);
    registerLimitRoutes(v1 as unknown as TypedApp, deps);
    registerClusterRoutes(v1 as unknown as TypedApp, deps);
    // The BullMQ queue UI (bull-board), behind the same token as /v1.
    const board = new FastifyAdapter();
    createBullBoard({ queues: deps.queues.map((queue) => new BullMQAdapter(queue)), serverAdapter: board });
    board.setBasePath(QUEUE_UI_PATH);
    await v1.register(board.registerPlugin(), { prefix: QUEUE_UI_PATH });
  });
  return app;
}

function sendSlotfleetError(error: SlotfleetError, request: FastifyRequest, reply: FastifyReply) {
  const statusCode = statusForCode(error.code);
  if (error.code === ErrorCode.ControlStore) {
    // Expected while the control Redis is away, and its connection logs why: no stack per request.
    request.log.warn({ code: error.code, err: error.message }, 'request failed');
    reply.header('retry-after', String(CONTROL_STORE_RETRY_AFTER_SECONDS));
  } else if (statusCode >= 500) request.log.error({ err: error }, 'request failed');
  return reply.status(statusCode).send({
    statusCode,
    error: reasonPhrase(statusCode),
    code: error.code,
    message: error.message,
    ...(error.details ? { details: error.details } : {}),
  });
}

function reasonPhrase(statusCode: number): string {
  const phrases: Record<number, string> = {
    400: 'Bad Request',
    401: 'Unauthorized',
    404: 'Not Found',
    409: 'Conflict',
    413: 'Payload Too Large',
    415: 'Unsupported Media Type',
    422: 'Unprocessable Entity',
    429: 'Too Many Requests',
    503: 'Service Unavailable',
  };
  return phrases[statusCode] ?? (statusCode >= 500 ? 'Internal Server Error' : 'Error');
}

export type App = ReturnType<typeof buildApp>;
