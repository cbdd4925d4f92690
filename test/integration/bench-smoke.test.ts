/**
 * `npm run bench` still runs end to end: a tiny scale of the hot slot (slotfleet and redis-cli side by
 * side, each run verified, with what a client saw meanwhile), the enqueue and the queue floor, with
 * its JSON written. The figures are not checked here: speed is measured by the bench itself, not by
 * tests.
 */
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runScript } from './support/run-slotfleet.js';

describe('npm run bench', () => {
  let dir: string | undefined;

  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('runs every kind of case at a tiny scale and writes verified results', async () => {
    dir = await mkdtemp(join(tmpdir(), 'slotfleet-bench-'));
    const run = await runScript(
      'dist/bench/main.js',
      [
        '--cases',
        'hotslot,enqueue,queuefloor',
        '--runs',
        '1',
        '--scale',
        '0.01',
        '--tools',
        'slotfleet,redis-cli-p1000',
        '--warmup-slots',
        '16',
      ],
      { cwd: dir, timeoutMs: 150_000 },
    );
    const output = { code: run.code, text: run.stdout + run.stderr };
    expect(output.code, output.text).toBe(0);
    expect(output.text).toMatch(/hotslot run 1\/1 slotfleet: [\d.]+ s, 3000 keys, verified true/);
    expect(output.text).toMatch(/hotslot run 1\/1 redis-cli-p1000: [\d.]+ s, 3000 keys, verified true/);
    const [file] = await readdir(join(dir, 'bench/results'));
    const report = JSON.parse(await readFile(join(dir, 'bench/results', file!), 'utf8'));
    expect(report.settings).toMatchObject({ workers: 2, warmupSlots: 16 });
    const hot = report.cases.hotslot;
    expect(hot.tools.slotfleet).toMatchObject({ runs: 1, failures: 0, keysMoved: 3000 });
    expect(hot.tools['redis-cli-p1000']).toMatchObject({ runs: 1, failures: 0, keysMoved: 3000 });
    expect(hot.ratios['redis-cli-p1000 / slotfleet']).toBeGreaterThan(0);
    // What a client saw during each run, for every tool alike.
    for (const tool of ['slotfleet', 'redis-cli-p1000']) {
      const { maxPerRun, p99PerRun } = hot.tools[tool].clientLatencyMs;
      expect(maxPerRun).toHaveLength(1);
      expect(maxPerRun[0]).toBeGreaterThanOrEqual(p99PerRun[0]);
      expect(p99PerRun[0]).toBeGreaterThanOrEqual(0);
    }
    expect(output.text).toMatch(/hotslot run 1\/1 slotfleet: .*client PING max [\d.]+ ms p99 [\d.]+ ms/);
    // Each of the targets is judged; a tool left out judges nothing.
    expect(hot.targets).toEqual([
      { target: 'redis-cli-p10 / slotfleet >= 4', value: null, met: null },
      {
        target: 'redis-cli-p1000 / slotfleet >= 1',
        value: hot.ratios['redis-cli-p1000 / slotfleet'],
        met: hot.ratios['redis-cli-p1000 / slotfleet'] >= 1,
      },
      { target: 'worker peak RSS < 200 MB', value: hot.tools.slotfleet.workerPeakRssMb, met: true },
    ]);
    expect(output.text).toMatch(/target redis-cli-p10 \/ slotfleet >= 4: not measured/);
    expect(report.cases.enqueue.targetMet).toBe(report.cases.enqueue.seconds.median < 2);
    expect(report.cases.enqueue.seconds.median).toBeGreaterThan(0);
    expect(report.cases.queuefloor).toMatchObject({ jobs: 4096 });
    expect(report.cases.queuefloor.cpuSecondsPerRun[0].workers).toBeGreaterThan(0);
  }, 180_000);
});
