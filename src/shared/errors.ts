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
  /** Valkey 9: the node runs a server-side slot migration, or a hand-made one blocks MIGRATESLOTS. */
  SlotMigrationBusy: 'SLOT_MIGRATION_BUSY',
  /** The node has no atomic slot migration (CLUSTER MIGRATESLOTS): Redis, Valkey before 9. */
  AtomicUnsupported: 'ATOMIC_UNSUPPORTED',
  /** CLUSTER CANCELSLOTMIGRATIONS on a node that exports nothing (another cancel got there first). */
  NoServerMigration: 'NO_SERVER_MIGRATION',
  /** NOAUTH, WRONGPASS, NOPERM: the node refuses slotfleet's credentials or its ACL rules refuse a command. */
  AuthFailed: 'AUTH_FAILED',
  /**
   * A TLS handshake failed: the server's certificate is not trusted (CA, name, dates) or the server
   * refuses slotfleet's client certificate. Not retried: it needs the operator, as AUTH_FAILED does.
   */
  TlsFailed: 'TLS_FAILED',
  RedisError: 'REDIS_ERROR',
  // Conditions slotfleet itself detects.
  Connection: 'CONNECTION',
  OwnerChanged: 'OWNER_CHANGED',
  NotConverged: 'NOT_CONVERGED',
  SourceNotEmpty: 'SOURCE_NOT_EMPTY',
  /** The server task that moved the slot failed or was cancelled (the server rolled it back). */
  ServerMigrationFailed: 'SERVER_MIGRATION_FAILED',
  /**
   * The slot's migrate job failed outside the slot's own error handling (BullMQ fails a job that
   * stalled more than 10 times: a worker died on it each time), or the record of its failure was lost
   * with the control Redis' last writes. Found by the workers' sweep (stranded-slots.ts).
   */
  JobFailed: 'JOB_FAILED',
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
 * The error policy of slot jobs, in one table: whether a code is retried, and how it is handled.
 * Retried codes use BullMQ's attempts and exponential backoff (SLOTFLEET_JOB_ATTEMPTS, default 8,
 * from SLOTFLEET_JOB_BACKOFF_MS, default 500 ms: about 2 minutes in all); when they are spent, or for
 * a code that is not retried, the slot fails with its code and message, left open but safe (clients
 * follow ASK) until a re-run or fix. Learned from redis-cli, R3 and Codis: never guess past a
 * conflict, always re-read the cluster before acting again.
 */
export const ERROR_POLICY: Readonly<
  Partial<Record<ErrorCode, { readonly retry: boolean; readonly handling: string }>>
> = {
  [ErrorCode.IoError]: {
    retry: true,
    handling:
      'in the job: the next key moves alone with 4x the timeout; if it times out again, the attempt fails naming it',
  },
  [ErrorCode.Connection]: {
    retry: true,
    handling: 'node unreachable or silent: retried; a failover is adopted',
  },
  [ErrorCode.BusyKey]: {
    retry: false,
    handling:
      'in the job: same value on the target (DUMP compared), MIGRATE REPLACE; another value fails the slot naming the keys, unless posted with replace: true',
  },
  [ErrorCode.ReadOnly]: {
    retry: true,
    handling:
      'the node became a replica: the retry re-reads the topology and continues on the promoted master',
  },
  [ErrorCode.Moved]: { retry: true, handling: 'the topology changed: the retry re-reads it' },
  [ErrorCode.Ask]: { retry: true, handling: 'the topology changed: the retry re-reads it' },
  [ErrorCode.ClusterDown]: {
    retry: true,
    handling: 'waited out within the attempts budget, then the slot fails',
  },
  [ErrorCode.TryAgain]: { retry: true, handling: 'retried' },
  [ErrorCode.NotConverged]: {
    retry: true,
    handling: 'gossip (epochs, owners, a failover) not settled yet: retried',
  },
  [ErrorCode.ControlStore]: { retry: true, handling: 'the control Redis is away: retried once it is back' },
  [ErrorCode.SourceNotEmpty]: { retry: true, handling: 'retried: the drain goes on' },
  [ErrorCode.AlreadyOwner]: {
    retry: true,
    handling: 'a concurrent step got there first: the retry re-reads',
  },
  [ErrorCode.NotOwner]: { retry: true, handling: 'a concurrent step got there first: the retry re-reads' },
  [ErrorCode.StillHoldsKeys]: { retry: true, handling: 'keys appeared: the retry drains them first' },
  [ErrorCode.SlotMigrationBusy]: {
    retry: true,
    handling:
      'the node runs another slot migration (Valkey refuses SETSLOT during a server task, and MIGRATESLOTS during a hand-made one): retried once it ends; a plan refuses slots a server task holds with 409',
  },
  [ErrorCode.ServerMigrationFailed]: {
    retry: true,
    handling:
      'the server rolled the task back (its message is recorded): the retry starts a new task for the slots not moved',
  },
  [ErrorCode.AtomicUnsupported]: {
    retry: false,
    handling: 'engine atomic on a server without CLUSTER MIGRATESLOTS: re-run with engine keys or auto',
  },
  [ErrorCode.JobFailed]: {
    retry: false,
    handling:
      "the record takes the job's reason, so the migration ends: look at the workers' logs (a worker that died on it), then re-run or fix",
  },
  [ErrorCode.OwnerChanged]: { retry: false, handling: 'someone else moved the slot: re-plan or fix' },
  [ErrorCode.SlotConflict]: { retry: false, handling: 'another migration has the slot open: fix' },
};

/** Codes a slot job retries (with BullMQ backoff); everything else fails the slot at once. */
export const RETRYABLE_ERROR_CODES: ReadonlySet<ErrorCode> = new Set<ErrorCode>(
  (Object.entries(ERROR_POLICY) as [ErrorCode, { retry: boolean }][])
    .filter(([, policy]) => policy.retry)
    .map(([code]) => code),
);

export function isRetryable(error: unknown): boolean {
  return error instanceof SlotfleetError ? RETRYABLE_ERROR_CODES.has(error.code) : true;
}

export function errorCodeOf(error: unknown): ErrorCode {
  return error instanceof SlotfleetError ? error.code : ErrorCode.RedisError;
}
