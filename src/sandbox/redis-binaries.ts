/**
 * Locates the server the sandbox runs, Redis (redis-server, redis-cli) or Valkey (valkey-server,
 * valkey-cli), and says which one it is. Integration tests must fail loudly, never skip, when a server
 * is missing, so every failure here names the command that installs it.
 *
 * Which server: `chooseServer()` sets it for the rest of the process (the demo and the bench pass what
 * `serverChoiceFromEnvironment(process.env)` reads, the tests what their vitest project names); by
 * default redis-server, else valkey-server, on PATH or in /usr/bin or /usr/local/bin. The CLI is the
 * server's sibling (valkey-cli next to valkey-server) unless chosen too. This module never reads the
 * environment itself: the entry points hand it in, as they hand loadConfig() theirs.
 */
import { execFile } from 'node:child_process';
import { constants } from 'node:fs';
import { access } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

export type ServerName = 'redis' | 'valkey';

/** Which server a binary or a running process is: `redis 7.0.15`, `valkey 8.0.1`. */
export interface ServerIdentity {
  readonly name: ServerName;
  /** The server's own version (Valkey's, not the `redis_version` it reports for compatibility). */
  readonly version: string;
}

export interface RedisBinaries extends ServerIdentity {
  readonly serverPath: string;
  readonly cliPath: string;
}

export interface RedisBinariesOptions {
  /**
   * The server: a path, or a name looked up on PATH, /usr/bin and /usr/local/bin (`valkey-server`).
   * @defaultValue redis-server, else valkey-server
   */
  serverPath?: string;
  /** Its CLI, a path or a name. @defaultValue `redis-cli` or `valkey-cli` next to the server, else by name */
  cliPath?: string;
}

/** The variables `serverChoiceFromEnvironment` reads (docs/testing.md describes them). */
export const SERVER_CHOICE_VARIABLES = ['SLOTFLEET_SERVER_BIN', 'SLOTFLEET_CLI_BIN'] as const;

/**
 * How to install each server the tests run on (Debian 12). `scripts/setup tests`, which `npm test` runs
 * first, installs all three; these name the step each one takes, for a server found missing.
 */
export const SERVER_INSTALL_COMMANDS = {
  redis7: 'sudo apt-get install redis-server',
  valkey8:
    'sudo bash scripts/setup tests --system-only (it adds bookworm-backports, pinned, then runs apt-get install -t bookworm-backports valkey-server valkey-tools)',
  valkey9:
    "bash scripts/setup tests, or bash .ci/valkey9 alone (builds sid's valkey 9.1.2 source package, about 4 minutes, and prints its bin directory)",
} as const;

const DEFAULT_SERVER_NAMES = ['redis-server', 'valkey-server'];
const MINIMUM_MAJOR_VERSION = 7;
const FALLBACK_DIRECTORIES = ['/usr/bin', '/usr/local/bin'];

let chosen: RedisBinariesOptions = {};
/** Lookups spawn processes and every RedisProcess.start asks: one per choice. */
const lookups = new Map<string, Promise<RedisBinaries>>();

/** The server every later lookup without options (RedisProcess.start, SandboxCluster.start) uses. */
export function chooseServer(options: RedisBinariesOptions): void {
  chosen = { ...options };
}

/** SLOTFLEET_SERVER_BIN and SLOTFLEET_CLI_BIN from an environment the caller passes in. */
export function serverChoiceFromEnvironment(
  env: Readonly<Record<string, string | undefined>>,
): RedisBinariesOptions {
  const serverPath = env.SLOTFLEET_SERVER_BIN?.trim() || undefined;
  const cliPath = env.SLOTFLEET_CLI_BIN?.trim() || undefined;
  return { ...(serverPath && { serverPath }), ...(cliPath && { cliPath }) };
}

/**
 * Finds the server and its CLI and checks the server is 7.0 or newer (the sandbox relies on
 * `enable-debug-command`, `SET ... PXAT` and multi-part AOF). Without options, the chosen server.
 */
export function requireRedisBinaries(options: RedisBinariesOptions = chosen): Promise<RedisBinaries> {
  const key = JSON.stringify([options.serverPath, options.cliPath]);
  let lookup = lookups.get(key);
  if (lookup === undefined) {
    lookup = lookUpBinaries(options);
    lookups.set(key, lookup);
    lookup.catch(() => lookups.delete(key));
  }
  return lookup;
}

/** `redis 7.0.15`, `valkey 9.1.2`. */
export function describeServer(server: ServerIdentity): string {
  return `${server.name} ${server.version}`;
}

/**
 * Which server answered, from its INFO server section: Valkey says `server_name:valkey` and
 * `valkey_version` (its `redis_version` is the Redis it is compatible with); Redis 7.0 has neither.
 */
