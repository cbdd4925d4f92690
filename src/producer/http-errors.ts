/** slotfleet error codes to HTTP statuses: every error a client can cause is a 4xx naming the problem. */
import { type TSchema, Type } from '@fastify/type-provider-typebox';
import { ErrorCode } from '../shared/errors.js';

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

/** The responses every route can give besides its own, for the OpenAPI document. */
export function errorResponses(...statuses: number[]): Record<number, TSchema> {
  return Object.fromEntries(statuses.map((status) => [status, ErrorResponse]));
}
