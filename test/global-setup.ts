/**
 * Builds dist/ before any test runs: integration tests start real worker processes from
 * dist/cli/main.js, and a stale build would test yesterday's code. Emitted without type checking
 * (--noCheck, half the time): `npm test` type-checks src and test first (`npm run typecheck`), and
 * `npm run build` still checks what it ships.
 */
import { execFileSync } from 'node:child_process';

export default function setup(): void {
  execFileSync(
    process.execPath,
    ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.build.json', '--noCheck'],
    { stdio: 'inherit' },
  );
}