export function parseServerIdentity(infoServer: string): ServerIdentity {
  const field = (name: string) => new RegExp(`^${name}:(.*)$`, 'm').exec(infoServer)?.[1]?.trim();
  const name = field('server_name') ?? 'redis';
  if (name !== 'redis' && name !== 'valkey') throw new Error(`unknown server_name in INFO server: ${name}`);
  const version = field(`${name}_version`) ?? field('redis_version');
  if (version === undefined) throw new Error(`INFO server names no version: ${infoServer.slice(0, 200)}`);
  return { name, version };
}

/** From `redis-server --version`: "Redis server v=7.0.15 sha=..." or "Valkey server v=8.0.1 sha=...". */
export function parseVersionOutput(output: string): ServerIdentity | undefined {
  const match = /^(Redis|Valkey) server v=(\d+\.\d+\.\d+)/.exec(output.trim());
  if (match === null) return undefined;
  return { name: match[1]!.toLowerCase() as ServerName, version: match[2]! };
}

/** The install command(s) for a server or CLI named like `binary` (a name or a path). */
export function installHint(binary: string): string {
  const name = basename(binary);
  const commands = name.startsWith('valkey')
    ? [`Valkey 8: ${SERVER_INSTALL_COMMANDS.valkey8}`, `Valkey 9: ${SERVER_INSTALL_COMMANDS.valkey9}`]
    : name.startsWith('redis')
      ? [`Redis 7.0: ${SERVER_INSTALL_COMMANDS.redis7}`]
      : Object.values(SERVER_INSTALL_COMMANDS);
  return `install it with ${commands.join('; or ')}`;
}

/** Where a server's CLI is looked for: its sibling first, then by name. */
export function cliCandidates(serverPath: string, server: ServerName): string[] {
  const cliName = `${server}-cli`;
  return [join(dirname(serverPath), cliName), cliName];
}

async function lookUpBinaries(options: RedisBinariesOptions): Promise<RedisBinaries> {
  const serverPath =
    options.serverPath === undefined
      ? await findFirst(DEFAULT_SERVER_NAMES)
      : await resolveBinary(options.serverPath);
  const server = await readServerVersion(serverPath);
  const major = Number(server.version.split('.')[0]);
  if (!Number.isFinite(major) || major < MINIMUM_MAJOR_VERSION) {
    throw new Error(
      `${describeServer(server)} at ${serverPath} is too old (slotfleet needs 7.0+): ${installHint(serverPath)}`,
    );
  }
  const cliPath =
    options.cliPath === undefined
      ? await findFirst(cliCandidates(serverPath, server.name))
      : await resolveBinary(options.cliPath);
  return { ...server, serverPath, cliPath };
}

/** The first of `names` (paths, or names to look up) that exists; else a failure naming them all. */
async function findFirst(names: readonly string[]): Promise<string> {
  for (const name of names) {
    const found = await locate(name);
    if (found !== undefined) return found;
  }
  throw new Error(
    `none of ${names.join(', ')} found (PATH, /usr/bin, /usr/local/bin): ${installHint(names[0]!)}`,
  );
}

async function resolveBinary(nameOrPath: string): Promise<string> {
  const found = await locate(nameOrPath);
  if (found !== undefined) return found;
  const where = nameOrPath.includes('/')
    ? `at ${nameOrPath}`
    : `${nameOrPath} on PATH, in /usr/bin or /usr/local/bin`;
  throw new Error(`no executable ${where}: ${installHint(nameOrPath)}`);
}

async function locate(nameOrPath: string): Promise<string | undefined> {
  if (nameOrPath.includes('/')) return (await isExecutable(nameOrPath)) ? nameOrPath : undefined;
  const onPath = await findOnPath(nameOrPath);
  if (onPath !== undefined) return onPath;
  for (const directory of FALLBACK_DIRECTORIES) {
    const candidate = join(directory, nameOrPath);
    if (await isExecutable(candidate)) return candidate;
  }
  return undefined;
}

async function findOnPath(name: string): Promise<string | undefined> {
  // The shell resolves PATH for us, so this module never reads the environment itself.
  try {
    const { stdout } = await execFileAsync('/bin/sh', ['-c', 'command -v "$1"', 'sh', name], {
      timeout: 5000,
    });
    const found = stdout.trim();
    return found.startsWith('/') && (await isExecutable(found)) ? found : undefined;
  } catch {
    return undefined;
  }
}

async function isExecutable(path: string): Promise<boolean> {
  try {
    await access(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

async function readServerVersion(serverPath: string): Promise<ServerIdentity> {
  let stdout: string;
  try {
    ({ stdout } = await execFileAsync(serverPath, ['--version'], { timeout: 10_000 }));
  } catch (error) {
    throw new Error(`could not run '${serverPath} --version': ${installHint(serverPath)}`, { cause: error });
  }
  const server = parseVersionOutput(stdout);
  if (server === undefined) {
    throw new Error(
      `unexpected output from '${serverPath} --version' (not Redis or Valkey): ${stdout.trim()}: ${installHint(serverPath)}`,
    );
  }
  return server;
}
