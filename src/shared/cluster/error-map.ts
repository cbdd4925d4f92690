/**
 * The one place where replies of Redis Cluster nodes become slotfleet error codes. The texts are
 * those of Redis 7.0's cluster.c (CLUSTER SETSLOT, MIGRATE), of Valkey 9's cluster_legacy.c and
 * cluster_migrateslots.c (atomic slot migration), of ioredis' connection errors, and of Node's TLS
 * handshake (the control Redis' connection reads the same TLS table: describeTlsFailure).
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

const UNTRUSTED_CA =
  "the server's certificate is not signed by a CA slotfleet trusts (SLOTFLEET_TLS_CA_FILE's, or Node's default CAs without it)";

/**
 * TLS handshakes that failed, by the code Node gives the socket's error: its own verdict on the
 * server's certificate (OpenSSL's X509 verify codes, ERR_TLS_CERT_ALTNAME_INVALID), or an alert the
 * server sent about ours (ERR_SSL_*: with `tls-auth-clients yes` a server checks the client
 * certificate). Each needs the operator (a file, a CA, a name), never a retry.
 */
const TLS_FAILURES: Readonly<Record<string, string>> = {
  SELF_SIGNED_CERT_IN_CHAIN: UNTRUSTED_CA,
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: UNTRUSTED_CA,
  UNABLE_TO_GET_ISSUER_CERT: UNTRUSTED_CA,
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: UNTRUSTED_CA,
  CERT_SIGNATURE_FAILURE: UNTRUSTED_CA,
  DEPTH_ZERO_SELF_SIGNED_CERT:
    "the server's certificate is self-signed and is not SLOTFLEET_TLS_CA_FILE's certificate",
  ERR_TLS_CERT_ALTNAME_INVALID:
    "the server's certificate does not name the address connected to: give it that name or IP as a " +
    'subjectAltName, or set SLOTFLEET_TLS_SERVERNAME to a name it holds',
  CERT_HAS_EXPIRED: "the server's certificate has expired",
  CERT_NOT_YET_VALID: "the server's certificate is not valid yet (check the clocks)",
  CERT_REVOKED: "the server's certificate is revoked",
  ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED:
    'the server requires a client certificate: set SLOTFLEET_TLS_CERT_FILE and SLOTFLEET_TLS_KEY_FILE',
  ERR_SSL_TLSV1_ALERT_UNKNOWN_CA:
    "the server does not trust slotfleet's client certificate (SLOTFLEET_TLS_CERT_FILE): it is not signed by the server's tls-ca-cert-file",
  ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE:
    "the server refused slotfleet's client certificate (SLOTFLEET_TLS_CERT_FILE)",
  ERR_SSL_SSLV3_ALERT_CERTIFICATE_EXPIRED:
    "the server refused slotfleet's client certificate as expired (SLOTFLEET_TLS_CERT_FILE)",
  // TLS 1.2 servers answer a missing client certificate with a plain handshake failure.
  ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE:
    'the server refused the handshake (a client certificate it requires, or no protocol or cipher in common)',
  ERR_SSL_WRONG_VERSION_NUMBER:
    'the server does not answer in TLS on this port: a rediss:// URL to a plaintext port?',
};

/**
 * `TLS: <what is wrong> (<Node's words>)` when `error` is a failed TLS handshake, else undefined. The
 * one reading of Node's TLS errors: the cluster's nodes (mapRedisError, TLS_FAILED) and the control
 * Redis (queue/connections.ts) both say it this way. It names files by their variable, never by
 * content: no key material or password is in these errors.
 */
export function describeTlsFailure(error: unknown): string | undefined {
  if (!(error instanceof Error)) return undefined;
  const code = (error as { code?: unknown }).code;
  let reason = typeof code === 'string' ? TLS_FAILURES[code] : undefined;
  // A socket write that met a non-TLS answer: "write EPROTO ...:wrong version number".
  if (reason === undefined && /wrong version number/.test(error.message)) {
    reason = TLS_FAILURES.ERR_SSL_WRONG_VERSION_NUMBER;
  }
  if (reason === undefined) return undefined;
  // OpenSSL's own text is a line of addresses and source paths; its reason string is what it says.
  const openssl = /SSL routines:[^:]*:([^:]+)/.exec(error.message)?.[1];
  return `TLS: ${reason} (${openssl ?? error.message})`;
}

/** @param context a short description of what was attempted, e.g. "SETSLOT 5 NODE on 127.0.0.1:7001". */
export function mapRedisError(error: unknown, context: string): SlotfleetError {
  if (error instanceof SlotfleetError) return error;
  redactCommandCredentials(error);
  const tls = describeTlsFailure(error);
  if (tls !== undefined)
    return new SlotfleetError(ErrorCode.TlsFailed, `${context}: ${tls}`, { cause: error });
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
