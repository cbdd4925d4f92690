/**
 * Two worker processes (the real `slotfleet worker` command) against one control Redis share the
 * slot jobs of one migration; every key arrives and both processes did part of the work. SIGTERM
 * stops each within its deadline with exit code 0.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { getPriority } from 'node:os';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { seedDataset, verifyDataset } from '../../src/sandbox/index.js';
import { type Stack, startStack, waitForMigration } from './support/stack.js';

interface WorkerProcess {
  child: ChildProcess;
  lines: string[];
  exited: Promise<number | null>;
}

function spawnWorker(env: Record<string, string>): WorkerProcess {
  const child = spawn(process.execPath, ['dist/cli/main.js', 'worker'], {
    env: { ...process.env, ...env, SLOTFLEET_WORKER_CONCURRENCY: '4' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: string[] = [];
  let partial = '';
  child.stdout?.on('data', (chunk: Buffer) => {
    const text = partial + chunk.toString();
    const parts = text.split('\n');
    partial = parts.pop() ?? '';
    lines.push(...parts);
  });
  child.stderr?.on('data', (chunk: Buffer) => lines.push(`stderr: ${chunk}`));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, lines, exited };
}

async function waitForLine(worker: WorkerProcess, pattern: RegExp, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!worker.lines.some((line) => pattern.test(line))) {
    if (Date.now() > deadline)
      throw new Error(`no line matching ${pattern}; got:\n${worker.lines.join('\n')}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe('two worker processes against one control Redis', () => {
  let stack: Stack;
  let workers: WorkerProcess[] = [];

  beforeAll(async () => {
    stack = await startStack({ workers: 0 });
    // The second asks for a priority of its own; the first runs at the default (SLOTFLEET_NICE 10).
    workers = [spawnWorker(stack.env), spawnWorker({ ...stack.env, SLOTFLEET_NICE: '3' })];
    await Promise.all(workers.map((worker) => waitForLine(worker, /slotfleet worker ready/)));
  });

  afterAll(async () => {
    for (const worker of workers) if (worker.child.exitCode === null) worker.child.kill('SIGKILL');
    await stack?.stop();
  });

  it('lower their CPU priority to SLOTFLEET_NICE, never raising one started lower', () => {
    // A runner started under nice passes its value on: a process may not raise it again.
    const inherited = getPriority();
    expect(workers.map((worker) => getPriority(worker.child.pid))).toEqual([
      Math.max(inherited, 10),
      Math.max(inherited, 3),
    ]);
    if (inherited < 10) {
      expect(workers[0]!.lines.some((line) => line.includes('CPU priority lowered'))).toBe(true);
    }
  });

  it('share one migration, lose nothing, and stop cleanly on SIGTERM', async () => {
    const manifest = await seedDataset(stack.cluster.seedUrl, {
      keys: 10_000,
      types: 'mixed',
      ttlFraction: 0.2,
    });
    const masters = (await stack.cluster.masters()).sort((a, b) => a.port - b.port);
    const target = masters[0]!;
    const sources = masters.slice(1);
    const topology = await stack.cluster.topology();
    expect(topology.filter((node) => node.role === 'master')).toHaveLength(3);
    // 200 slots from each of the two other masters.
    const { slotsOf } = await import('./support/slots.js');
    const moves = await Promise.all(
      sources.map(async (source) => ({
        slots: (await slotsOf(stack.cluster, source.id)).slice(0, 200).join(','),
        target: target.id,
      })),
    );
    const response = await stack.api.app.inject({
      method: 'POST',
      url: '/v1/clusters/default/migrations',
      payload: { moves },
    });
    expect(response.statusCode, response.body).toBe(202);
    const final = await waitForMigration(stack, response.json().id, 120_000);
    expect(final).toMatchObject({ state: 'done', errors: [] });
    expect(final.slots.done).toBe(400);

    const verification = await verifyDataset(stack.cluster.seedUrl, manifest);
    expect(verification).toMatchObject({ missingCount: 0, wrongValueCount: 0, wrongTtlCount: 0 });

    const finishedBy = workers.map(
      (worker) => worker.lines.filter((line) => line.includes('"slot done"')).length,
    );
    expect(finishedBy[0]! + finishedBy[1]!).toBe(400);
    expect(finishedBy[0]).toBeGreaterThan(0);
    expect(finishedBy[1]).toBeGreaterThan(0);

    for (const worker of workers) worker.child.kill('SIGTERM');
    const codes = await Promise.all(workers.map((worker) => worker.exited));
    expect(codes).toEqual([0, 0]);
    for (const worker of workers)
      expect(worker.lines.some((line) => line.includes('shutting down'))).toBe(true);
  });
});
