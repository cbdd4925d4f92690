/**
 * Once per run, before any test file:
 *  - builds dist/: integration tests start real worker processes from dist/cli/main.js, and a stale
 *    build would test yesterday's code. Emitted without type checking (--noCheck, half the time):
 *    `npm test` type-checks src and test first (`npm run typecheck`), and `npm run build` still
 *    checks what it ships;
 *  - finds the three servers of the matrix (test/integration/support/servers.ts), starts each once
 *    and provides what each said it is; a missing one fails the run with its install command.
 * `npm test` has run `scripts/setup tests` before (its pretest), which installs what is missing; a
 * vitest run started directly has not, so a failure here points at it.
 */
import { execFileSync } from 'node:child_process';
import type { TestProject } from 'vitest/node';
import { requireTestServers, serverLabel, type TestServerName } from './integration/support/servers.js';

export default async function setup(project: TestProject): Promise<void> {
  execFileSync(
    process.execPath,
    ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.build.json', '--noCheck'],
    { stdio: 'inherit' },
  );
  const servers = await requireTestServers().catch((error: unknown) => {
    throw new Error(
      `${error instanceof Error ? error.message : String(error)}\n` +
        '`npm test` installs what is missing first (bash scripts/setup tests); `bash scripts/setup tests --dry-run` says what it would do',
      { cause: error },
    );
  });
  project.provide('sandboxServers', servers);
  const lines = Object.entries(servers).map(
    ([name, server]) => `  ${serverLabel(name as TestServerName, server)}: ${server.serverPath}`,
  );
  process.stdout.write(`servers:\n${lines.join('\n')}\n`);
}
