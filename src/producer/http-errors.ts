/** slotfleet error codes to HTTP statuses: every error a client can cause is a 4xx naming the problem. */
import { type TSchema, Type } from '@fastify/type-provider-typebox';
import type { RedisEndpoint } from '../shared/config.js';
import { ErrorCode, SlotfleetError } from '../shared/errors.js';
import { controlUnavailableReason } from '../shared/queue/connections.js';

export const ErrorResponse = Type.Object(
  {
    statusCode: Type.Integer(),
    error: Type.String({ description: 'HTTP reason phrase' }),
    code: Type.String({ description: 'slotfleet error code, e.g. INVALID_REQUEST' }),
    message: Type.String({ description: 'what is wrong, in words an operator can act on' }),
    details: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
  },
  { $id: 'ErrorResponse' },
);

export function statusForCode(code: string): number {
  switch (code) {
    case ErrorCode.InvalidRequest:
      return 400;
    case ErrorCode.UnknownCluster:
    case ErrorCode.NotFound:
      return 404;
    case ErrorCode.Unauthorized:
      return 401;
    case ErrorCode.SlotConflict:
    case ErrorCode.OwnerChanged:
    case ErrorCode.ClusterNotReady:
    case ErrorCode.InvalidState:
      return 409;
    case ErrorCode.UnknownNode:
    case ErrorCode.NotMaster:
    case ErrorCode.UnsafePlan:
    case ErrorCode.IdempotencyMismatch:
      return 422;
    case ErrorCode.Connection:
    case ErrorCode.ClusterDown:
    case ErrorCode.ControlStore:
    case ErrorCode.NotConverged:
    case ErrorCode.AuthFailed:
      return 503;
    default:
      return 500;
  }
}

/** Seconds a client is told to wait (Retry-After) when the control Redis is unavailable. */
export const CONTROL_STORE_RETRY_AFTER_SECONDS = 5;

/**
 * A failure of the control Redis as 503 CONTROL_STORE, naming its address (never its credentials),
 * or undefined when `error` is something else. The API's error handler and /readyz both use it, so
 * a dead control Redis reads the same everywhere.
 */
export function controlStoreError(
  error: unknown,
  control: Pick<RedisEndpoint, 'host' | 'port'>,
): SlotfleetError | undefined {
  const reason = controlUnavailableReason(error);
  if (reason === undefined) return undefined;
  const host = control.host.includes(':') ? `[${control.host}]` : control.host;
  return new SlotfleetError(
    ErrorCode.ControlStore,
    `control Redis at ${host}:${control.port} ${reason}; routes that need it answer 503 until it is back ` +
      '(SLOTFLEET_CONTROL_URL); workers wait for it and carry on',
    { cause: error },
  );
}

/** The responses every route can give besides its own, for the OpenAPI document. */
export function errorResponses(...statuses: number[]): Record<number, TSchema> {
  return Object.fromEntries(statuses.map((status) => [status, ErrorResponse]));
}
