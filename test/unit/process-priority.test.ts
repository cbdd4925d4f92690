/**
 * lowerCpuPriority's decisions, with the two os calls as plain functions (the real calls are
 * checked on `slotfleet worker` processes in test/integration/two-workers.test.ts).
 */
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../../src/shared/logger.js';
import { lowerCpuPriority, type PriorityCalls } from '../../src/shared/process-priority.js';

function fakeOs(current: number, refuse = false): PriorityCalls & { set: number[] } {
  const set: number[] = [];
  return {
    set,
    getPriority: () => current,
    setPriority: (priority) => {
      if (refuse) throw new Error('EACCES');
      set.push(priority);
    },
  };
}

function capturingLog() {
  const lines: { level: number; msg: string }[] = [];
  const sink = new Writable({
    write(chunk, _encoding, done) {
      lines.push(JSON.parse(String(chunk)));
      done();
    },
  });
  return { lines, log: createLogger({ level: 'debug', name: 'priority-test' }, sink) };
}

describe('lowerCpuPriority', () => {
  it.each<[string, number, number, number[], number]>([
    ['a process at 0 goes down to the setting', 0, 10, [10], 10],
    ['one started lower keeps its value', 15, 10, [], 15],
    ['one already at the setting is left alone', 10, 10, [], 10],
    ['SLOTFLEET_NICE=0 changes nothing', 0, 0, [], 0],
  ])('%s', (_name, current, nice, expectedSet, expectedResult) => {
    const os = fakeOs(current);
    const { log } = capturingLog();
    expect(lowerCpuPriority(nice, log, os)).toBe(expectedResult);
    expect(os.set).toEqual(expectedSet);
  });

  it('says what it did, and goes on with a warning when the kernel refuses', async () => {
    const lowered = capturingLog();
    lowerCpuPriority(10, lowered.log, fakeOs(0));
    const refused = capturingLog();
    expect(lowerCpuPriority(10, refused.log, fakeOs(0, true))).toBe(0);
    await new Promise((resolve) => setImmediate(resolve));
    expect(lowered.lines.map((line) => line.msg)).toEqual([
      'CPU priority lowered: the cluster nodes on this host get a core first',
    ]);
    expect(refused.lines).toMatchObject([
      { level: 40, msg: expect.stringContaining('could not lower the CPU priority') },
    ]);
  });
});
