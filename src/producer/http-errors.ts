/** slotfleet error codes to HTTP statuses: every error a client can cause is a 4xx naming the problem. */
import { type TSchema, Type } from '@fastify/type-provider-typebox';
import { describeEndpoint, type RedisEndpoint } from '../shared/config.js';
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

export interface ErrorBody {
  readonly statusCode: number;
  readonly error: string;
  readonly code: string;
  readonly message: string;
  readonly details?: Record<string, unknown>;
}

/** Codes of refusals made by the HTTP layer itself rather than by slotfleet's logic. */
export const HttpErrorCode = {
  /** Too many mutating requests from one client: 429, retry after the `retry-after` header. */
  RateLimited: 'RATE_LIMITED',
  PayloadTooLarge: 'PAYLOAD_TOO_LARGE',
  UnsupportedMediaType: 'UNSUPPORTED_MEDIA_TYPE',
  MethodNotAllowed: 'METHOD_NOT_ALLOWED',
  Internal: 'INTERNAL',
} as const;

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
    case ErrorCode.SlotMigrationBusy:
      return 409;
    case ErrorCode.UnknownNode:
    case ErrorCode.NotMaster:
    case ErrorCode.UnsafePlan:
    case ErrorCode.IdempotencyMismatch:
    case ErrorCode.AtomicUnsupported:
      return 422;
    case ErrorCode.Connection:
    case ErrorCode.ClusterDown:
    case ErrorCode.ControlStore:
    case ErrorCode.NotConverged:
    case ErrorCode.AuthFailed:
    case ErrorCode.TlsFailed:
      return 503;
    default:
      return 500;
  }
}

export function reasonPhrase(statusCode: number): string {
  const phrases: Record<number, string> = {
    400: 'Bad Request',
    401: 'Unauthorized',
    403: 'Forbidden',
    404: 'Not Found',
    405: 'Method Not Allowed',
    409: 'Conflict',
    413: 'Payload Too Large',
    415: 'Unsupported Media Type',
    422: 'Unprocessable Entity',
    429: 'Too Many Requests',
    503: 'Service Unavailable',
  };
  return phrases[statusCode] ?? (statusCode >= 500 ? 'Internal Server Error' : 'Error');
}

/** What the request looked like, for messages that name the problem. */
export interface RequestFacts {
  readonly method: string;
  readonly url: string;
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
}

/** An error the HTTP layer raises itself (rate limit, read-only queue UI): a status, a code, a message. */
export class HttpError extends Error {
  constructor(
    readonly statusCode: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'HttpError';
  }
}

/** Seconds a client is told to wait (Retry-After) when the control Redis is unavailable. */
export const CONTROL_STORE_RETRY_AFTER_SECONDS = 5;

/**
 * A failure of the control Redis as 503 CONTROL_STORE, naming its address (never its credentials),
 * or undefined when `error` is something else. The API's error handler and /readyz both use it, so
 * a dead control Redis reads the same everywhere. `tlsFailure`, the connection's failed handshake
 * (AppDeps.controlTlsFailure), names the reason a command's own error cannot.
 */
export function controlStoreError(
  error: unknown,
  control: Pick<RedisEndpoint, 'host' | 'port' | 'sentinel'>,
  tlsFailure?: Error,
): SlotfleetError | undefined {
  let reason = controlUnavailableReason(error);
  if (reason === undefined) return undefined;
  if (tlsFailure !== undefined) reason = controlUnavailableReason(tlsFailure) ?? reason;
  // Behind Sentinel the first sentinel's address would mislead: name the master group and sentinels.
  const where =
    control.sentinel !== undefined
      ? `(${describeEndpoint(control)})`
      : `at ${control.host.includes(':') ? `[${control.host}]` : control.host}:${control.port}`;
  return new SlotfleetError(
    ErrorCode.ControlStore,
    `control Redis ${where} ${reason}; routes that need it answer 503 until it is back ` +
      '(SLOTFLEET_CONTROL_URL); workers wait for it and carry on',
    { cause: error },
  );
}

/** Bodies larger than this are refused with 413 before they are parsed. */
export const BODY_LIMIT_BYTES = 65_536;

/**
 * The ErrorResponse for anything a handler, hook, parser or validator threw. Only a failure of
 * slotfleet itself (or of a store it needs) is a 5xx; anything the client sent is a 4xx.
 */
