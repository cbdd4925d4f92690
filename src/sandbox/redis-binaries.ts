/**
 * Locates redis-server and redis-cli for the sandbox. Integration tests must fail loudly,
 * never skip, when Redis is missing, so every failure here names the install command.
 */
import { execFile } from 'node:child_process';
import { constants } from 'node:fs';
import { access } from 'node:fs/promises';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

export interface RedisBinaries {
  serverPath: string;
  cliPath: string;
  /** The redis-server version, e.g. `7.0.15`. */
  version: string;
}

export interface RedisBinariesOptions {
  /** Use this redis-server instead of searching PATH, /usr/bin and /usr/local/bin. */
  serverPath?: string;
  /** Use this redis-cli instead of searching PATH, /usr/bin and /usr/local/bin. */
  cliPath?: string;
}

const INSTALL_HINT =
  "install it with 'sudo apt-get install redis-server' (Debian/Ubuntu; provides redis-server and redis-cli 7.0+)";
const MINIMUM_MAJOR_VERSION = 7;
const FALLBACK_DIRECTORIES = ['/usr/bin', '/usr/local/bin'];

let defaultLookup: Promise<RedisBinaries> | undefined;

/**
 * Finds both binaries and checks that redis-server is 7.0 or newer (the sandbox relies on
 * `enable-debug-command`, `SET ... PXAT` and multi-part AOF).
 */
export function requireRedisBinaries(options: RedisBinariesOptions = {}): Promise<RedisBinaries> {
  if (options.serverPath !== undefined || options.cliPath !== undefined) {
    return lookUpBinaries(options);
  }
  // The default lookup spawns two processes; every RedisProcess.start asks for it.
  defaultLookup ??= lookUpBinaries(options).catch((error: unknown) => {
    defaultLookup = undefined;
    throw error;
  });
  return defaultLookup;
}

async function lookUpBinaries(options: RedisBinariesOptions): Promise<RedisBinaries> {
  const serverPath = await resolveBinary('redis-server', options.serverPath);
  const cliPath = await resolveBinary('redis-cli', options.cliPath);
  const version = await readServerVersion(serverPath);
  const major = Number(version.split('.')[0]);
  if (!Number.isFinite(major) || major < MINIMUM_MAJOR_VERSION) {
    throw new Error(
      `redis-server ${version} at ${serverPath} is too old (slotfleet needs 7.0+): ${INSTALL_HINT}`,
    );
  }
  return { serverPath, cliPath, version };
}

async function resolveBinary(name: string, explicitPath: string | undefined): Promise<string> {
  if (explicitPath !== undefined) {
    if (await isExecutable(explicitPath)) return explicitPath;
    throw new Error(`${name} not found at ${explicitPath}: ${INSTALL_HINT}`);
  }
  const onPath = await findOnPath(name);
  if (onPath !== undefined) return onPath;
  for (const directory of FALLBACK_DIRECTORIES) {
    const candidate = `${directory}/${name}`;
    if (await isExecutable(candidate)) return candidate;
  }
  throw new Error(`${name} not found on PATH: ${INSTALL_HINT}`);
}

async function findOnPath(name: string): Promise<string | undefined> {
  // The shell resolves PATH for us, so this module never reads the environment itself.
  try {
    const { stdout } = await execFileAsync('/bin/sh', ['-c', `command -v ${name}`], { timeout: 5000 });
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

async function readServerVersion(serverPath: string): Promise<string> {
  let stdout: string;
  try {
    ({ stdout } = await execFileAsync(serverPath, ['--version'], { timeout: 10_000 }));
  } catch (error) {
    throw new Error(`could not run '${serverPath} --version': ${INSTALL_HINT}`, { cause: error });
  }
  // "Redis server v=7.0.15 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64 build=..."
  const match = /\bv=(\d+\.\d+\.\d+)/.exec(stdout);
  if (match?.[1] === undefined) {
    throw new Error(`unexpected output from '${serverPath} --version': ${stdout.trim()}: ${INSTALL_HINT}`);
  }
  return match[1];
}
