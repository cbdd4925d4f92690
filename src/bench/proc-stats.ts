/**
 * What the bench reads about its processes from Linux /proc: CPU seconds (utime + stime, with the
 * children it waited for), seconds spent runnable but waiting for a CPU (schedstat) and peak RSS
 * (VmHWM). A process that has exited reads as 0.
 */
import { readdir, readFile } from 'node:fs/promises';

/**
 * utime + stime of each process and of its children it waited for (Linux /proc), summed per group, in
 * seconds; `selfGroup`: this process.
 */
export async function cpuByGroup(
  groups: Record<string, number[]>,
  selfGroup: string | undefined,
): Promise<Record<string, number>> {
  const entries = await Promise.all(
    Object.entries(groups).map(async ([group, pids]) => {
      const seconds = await Promise.all(pids.map(cpuSecondsOf));
      return [group, seconds.reduce((sum, value) => sum + value, 0)] as const;
    }),
  );
  const own = process.cpuUsage();
  return {
    ...Object.fromEntries(entries),
    ...(selfGroup === undefined ? {} : { [selfGroup]: (own.user + own.system) / 1e6 }),
  };
}

/**
 * Seconds the threads of each process spent runnable, waiting for a CPU (the run_delay of
 * /proc/<pid>/task/<tid>/schedstat), summed per group. A server that waits for a CPU serves nobody
 * meanwhile: on a machine whose cores are all busy, this is client latency no command shows.
 */
export async function cpuWaitByGroup(groups: Record<string, number[]>): Promise<Record<string, number>> {
  const entries = await Promise.all(
    Object.entries(groups).map(async ([group, pids]) => {
      const seconds = await Promise.all(pids.map(cpuWaitSecondsOf));
      return [group, seconds.reduce((sum, value) => sum + value, 0)] as const;
    }),
  );
  return Object.fromEntries(entries);
}

async function cpuWaitSecondsOf(pid: number): Promise<number> {
  const tids = await readdir(`/proc/${pid}/task`).catch(() => [] as string[]);
  const delays = await Promise.all(
    tids.map(async (tid) => {
      const schedstat = await readFile(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').catch(() => '');
      // Time on a CPU, time waiting on a run queue (both ns), timeslices run.
      return Number(schedstat.split(' ')[1] ?? 0) || 0;
    }),
  );
  return delays.reduce((sum, value) => sum + value, 0) / 1e9;
}

/** The CPU seconds of a child process, last read just before it exits (polled every 50 ms). */
export async function cpuOfChildUntilExit(pid: number): Promise<number> {
  let last = 0;
  for (;;) {
    const seconds = await cpuSecondsOf(pid);
    const alive = await readFile(`/proc/${pid}/stat`, 'utf8').then(
      (stat) => !/\) [ZX] /.test(stat),
      () => false,
    );
    if (!alive) return last;
    last = seconds;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function cpuSecondsOf(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  // Fields after the command name (which may hold spaces): utime and stime are the 12th and 13th,
  // cutime and cstime (children it waited for) the 14th and 15th. The children count: a Valkey 9
  // source sends its slots' snapshot from a fork, whose CPU is the atomic migration's.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticksPerSecond = 100;
  const ticks = [11, 12, 13, 14].reduce((sum, index) => sum + Number(fields[index] ?? 0), 0);
  return ticks / ticksPerSecond;
}

export async function peakRssMb(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
  const kb = Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0);
  return Math.round(kb / 1024);
}
