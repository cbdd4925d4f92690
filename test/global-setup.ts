/**
 * Once per run, before any test file:
 *  - builds dist/: integration tests start real worker processes from dist/cli/main.js, and a stale
 *    build would test yesterday's code. Emitted without type checking (--noCheck, half the time):
 *    `npm test` type-checks src and test first (`npm run typecheck`), and `npm run build` still
 *    checks what it ships;
 *  - finds the three servers of the matrix (test/integration/support/servers.ts), starts each once
 *    and provides what each said it is; a missing one fails the run with its install command.
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
  const servers = await requireTestServers();
  project.provide('sandboxServers', servers);
  const lines = Object.entries(servers).map(
    ([name, server]) => `  ${serverLabel(name as TestServerName, server)}: ${server.serverPath}`,
  );
  process.stdout.write(`servers:\n${lines.join('\n')}\n`);
}
