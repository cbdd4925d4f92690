/**
 * Builds dist/ before any test runs: integration tests start real worker processes from
 * dist/cli/main.js, and a stale build would test yesterday's code.
 */
import { execFileSync } from 'node:child_process';

export default function setup(): void {
  execFileSync(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.build.json'], {
    stdio: 'inherit',
  });
}
