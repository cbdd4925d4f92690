/**
 * The servers the integration tests run on. Every file runs on Redis 7.0 (projects `quiet` and
 * `rest`); the files of vitest.config.ts's SERVER_MATRIX, which depend on what a server does with
 * MIGRATE, SETSLOT, failover and ACLs, also run on Valkey 8 (project `valkey8`, Debian's bookworm-backports package)
 * and Valkey 9 (project `valkey9`, built by .ci/valkey9). Each vitest project names its server with
 * `provide: { sandboxServer }`; the global setup finds all three (or fails, naming the command that
 * installs the missing one) and provides where they are and what they said they are.
 */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { inject } from 'vitest';
import {
  describeServer,
  type RedisBinaries,
  type RedisBinariesOptions,
  RedisProcess,
  requireRedisBinaries,
  SERVER_INSTALL_COMMANDS,
  type ServerIdentity,
  type ServerName,
} from '../../../src/sandbox/index.js';

export type TestServerName = keyof typeof SERVER_INSTALL_COMMANDS;

/** A server the tests ran on: its binaries, and what it said it is when started (INFO server). */
export interface TestServer {
  readonly serverPath: string;
  readonly cliPath: string;
  readonly answered: ServerIdentity;
}

declare module 'vitest' {
  interface ProvidedContext {
    /** This project's server (vitest.config.ts). */
    sandboxServer: TestServerName;
    /** Every server of the matrix (global-setup.ts). */
    sandboxServers: Record<TestServerName, TestServer>;
  }
}

const EXPECTED: Record<
  TestServerName,
  { name: ServerName; major: number; choice: () => RedisBinariesOptions }
> = {
  redis7: { name: 'redis', major: 7, choice: () => ({ serverPath: 'redis-server' }) },
  valkey8: { name: 'valkey', major: 8, choice: () => ({ serverPath: 'valkey-server' }) },
  // Where .ci/valkey9 builds it: the script is the one place that knows.
  valkey9: {
    name: 'valkey',
    major: 9,
    choice: () => ({ serverPath: join(valkey9Directory(), 'valkey-server') }),
  },
};

/**
 * Finds every server of the matrix, starts each once to read INFO server, and checks it is the
 * server and major version the project promises. Fails with the install command of each missing one.
 */
export async function requireTestServers(): Promise<Record<TestServerName, TestServer>> {
  const names = Object.keys(EXPECTED) as TestServerName[];
  const results = await Promise.allSettled(names.map((name) => requireTestServer(name)));
  const failures = results.flatMap((result, index) =>
    result.status === 'rejected' ? [`${names[index]}: ${errorMessage(result.reason)}`] : [],
  );
  if (failures.length > 0) {
    throw new Error(
      `the integration tests run on Redis 7.0, Valkey 8 and Valkey 9; missing or wrong:\n  ${failures.join('\n  ')}`,
    );
  }
  return Object.fromEntries(
    names.map((name, index) => [name, (results[index] as PromiseFulfilledResult<TestServer>).value]),
  ) as Record<TestServerName, TestServer>;
}

/** In a test file: the server this project runs, as it said it is when the global setup started it. */
export function projectServer(): ServerIdentity {
  return inject('sandboxServers')[inject('sandboxServer')].answered;
}

/** `valkey 8.0.1 (valkey8)`: how a report names a project's server. */
export function serverLabel(name: TestServerName, server: TestServer | undefined): string {
  return server === undefined ? name : `${describeServer(server.answered)} (${name})`;
}

async function requireTestServer(name: TestServerName): Promise<TestServer> {
  const expected = EXPECTED[name];
  const install = SERVER_INSTALL_COMMANDS[name];
  let binaries: RedisBinaries;
  try {
    binaries = await requireRedisBinaries(expected.choice());
  } catch (error) {
    throw new Error(`${errorMessage(error)}\n    install: ${install}`, { cause: error });
  }
  if (binaries.name !== expected.name || Number(binaries.version.split('.')[0]) !== expected.major) {
    throw new Error(
      `${binaries.serverPath} is ${describeServer(binaries)}, not ${expected.name} ${expected.major}: install: ${install}`,
    );
  }
  const server = await RedisProcess.start({ serverPath: binaries.serverPath });
  try {
    return { serverPath: binaries.serverPath, cliPath: binaries.cliPath, answered: server.server };
  } finally {
    await server.stop();
    await server.removeDir();
  }
}

function valkey9Directory(): string {
  return execFileSync('bash', ['.ci/valkey9', '--where'], { encoding: 'utf8' }).trim();
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
