import { type ChildProcess, spawn } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { afterEach, describe, expect, it } from 'vitest';
import { cpuWaitByGroup } from '../../src/bench/proc-stats.js';

describe("the bench's reading of how long processes waited for a CPU", () => {
  const children: ChildProcess[] = [];
  afterEach(() => {
    for (const child of children.splice(0)) child.kill('SIGKILL');
  });

  it('sums the run-queue delay of processes that outnumber the cores, and reads 0 for one gone', async () => {
    // One busy loop more than there are cores: some are always runnable without a core. Each ends
    // by itself after 2 s should the test not kill it.
    const busy = 'const end = Date.now() + 2000; while (Date.now() < end);';
    for (let index = 0; index <= availableParallelism(); index++) {
      children.push(spawn(process.execPath, ['-e', busy], { stdio: 'ignore' }));
    }
    await new Promise((resolve) => setTimeout(resolve, 600));
    const pids = children.map((child) => child.pid!);
    const waited = await cpuWaitByGroup({ busy: pids, gone: [2 ** 22 + 1] });
    expect(waited.gone).toBe(0);
    expect(waited.busy).toBeGreaterThan(0);
  });
});