export function errorBodyOf(error: unknown, request?: RequestFacts): ErrorBody {
  if (error instanceof SlotfleetError) {
    const statusCode = statusForCode(error.code);
    return {
      statusCode,
      error: reasonPhrase(statusCode),
      code: error.code,
      message: error.message,
      ...(error.details ? { details: error.details } : {}),
    };
  }
  if (error instanceof HttpError) return clientError(error.statusCode, error.code, error.message);
  const fastifyError = error as {
    statusCode?: number;
    code?: string;
    message?: string;
    validation?: ValidationIssue[];
    validationContext?: string;
  };
  if (fastifyError.validation) {
    return clientError(
      400,
      ErrorCode.InvalidRequest,
      describeValidation(fastifyError.validationContext ?? 'request', fastifyError.validation),
    );
  }
  const statusCode = fastifyError.statusCode;
  if (statusCode === undefined || statusCode < 400 || statusCode >= 500) {
    return {
      statusCode: 500,
      error: reasonPhrase(500),
      code: HttpErrorCode.Internal,
      message: 'internal error: see the API log',
    };
  }
  switch (fastifyError.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return clientError(
        413,
        HttpErrorCode.PayloadTooLarge,
        `request body is larger than ${BODY_LIMIT_BYTES} bytes: no request needs that much`,
      );
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return clientError(
        415,
        HttpErrorCode.UnsupportedMediaType,
        `content-type ${quote(headerText(request?.headers['content-type']) || '(none)')} is not supported: ` +
          'send the body as application/json',
      );
    default:
      return clientError(
        statusCode,
        ErrorCode.InvalidRequest,
        bounded(fastifyError.message ?? 'bad request'),
      );
  }
}

function clientError(statusCode: number, code: string, message: string): ErrorBody {
  return { statusCode, error: reasonPhrase(statusCode), code, message };
}

/** One Ajv error (fastify stops at the first: allErrors is off). */
interface ValidationIssue {
  readonly keyword: string;
  readonly instancePath: string;
  readonly message?: string;
  readonly params: Record<string, unknown>;
}

/** Ajv's message, with the unknown field named and a pattern explained instead of printed. */
function describeValidation(context: string, issues: readonly ValidationIssue[]): string {
  const issue = issues[0];
  if (!issue) return `${context} is invalid`;
  const where = bounded(
    context +
      issue.instancePath
        .split('/')
        .slice(1)
        .map((segment) => (/^\d+$/.test(segment) ? `[${segment}]` : `.${segment}`))
        .join(''),
  );
  switch (issue.keyword) {
    case 'additionalProperties': {
      const key = quote(String(issue.params.additionalProperty));
      // A map (weights) refuses a key by its pattern, an object by its fields.
      if (where.endsWith('.weights'))
        return `${where} key ${key} must be a node id (8 to 40 lowercase hex characters) or host:port`;
      return `${where} has an unknown field ${key}: remove it (see /docs for the fields)`;
    }
    case 'enum':
      return `${where} must be one of ${(issue.params.allowedValues as unknown[]).map((value) => JSON.stringify(value)).join(', ')}`;
    case 'pattern': {
      const hint = PATTERN_HINTS.get(String(issue.params.pattern));
      return `${where} ${hint ?? 'has an invalid format'}`;
    }
    default:
      return bounded(`${where} ${issue.message ?? 'is invalid'}`);
  }
}

/** Patterns of the schemas, in words: "must match ^[0-9a-f]{8,40}|..." helps nobody. */
const PATTERN_HINTS = new Map<string, string>();

/** Registers the words that explain a schema pattern (schemas.ts calls this for each pattern). */
export function explainPattern(pattern: string, words: string): string {
  PATTERN_HINTS.set(pattern, words);
  return pattern;
}

function headerText(value: string | string[] | undefined): string {
  return Array.isArray(value) ? value.join(', ') : (value ?? '');
}

/** JSON-quoted and cut short: the client's own text, echoed without flooding the response or log. */
export function quote(text: string): string {
  return JSON.stringify(text.length > 80 ? `${text.slice(0, 80)}...` : text);
}

function bounded(message: string): string {
  return message.length > 300 ? `${message.slice(0, 300)}...` : message;
}

/** The responses every route can give besides its own, for the OpenAPI document. */
export function errorResponses(...statuses: number[]): Record<number, TSchema> {
  return Object.fromEntries(statuses.map((status) => [status, ErrorResponse]));
}
