import { defineConfig } from 'vitest/config';
import { BaseSequencer, type TestSpecification } from 'vitest/node';
import type { TestServerName } from './test/integration/support/servers.js';

/**
 * Files that measure how long a client waits: they run first, with only light neighbours. The
 * latency-budget test asserts a p99 within 10 ms of its budget, which holds with the machine to
 * itself (about 9 ms) and not next to a file that keeps a core busy (16 ms seen).
 */
const QUIET = ['test/integration/client-latency-budget.test.ts', 'test/integration/node-leases.test.ts'];

/**
 * The files that run on every server of the matrix (Redis 7.0, Valkey 8, Valkey 9): the ones that move
 * keys through MIGRATE and SETSLOT, across failovers, crashes, client traffic and ACL users, where
 * servers differ. Every other file runs on Redis 7.0 only (test/integration/support/servers.ts).
 */
const SERVER_MATRIX = [
  'test/integration/migration.test.ts',
  'test/integration/interruption.test.ts',
  'test/integration/crash-recovery.test.ts',
  'test/integration/failover.test.ts',
  'test/integration/client-traffic.test.ts',
  'test/integration/protected-clusters.test.ts',
  'test/integration/setslot-replication.test.ts',
  'test/integration/batch-clock.test.ts',
  'test/integration/slot-counts.test.ts',
  'test/integration/set-slots.test.ts',
];

/** Files about what only Valkey 9 has (atomic slot migration): they run in project valkey9 only. */
const VALKEY9_ONLY = ['test/integration/atomic-engine.test.ts', 'test/integration/server-tasks.test.ts'];

/**
 * The files that take longest, longest first (measured alone on a quiet 2-core machine). Started
 * first, they overlap everything else; started last, as vitest's own order by file size would start
 * bench-smoke and demo, they run alone at the end. (vitest orders by the durations it cached on an
 * earlier run, but CI starts from a fresh `npm ci`, without that cache.)
 */
const SLOWEST_FIRST = [
  'test/integration/sentinel-control.test.ts',
  'test/integration/control-outage.test.ts',
  'test/integration/bench-smoke.test.ts',
  'test/integration/plans.test.ts',
  'test/integration/crash-recovery.test.ts',
  'test/integration/demo.test.ts',
  'test/integration/secrets.test.ts',
  'test/integration/node-caps.test.ts',
  'test/integration/prometheus.test.ts',
  'test/integration/protected-clusters.test.ts',
  'test/integration/hostnames.test.ts',
  'test/integration/tls.test.ts',
  'test/integration/client-traffic.test.ts',
  'test/integration/api-fuzz.test.ts',
  'test/integration/status-page.test.ts',
  'test/integration/cli.test.ts',
  'test/integration/throttle.test.ts',
];

class SlowestFirstSequencer extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const rank = (file: TestSpecification) => {
      const index = SLOWEST_FIRST.findIndex((path) => file.moduleId.endsWith(path));
      return index === -1 ? SLOWEST_FIRST.length : index;
    };
    const sorted = await super.sort(files);
    return sorted
      .map((file, order) => ({ file, order }))
      .sort((a, b) => rank(a.file) - rank(b.file) || a.order - b.order)
      .map(({ file }) => file);
  }
}

/** What every file runs with, in any project. */
const EACH_FILE = { testTimeout: 60_000, hookTimeout: 120_000 };

/** A project's server: the setup file points the sandbox at it before each file. */
function onServer(server: TestServerName) {
  return { provide: { sandboxServer: server }, setupFiles: ['./test/integration/support/use-server.ts'] };
}

export default defineConfig({
  test: {
    // Once for the run (the projects below do not inherit it: each would run it again).
    globalSetup: ['./test/global-setup.ts'],
    // Integration files each start their own servers; two at a time fit a 2-core machine.
    maxWorkers: 2,
    sequence: { sequencer: SlowestFirstSequencer },
    reporters: ['default', './test/summary-reporter.ts'],
    // Groups run one after the other (sequence.groupOrder), each with the same two workers: the quiet
    // files first, then every other file on Redis 7.0 and the matrix's files on the two Valkeys.
    projects: [
      {
        test: {
          ...EACH_FILE,
          ...onServer('redis7'),
          name: 'quiet',
          include: QUIET,
          sequence: { groupOrder: 0 },
        },
      },
      {
        test: {
          ...EACH_FILE,
          ...onServer('redis7'),
          name: 'rest',
          include: ['test/**/*.test.ts'],
          exclude: [...QUIET, ...VALKEY9_ONLY],
          // One process per worker for all its files, not one per file: importing fastify, BullMQ
          // and ioredis again for every file cost about a CPU second each.
          isolate: false,
          sequence: { groupOrder: 1 },
        },
      },
      ...(['valkey8', 'valkey9'] as const).map((server) => ({
        test: {
          ...EACH_FILE,
          ...onServer(server),
          name: server,
          include: server === 'valkey9' ? [...SERVER_MATRIX, ...VALKEY9_ONLY] : SERVER_MATRIX,
          isolate: false,
          sequence: { groupOrder: 1 },
        },
      })),
    ],
  },
});
