/**
 * One error type for the whole project, with a code. Redis replies are mapped to these codes in
 * exactly one place (src/shared/cluster/error-map.ts); whether a code is worth retrying is decided
 * here, in one table, so the processors never guess from message text.
 */
export const ErrorCode = {
  // Input the client controls: never retried, always a 4xx.
  InvalidRequest: 'INVALID_REQUEST',
  UnknownCluster: 'UNKNOWN_CLUSTER',
  UnknownNode: 'UNKNOWN_NODE',
  NotMaster: 'NOT_MASTER',
  SlotConflict: 'SLOT_CONFLICT',
  UnsafePlan: 'UNSAFE_PLAN',
  NotFound: 'NOT_FOUND',
  Unauthorized: 'UNAUTHORIZED',
  IdempotencyMismatch: 'IDEMPOTENCY_MISMATCH',
  ClusterNotReady: 'CLUSTER_NOT_READY',
  InvalidState: 'INVALID_STATE',
  // Replies of Redis Cluster nodes.
  ReadOnly: 'READONLY',
  ClusterDown: 'CLUSTERDOWN',
  IoError: 'IOERR',
  BusyKey: 'BUSYKEY',
  TryAgain: 'TRYAGAIN',
  Ask: 'ASK',
  Moved: 'MOVED',
  AlreadyOwner: 'ALREADY_OWNER',
  NotOwner: 'NOT_OWNER',
  StillHoldsKeys: 'STILL_HOLDS_KEYS',
  NodeUnknownToPeer: 'NODE_UNKNOWN_TO_PEER',
  TargetError: 'TARGET_ERROR',
  /** NOAUTH, WRONGPASS, NOPERM: the node refuses slotfleet's credentials or its ACL rules refuse a command. */
  AuthFailed: 'AUTH_FAILED',
  RedisError: 'REDIS_ERROR',
  // Conditions slotfleet itself detects.
  Connection: 'CONNECTION',
  OwnerChanged: 'OWNER_CHANGED',
  NotConverged: 'NOT_CONVERGED',
  SourceNotEmpty: 'SOURCE_NOT_EMPTY',
  ControlStore: 'CONTROL_STORE',
  Config: 'CONFIG',
  Sandbox: 'SANDBOX',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

export class SlotfleetError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    options?: ErrorOptions & { details?: Record<string, unknown> },
  ) {
    super(message, options);
    this.name = 'SlotfleetError';
    this.details = options?.details;
  }
  readonly details: Record<string, unknown> | undefined;
}

/**
 * Codes a slot job retries (with BullMQ backoff). Everything else fails the slot at once and is
 * reported with its code: retrying a refused request or a changed owner only hides the problem.
 */
export const RETRYABLE_ERROR_CODES: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  ErrorCode.IoError,
  ErrorCode.ClusterDown,
  ErrorCode.TryAgain,
  ErrorCode.ReadOnly,
  ErrorCode.Moved,
  ErrorCode.Ask,
  ErrorCode.Connection,
  ErrorCode.NotConverged,
  ErrorCode.SourceNotEmpty,
  ErrorCode.ControlStore,
  ErrorCode.AlreadyOwner,
  ErrorCode.NotOwner,
  ErrorCode.StillHoldsKeys,
]);

export function isRetryable(error: unknown): boolean {
  return error instanceof SlotfleetError ? RETRYABLE_ERROR_CODES.has(error.code) : true;
}

export function errorCodeOf(error: unknown): ErrorCode {
  return error instanceof SlotfleetError ? error.code : ErrorCode.RedisError;
}
