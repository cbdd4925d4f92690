/**
 * What an operator sees when a command line is wrong: one line, exit code 2, no stack trace; and
 * `slotfleet --version`. The built command runs in a child process (the global setup builds dist/),
 * with no API and no Redis: every case here fails before either is needed.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ApiRefusedError } from '../../src/cli/api-client.js';
import { ExitCode, failureReport, UsageError } from '../../src/cli/command-line.js';
import { ErrorCode, SlotfleetError } from '../../src/shared/errors.js';
import { runSlotfleet } from '../integration/support/run-slotfleet.js';

const env = {
  ...Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('SLOTFLEET_'))),
  // Nothing listens there: a command that got past its arguments would fail with exit code 1.
  SLOTFLEET_API_URL: 'http://127.0.0.1:9',
};

describe('a command line slotfleet cannot run', () => {
  it.each([
    [['rebalance', '--bogus'], /^slotfleet rebalance: Unknown option '--bogus'/],
    [['status', '--cluster'], /^slotfleet status: Option '--cluster <value>' argument missing/],
    [['fix', 'extra', '--dry-run=yes'], /^slotfleet fix: Option '--dry-run' does not take an argument/],
    [['limit', 'm1', '--batch-keys', 'many'], /^slotfleet limit: --batch-keys takes a whole number/],
    [['demo', '--keys', 'lots'], /^slotfleet demo: --keys must be a whole number above 0/],
    [['demo', '--workers'], /^slotfleet demo: Option '--workers <value>' argument missing/],
    [['api', '--port', '80'], /^slotfleet api: Unknown option '--port'/],
    [['worker', 'now'], /^slotfleet worker: Unexpected argument 'now'/],
    [['rebalanse'], /^slotfleet: unknown command "rebalanse"/],
  ])('slotfleet %j: one line, exit code 2', async (args, line) => {
    const run = await runSlotfleet(args, env, 30_000);
    expect(run.code, run.stderr).toBe(ExitCode.Usage);
    expect(run.stdout).toBe('');
    expect(run.stderr).toMatch(line);
    expect(run.stderr.trimEnd().split('\n')).toHaveLength(1);
    expect(run.stderr).not.toMatch(/\n\s+at /);
  });

  it('--version prints the version in package.json', async () => {
    const { version } = JSON.parse(readFileSync('package.json', 'utf8'));
    const run = await runSlotfleet(['--version'], env, 30_000);
    expect(run).toEqual({ code: ExitCode.Ok, stdout: `${version}\n`, stderr: '' });
  });

  it('a command that gets past its arguments fails with its own exit code, in one line', async () => {
    const run = await runSlotfleet(['status'], env, 30_000);
    expect(run.code).toBe(ExitCode.Failed);
    expect(run.stderr).toMatch(/^slotfleet: CONNECTION: cannot reach the API at http:\/\/127.0.0.1:9 /);
    expect(run.stderr.trimEnd().split('\n')).toHaveLength(1);
  });
});

describe('failureReport', () => {
  const bug = new TypeError('x is undefined');
  it.each([
    [
      'a usage mistake',
      new UsageError('--keys must be a whole number above 0'),
      ExitCode.Usage,
      'slotfleet demo: --keys must be a whole number above 0 (see slotfleet demo --help)\n',
    ],
    [
      'a refusal of the API',
      new ApiRefusedError(503, ErrorCode.ControlStore, 'the API refused (503 CONTROL_STORE): down'),
      ExitCode.Refused,
      'slotfleet: the API refused (503 CONTROL_STORE): down\n',
    ],
    [
      'a SlotfleetError, on one line',
      new SlotfleetError(ErrorCode.Config, 'SLOTFLEET_API_PORT: not a port\nuse 1 to 65535'),
      ExitCode.Failed,
      'slotfleet: CONFIG: SLOTFLEET_API_PORT: not a port use 1 to 65535\n',
    ],
    ['a bug, with its stack', bug, ExitCode.Failed, `slotfleet: ${bug.stack}\n`],
  ])('%s', (_, error, exitCode, text) => {
    expect(failureReport(error, 'demo')).toEqual({ exitCode, text });
  });
});
