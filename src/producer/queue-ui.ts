/**
 * The BullMQ queue UI (bull-board) at /queues, behind the API token, read-only. A job added, edited,
 * retried or promoted through the board would skip everything that makes a move safe (the plan,
 * the slot claims, the pre-flight checks), and emptying or cleaning a queue would strand the records
 * of running migrations; pause, resume and cancel go through /v1/migrations/:id instead. The board's
 * own answers are reshaped into the API's ErrorResponse, so a client sees one error format.
 */
import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { FastifyAdapter } from '@bull-board/fastify';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { ErrorCode } from '../shared/errors.js';
import type { AppDeps } from './deps.js';
import { type ErrorBody, errorBodyOf, HttpError, HttpErrorCode, reasonPhrase } from './http-errors.js';

/** Where bull-board is mounted. */
export const QUEUE_UI_PATH = '/queues';

const READ_METHODS = new Set(['GET', 'HEAD']);

export async function registerQueueUi(scope: FastifyInstance, deps: AppDeps): Promise<void> {
  const board = new FastifyAdapter();
  createBullBoard({
    queues: deps.queues.map((queue) => new BullMQAdapter(queue, { readOnlyMode: true })),
    serverAdapter: board,
  });
  board.setBasePath(QUEUE_UI_PATH);
  // Replaces bull-board's handler, which answers every unknown error with 500 and its own shape.
  board.setErrorHandler((error: Error) => {
    const body = errorBodyOf(error);
    if (body.statusCode >= 500) deps.log.error({ err: error }, 'queue UI request failed');
    // bull-board's types list the statuses it uses itself; its adapter sends any.
    return { status: body.statusCode as 400, body: body as never };
  });
  const queueNames = new Set(deps.queues.map((queue) => queue.name));
  await scope.register(async (ui) => {
    ui.addHook('onRequest', async (request) => {
      if (!READ_METHODS.has(request.method)) {
        throw new HttpError(
          405,
          HttpErrorCode.MethodNotAllowed,
          `the queue UI is read-only (${request.method} refused): pause, resume or cancel a migration ` +
            'with POST /v1/migrations/:id/pause|resume|cancel',
        );
      }
      const { queueName } = (request.params ?? {}) as { queueName?: string };
      if (queueName !== undefined && !queueNames.has(queueName)) {
        throw new HttpError(
          404,
          ErrorCode.NotFound,
          `queue ${JSON.stringify(queueName.slice(0, 80))} does not exist (queues: ${[...queueNames].join(', ')})`,
        );
      }
    });
    ui.addHook('onSend', async (request, reply, payload) => {
      if (reply.statusCode < 400) return payload;
      reply.type('application/json; charset=utf-8');
      return JSON.stringify(asErrorBody(request, reply.statusCode, payload));
    });
    await ui.register(board.registerPlugin(), { prefix: QUEUE_UI_PATH });
  });
}

/** bull-board's {error: {key}} bodies (and our own, unchanged) as an ErrorResponse. */
function asErrorBody(request: FastifyRequest, statusCode: number, payload: unknown): ErrorBody {
  let parsed: unknown;
  try {
    parsed = typeof payload === 'string' ? JSON.parse(payload) : undefined;
  } catch {
    parsed = undefined;
  }
  const body = (parsed ?? {}) as { code?: unknown; message?: unknown; error?: { key?: unknown } | unknown };
  if (typeof body.code === 'string' && typeof body.message === 'string' && 'statusCode' in body)
    return body as ErrorBody;
  const key =
    typeof body.error === 'object' && body.error !== null && 'key' in body.error
      ? String((body.error as { key: unknown }).key)
      : undefined;
  return {
    statusCode,
    error: reasonPhrase(statusCode),
    code:
      statusCode >= 500
        ? HttpErrorCode.Internal
        : statusCode === 404
          ? ErrorCode.NotFound
          : statusCode === 405
            ? HttpErrorCode.MethodNotAllowed
            : ErrorCode.InvalidRequest,
    message:
      statusCode >= 500
        ? 'internal error: see the API log'
        : `the queue UI refused ${request.method} ${request.url.split('?')[0]!.slice(0, 200)}` +
          (key ? `: ${key}` : ''),
  };
}
