/**
 * `npm run bench` still runs end to end: a tiny scale of the hot slot and of the rebalance onto an
 * empty master (3 -> 4 masters), slotfleet at its defaults and redis-cli side by side, each run
 * verified, with what a client saw meanwhile overall and per master; the enqueue and the queue floor;
 * the frontier printed and its JSON written. The figures are not checked here: speed is measured by
 * the bench itself, not by tests.
 *
 * The wide case (12 -> 16 masters) is the same kind of move as the rebalance, through the same code,
 * on a cluster four times the size: run here it cost about 45 CPU seconds of this 2-core machine
 * (4096 slots twice on 16 nodes, at any scale). What its runs add up to, judged against its own
 * ratio target, is checked on a recorded run in test/unit/bench-judge.test.ts.
 */
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { expectedKeysMoved, migrationCases } from '../../src/bench/cases.js';
import { runScript } from './support/run-slotfleet.js';

const TOOLS = ['slotfleet', 'redis-cli-p1000'];
const SCALE = 0.01;

describe('npm run bench', () => {
  let dir: string | undefined;
  /** The bench's default log directory (under the system's temporary directory). */
  let logDir: string | undefined;

  afterAll(async () => {
    for (const path of [dir, logDir]) if (path) await rm(path, { recursive: true, force: true });
  });

  it('runs every kind of case at a tiny scale and writes verified results', async () => {
    dir = await mkdtemp(join(tmpdir(), 'slotfleet-bench-'));
    const run = await runScript(
      'dist/bench/main.js',
      [
        '--cases',
        'hotslot,rebalance,enqueue,queuefloor',
        '--runs',
        '1',
        '--scale',
        String(SCALE),
        '--tools',
        TOOLS.join(','),
      ],
      { cwd: dir, timeoutMs: 540_000 },
    );
    const output = { code: run.code, text: run.stdout + run.stderr };
    expect(output.code, output.text).toBe(0);
    for (const tool of TOOLS) {
      expect(output.text).toMatch(
        new RegExp(`hotslot run 1/1 ${tool}: [\\d.]+ s, 3000 keys, 1 slot, verified true`),
      );
      expect(output.text).toMatch(
        new RegExp(`rebalance run 1/1 ${tool}: [\\d.]+ s, \\d+ keys, 4096 slots, verified true`),
      );
    }
    expect(output.text).toMatch(/hotslot run 1\/1 slotfleet: .*client PING max [\d.]+ ms p99 [\d.]+ ms/);
    const [file] = await readdir(join(dir, 'bench/results'));
    const report = JSON.parse(await readFile(join(dir, 'bench/results', file!), 'utf8'));
    expect(report.settings).toMatchObject({ workers: 2, tools: TOOLS });
    // The headline row: the project's defaults, cold, with no setting but the plumbing.
    expect(report.settings.variants.slotfleet).toMatchObject({ warmupSlots: 0, workerEnv: {}, limits: null });
    // Logs too: the workers run at the default level, writing to files.
    expect(report.settings.workerPlumbing).not.toHaveProperty('SLOTFLEET_LOG_LEVEL');
    logDir = report.settings.logDir as string;
    const runLogs = await readdir(logDir);
    const slotfleetRun = runLogs.find((name) => name.startsWith('slotfleet-'));
    const workerLog = await readFile(join(logDir, slotfleetRun!, 'worker-1.log'), 'utf8');
    expect(workerLog).toMatch(/"level":30,.*"msg":"slot done"/);

    const hot = report.cases.hotslot;
    const rebalance = report.cases.rebalance;
    expect(rebalance).toMatchObject({ keys: 10_000, masters: 3, addedMasters: 1 });
    const expected = expectedKeysMoved(migrationCases(SCALE).find((spec) => spec.name === 'rebalance')!);
    for (const tool of TOOLS) {
      expect(hot.tools[tool]).toMatchObject({ runs: 1, failures: 0, keysMoved: 3000, slotsMoved: 1 });
      expect(rebalance.tools[tool]).toMatchObject({ runs: 1, failures: 0, slotsMoved: 4096 });
      // The new master's share of the keys.
      expect(Math.abs(rebalance.tools[tool].keysMoved - expected.keys)).toBeLessThanOrEqual(
        expected.tolerance,
      );
    }

    // What a client saw during each run, for every tool alike: overall, and per master with its role.
    for (const [name, summary, roles] of [
      ['hotslot', hot, { source: 1, target: 1, bystander: 1 }],
      ['rebalance', rebalance, { source: 3, target: 1 }],
    ] as const) {
      for (const tool of TOOLS) {
        const client = summary.tools[tool].clientLatencyMs;
        expect(client.maxPerRun, `${name} ${tool}`).toHaveLength(1);
        expect(client.maxPerRun[0]).toBeGreaterThanOrEqual(client.p99PerRun[0]);
        expect(client.p99PerRun[0]).toBeGreaterThanOrEqual(0);
        // How long the cluster's servers waited for a CPU meanwhile (their run-queue delay).
        const waited = summary.tools[tool].cpuWaitSecondsPerRun[0];
        expect(Object.keys(waited).sort(), `${name} ${tool}`).toEqual(['cluster', 'cluster targets']);
        expect(waited.cluster).toBeGreaterThanOrEqual(waited['cluster targets']);
        expect(waited['cluster targets']).toBeGreaterThanOrEqual(0);
        const byPort = Object.values(client.byPortPerRun[0]) as {
          role: string;
          p99Ms: number;
          maxMs: number;
        }[];
        const counted: Record<string, number> = {};
        for (const node of byPort) {
          expect(node.maxMs).toBeGreaterThanOrEqual(node.p99Ms);
          expect(node.p99Ms).toBeGreaterThanOrEqual(0);
          counted[node.role] = (counted[node.role] ?? 0) + 1;
        }
        expect(counted, `${name} ${tool}`).toEqual(roles);
        expect(client.byRole.source.maxMedian).toBeGreaterThanOrEqual(client.byRole.source.p99Median);
      }

      // The frontier: one row per tool, in the JSON and at the end of the summary.
      expect(summary.frontier.map((row: { tool: string }) => row.tool)).toEqual(TOOLS);
      for (const row of summary.frontier) {
        expect(row.seconds).toBeGreaterThan(0);
        expect(row.clientMaxMs).toBeGreaterThanOrEqual(row.clientP99Ms);
        expect(row.clientP99Ms).toBeGreaterThanOrEqual(0);
      }
      expect(summary.frontier[1].ratio).toBe(1);
      expect(output.text).toContain(`frontier ${name} (medians; ratio = redis-cli-p1000 time / tool time):`);
      for (const tool of TOOLS)
        expect(output.text).toMatch(new RegExp(`^  ${tool} +[\\d.]+ +[\\d.]+ +[\\d.]+ +[\\d.]+$`, 'm'));
    }
    expect(output.text.lastIndexOf('frontier ')).toBeGreaterThan(output.text.lastIndexOf('  target '));

    // Each target is judged on the slotfleet row's medians, against redis-cli-p1000's.
    const ratio = hot.frontier[0].ratio;
    const p99 = hot.tools.slotfleet.clientLatencyMs.p99Median;
    const p99Limit =
      Math.round((2 * hot.tools['redis-cli-p1000'].clientLatencyMs.p99Median + 1) * 1000) / 1000;
    expect(hot.targets).toEqual([
      { target: 'redis-cli-p1000 / slotfleet >= 1', value: ratio, met: ratio >= 1 },
      {
        target: `slotfleet client p99 <= 2 x redis-cli-p1000's + 1 ms (${p99Limit} ms)`,
        value: p99,
        met: p99 <= p99Limit,
      },
      {
        target: 'slotfleet worker peak RSS < 200 MB',
        value: hot.tools.slotfleet.workerPeakRssMb,
        met: hot.tools.slotfleet.workerPeakRssMb < 200,
      },
      { target: 'every run verified', value: '2/2', met: true },
    ]);
    expect(rebalance.targets[0]).toEqual({
      target: 'redis-cli-p1000 / slotfleet >= 1.5',
      value: rebalance.frontier[0].ratio,
      met: rebalance.frontier[0].ratio >= 1.5,
    });
    expect(output.text).toMatch(/target every run verified: met/);

    expect(report.cases.enqueue.targetMet).toBe(report.cases.enqueue.seconds.median < 2);
    expect(report.cases.enqueue.seconds.median).toBeGreaterThan(0);
    expect(report.cases.queuefloor).toMatchObject({ jobs: 4096 });
    expect(report.cases.queuefloor.cpuSecondsPerRun[0].workers).toBeGreaterThan(0);
  }, 600_000);
});
