/**
 * The CLI's --engine and what it prints about engines: the flag's values (a bad one is one line and
 * exit code 2), the body each creating command sends (to a loopback HTTP server standing in for the
 * API), the engine on every migration line, and an atomic migration's server tasks in `status ID`.
 */
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { ExitCode, UsageError } from '../../src/cli/command-line.js';
import type { MigrationView, ServerTaskView } from '../../src/cli/migration-view.js';
import {
  describeMigration,
  describeServerTasks,
  type OperatorCommand,
  parseEngine,
  runOperatorCommand,
} from '../../src/cli/operator.js';
import { loadConfig } from '../../src/shared/config.js';
import { runSlotfleet } from '../integration/support/run-slotfleet.js';

describe('parseEngine', () => {
  it.each(['auto', 'keys', 'atomic'])('%s', (value) => {
    expect(parseEngine(value)).toBe(value);
  });

  it('undefined when the flag is not given', () => {
    expect(parseEngine(undefined)).toBeUndefined();
  });

  it.each(['', 'Atomic', 'fast', 'keys,atomic'])('%j is a usage error naming the values', (value) => {
    expect(() => parseEngine(value)).toThrow(UsageError);
    expect(() => parseEngine(value)).toThrow(/^--engine takes auto, keys, atomic, not "/);
  });
});

describe('slotfleet <command> --engine with a bad value', () => {
  const env = {
    ...Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('SLOTFLEET_'))),
    SLOTFLEET_API_URL: 'http://127.0.0.1:9',
  };
  it.each([
    ['rebalance', '--engine', 'fast'],
    ['drain', '10.0.0.1:7000', '--engine=classic'],
  ])('%s: one line, exit code 2', async (...args) => {
    const run = await runSlotfleet(args, env, 30_000);
    expect(run.code, run.stderr).toBe(ExitCode.Usage);
    expect(run.stdout).toBe('');
    expect(run.stderr).toMatch(new RegExp(`^slotfleet ${args[0]}: --engine takes auto, keys, atomic, not "`));
    expect(run.stderr.trimEnd().split('\n')).toHaveLength(1);
  });
});

describe('the body each command sends', () => {
  let server: Server;
  const bodies: { path: string; body: Record<string, unknown> }[] = [];

  beforeAll(async () => {
    server = createServer(async (request: IncomingMessage, response) => {
      let text = '';
      for await (const chunk of request) text += chunk;
      bodies.push({ path: request.url ?? '', body: JSON.parse(text || '{}') });
      response.writeHead(200, { 'content-type': 'application/json' });
      response.end(
        JSON.stringify({ dryRun: true, cluster: 'default', engine: 'keys', slots: 0, keys: 0, plan: [] }),
      );
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  });

  afterAll(async () => {
    await new Promise((resolve) => server.close(resolve));
  });

  async function run(name: OperatorCommand, args: string[]) {
    const { port } = server.address() as AddressInfo;
    const config = loadConfig({ SLOTFLEET_API_URL: `http://127.0.0.1:${port}` });
    const write = vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
    try {
      const code = await runOperatorCommand(name, [...args, '--dry-run'], config);
      return { code, printed: write.mock.calls.map(([text]) => String(text)).join('') };
    } finally {
      write.mockRestore();
    }
  }

  // A dry run prints the plan table (its engine is in --json): only the body is checked here.
  it.each<[OperatorCommand, string[], string]>([
    ['rebalance', ['--engine', 'atomic'], '/v1/clusters/default/rebalance'],
    [
      'reshard',
      ['--from', 'all', '--to', '10.0.0.1:7000', '--slots', '10', '--engine', 'keys'],
      '/v1/clusters/default/reshard',
    ],
    ['drain', ['10.0.0.1:7000', '--engine', 'auto'], '/v1/clusters/default/drain'],
    ['fix', ['--engine', 'keys'], '/v1/clusters/default/fix'],
  ])('%s sends --engine as engine', async (name, args, path) => {
    const { code, printed } = await run(name, args);
    expect(code).toBe(ExitCode.Ok);
    const sent = bodies.at(-1)!;
    expect(sent.path).toBe(path);
    expect(sent.body).toMatchObject({ engine: args[args.indexOf('--engine') + 1], dryRun: true });
    expect(printed).toMatch(/^0 slots, 0 keys \(dry run: nothing enqueued\)$/m);
  });

  it('without --engine the body has no engine (an Idempotency-Key hashes the body)', async () => {
    await run('rebalance', []);
    expect(bodies.at(-1)!.body).toEqual({ dryRun: true });
  });
});

function view(overrides: Partial<MigrationView> = {}): MigrationView {
  return {
    id: 'mig-1',
    cluster: 'default',
    kind: 'migrations',
    state: 'running',
    control: 'run',
    slotsTotal: 200,
    slots: {
      pending: 0,
      importing: 0,
      migrating: 100,
      draining: 0,
      finalizing: 0,
      done: 100,
      failed: 0,
      cancelled: 0,
    },
    keysMoved: 5000,
    createdAt: '2026-01-01T00:00:00.000Z',
    updatedAt: '2026-01-01T00:00:01.000Z',
    startedAt: '2026-01-01T00:00:00.000Z',
    limits: { maxKeysPerSecond: null, maxBytesPerSecond: null, batchKeys: null, maxClientLatencyMs: null },
    engine: 'atomic',
    plan: [],
    errors: [],
    keysRemaining: 5000,
    keysPerSecond: 5000,
    etaSeconds: 1,
    ...overrides,
  };
}

const TASK: ServerTaskView = {
  name: 'f'.repeat(40),
  source: '10.0.0.1:7000',
  target: '10.0.0.3:7000',
  slots: '0-99,200',
  state: 'snapshotting',
  outcome: 'in-progress',
  message: '',
};

describe('what status prints about engines and server tasks', () => {
  it('the migration line names its engine', () => {
    expect(describeMigration(view())).toMatch(/^mig-1 {2}running {2}engine atomic {2}slots done 100\/200/);
    expect(describeMigration(view({ engine: 'keys' }))).toMatch(/ engine keys /);
  });

  it.each<[string, Partial<MigrationView>, string[]]>([
    [
      'one line per task, with its message when it has one',
      {
        serverTasks: [
          TASK,
          {
            ...TASK,
            name: 'e'.repeat(40),
            slots: '300',
            state: 'failed',
            outcome: 'failed',
            message: 'Data was flushed',
          },
        ],
      },
      [
        `  task ${'f'.repeat(40)} 10.0.0.1:7000 -> 10.0.0.3:7000 slots 0-99,200: snapshotting`,
        `  task ${'e'.repeat(40)} 10.0.0.1:7000 -> 10.0.0.3:7000 slots 300: failed (Data was flushed)`,
      ],
    ],
    ['the cluster did not answer', { serverTasks: null }, ['  server tasks: the cluster did not answer']],
    ['no task yet', { serverTasks: [] }, ['  server tasks: none running or ended since it was created']],
    ['ended', { state: 'done', serverTasks: [] }, []],
    ['the keys engine', { engine: 'keys', serverTasks: [] }, []],
    ['an API that does not send them', {}, []],
  ])('%s', (_, overrides, lines) => {
    expect(describeServerTasks(view(overrides))).toEqual(lines);
  });
});
