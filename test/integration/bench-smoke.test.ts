/**
 * `npm run bench` still runs end to end: a tiny scale of the hot slot (slotfleet and redis-cli side by
 * side, each run verified), the enqueue and the queue floor, with its JSON written. The figures are
 * not checked here: speed is measured by the bench itself, not by tests.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const BENCH = resolve('dist/bench/main.js');

describe('npm run bench', () => {
  let dir: string | undefined;

  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('runs every kind of case at a tiny scale and writes verified results', async () => {
    dir = await mkdtemp(join(tmpdir(), 'slotfleet-bench-'));
    const args = [
      BENCH,
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
    ];
    const output = await new Promise<{ code: number | null; text: string }>((done, fail) => {
      const child = spawn(process.execPath, args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
      let text = '';
      child.stdout.on('data', (chunk) => {
        text += chunk;
      });
      child.stderr.on('data', (chunk) => {
        text += chunk;
      });
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        fail(new Error(`bench did not finish in 150 s:\n${text}`));
      }, 150_000);
      child.once('exit', (code) => {
        clearTimeout(timer);
        done({ code, text });
      });
    });
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
    expect(report.cases.enqueue.seconds.median).toBeGreaterThan(0);
    expect(report.cases.queuefloor).toMatchObject({ jobs: 4096 });
    expect(report.cases.queuefloor.cpuSecondsPerRun[0].workers).toBeGreaterThan(0);
  }, 180_000);
});
