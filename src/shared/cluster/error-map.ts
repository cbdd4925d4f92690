/**
 * The one place where replies of Redis Cluster nodes become slotfleet error codes. The texts are
 * those of Redis 7.0's cluster.c (CLUSTER SETSLOT, MIGRATE), of Valkey 9's cluster_legacy.c and
 * cluster_migrateslots.c (atomic slot migration), and of ioredis' connection errors.
 */
import { ErrorCode, SlotfleetError } from '../errors.js';

// MOVED and ASK are told apart by their first word only: the address after the slot is whatever the
// node's cluster-preferred-endpoint-type names ("127.0.0.1:7001", "redis-1.redis:7001", "?:7001"
// for a node without a hostname, ":7001" for unknown-endpoint), and slotfleet never follows it: a
// retry reads the topology again.
const PREFIX_CODES: readonly (readonly [string, ErrorCode])[] = [
  ['READONLY', ErrorCode.ReadOnly],
  ['CLUSTERDOWN', ErrorCode.ClusterDown],
  ['IOERR', ErrorCode.IoError],
  ['BUSYKEY', ErrorCode.BusyKey],
  ['TRYAGAIN', ErrorCode.TryAgain],
  ['ASK ', ErrorCode.Ask],
  ['MOVED ', ErrorCode.Moved],
  ['NOAUTH', ErrorCode.AuthFailed],
  ['WRONGPASS', ErrorCode.AuthFailed],
  ['NOPERM', ErrorCode.AuthFailed],
];

const TEXT_CODES: readonly (readonly [RegExp, ErrorCode])[] = [
  // SETSLOT IMPORTING on the owner.
  [/I'm already the owner of hash slot/, ErrorCode.AlreadyOwner],
  // SETSLOT MIGRATING on a node that does not own the slot.
  [/I'm not the owner of hash slot/, ErrorCode.NotOwner],
  // SETSLOT NODE <other> on an owner that still has keys of the slot.
  [/still hold keys for this hash slot/, ErrorCode.StillHoldsKeys],
  [/I don't know about node|Unknown node/, ErrorCode.NodeUnknownToPeer],
  // ADDSLOTS on a slot some node already serves.
  [/is already busy/, ErrorCode.AlreadyOwner],
  [/Please use SETSLOT only with masters/, ErrorCode.ReadOnly],
  // Valkey 9 runs Lua as a module, which checks slot ownership before the replica check: the batch
  // script on a source that failed over gets this where Redis 7.0 and Valkey 8 say READONLY.
  [/access a non local key in a cluster node/, ErrorCode.Moved],
  // Valkey 9: MIGRATESLOTS naming a slot the node does not own (it moved meanwhile).
  [/Slots are not served by this node/, ErrorCode.NotOwner],
  // Valkey 9: MIGRATESLOTS on a node that became a replica.
  [/Slot migration can only be used on primary nodes/, ErrorCode.ReadOnly],
  // Valkey 9: SETSLOT during a server task, MIGRATESLOTS during a hand-made migration or on a slot a
  // task already exports.
  [
    /Slot (import|export) in progress|Slots are being manually (migrated|imported)|I am already migrating slot/,
    ErrorCode.SlotMigrationBusy,
  ],
  [
    /unknown subcommand '(MIGRATESLOTS|CANCELSLOTMIGRATIONS|GETSLOTMIGRATIONS)'/i,
    ErrorCode.AtomicUnsupported,
  ],
  // CANCELSLOTMIGRATIONS on a source that exports nothing (another cancel got there first).
  [/No migrations ongoing/, ErrorCode.NoServerMigration],
  // MIGRATE relays the target's refusal of RESTORE-ASKING (for instance MOVED when not importing).
  [/Target instance replied with error/, ErrorCode.TargetError],
];

// ENOTFOUND and EAI_AGAIN: a node's hostname that does not resolve (yet), as while a Kubernetes pod
// restarts and its DNS record is gone.
const CONNECTION_PATTERNS =
  /Connection is closed|ECONNREFUSED|ECONNRESET|ETIMEDOUT|EPIPE|EHOSTUNREACH|ENOTFOUND|EAI_AGAIN|Command timed out|Reached the max retries|Stream isn't writeable|enableOfflineQueue/;

/** @param context a short description of what was attempted, e.g. "SETSLOT 5 NODE on 127.0.0.1:7001". */
export function mapRedisError(error: unknown, context: string): SlotfleetError {
  if (error instanceof SlotfleetError) return error;
  redactCommandCredentials(error);
  const message = error instanceof Error ? error.message : String(error);
  const text = message.replace(/^ERR /, '');
  let code: ErrorCode = ErrorCode.RedisError;
  const prefixed = PREFIX_CODES.find(([prefix]) => message.startsWith(prefix));
  if (prefixed) code = prefixed[1];
  else {
    const matched = TEXT_CODES.find(([pattern]) => pattern.test(text));
    if (matched) code = matched[1];
    else if (
      CONNECTION_PATTERNS.test(message) ||
      (error as { name?: string })?.name === 'MaxRetriesPerRequestError'
    )
      code = ErrorCode.Connection;
  }
  // The target's MOVED/ASK/CLUSTERDOWN inside a MIGRATE reply is worth a precise code too.
  if (code === ErrorCode.TargetError) {
    const inner = /replied with error: (\S+)/.exec(text)?.[1];
    const innerCode = PREFIX_CODES.find(([prefix]) => prefix.trim() === inner)?.[1];
    if (innerCode) code = innerCode;
  }
  return new SlotfleetError(code, `${context}: ${text}`, { cause: error });
}

const REDACTED = '[redacted]';

/**
 * ioredis attaches the failed command to its errors (`err.command.args`), and this error becomes
 * the `cause` of ours: the password of MIGRATE ... AUTH <password> | AUTH2 <user> <password> would
 * reach any log or inspect of the cause. Redacted in place, once, where the error enters slotfleet.
 */
function redactCommandCredentials(error: unknown): void {
  const command = (error as { command?: { name?: unknown; args?: unknown } } | null)?.command;
  if (command === undefined || !Array.isArray(command.args)) return;
  const name = String(command.name).toLowerCase();
  if (name === 'auth' || name === 'hello') {
    command.args = command.args.map(() => REDACTED);
    return;
  }
  if (name !== 'migrate') return;
  const args: unknown[] = [...command.args];
  // MIGRATE host port key|"" db timeout [COPY] [REPLACE] [AUTH pw | AUTH2 user pw] [KEYS key...]:
  // options start after the 5 positional arguments and end at KEYS (a key may be named "AUTH").
  for (let index = 5; index < args.length; index++) {
    const option = String(args[index]).toUpperCase();
    if (option === 'KEYS') break;
    const secrets = option === 'AUTH' ? 1 : option === 'AUTH2' ? 2 : 0;
    for (let offset = 1; offset <= secrets && index + offset < args.length; offset++) {
      args[index + offset] = REDACTED;
    }
    index += secrets;
  }
  command.args = args;
}
