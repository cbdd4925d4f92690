/**
 * `slotfleet worker` child processes for the demo and the benchmark: the real command, as an
 * operator runs it, not an in-process stand-in. Stopped with SIGTERM (their graceful path) and
 * SIGKILL after a deadline.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface WorkerProcessOptions {
  readonly count: number;
  /** SLOTFLEET_* variables for the workers (cluster, control Redis, prefix...). */
  readonly env: Readonly<Record<string, string>>;
  /**
   * Each worker's output goes to worker-<n>.log here, written by the worker itself (no relay through
   * this process, whose CPU the bench counts apart); without it, only stderr is shown.
   */
  readonly logDir?: string;
  /** Extra node options, e.g. ['--cpu-prof', '--cpu-prof-dir=/tmp/prof'] (not allowed in NODE_OPTIONS). */
  readonly nodeArgs?: readonly string[];
}

const STOP_DEADLINE_MS = 10_000;

export function spawnWorkerProcesses(options: WorkerProcessOptions): ChildProcess[] {
  // The built command: beside this module in dist/, or the repo's dist/ when tests run src/ directly.
  const built = import.meta.url.endsWith('.ts') ? '../../dist/cli/main.js' : '../cli/main.js';
  const main = fileURLToPath(new URL(built, import.meta.url));
  return Array.from({ length: options.count }, (_, index) => {
    const log = options.logDir ? openSync(join(options.logDir, `worker-${index + 1}.log`), 'a') : undefined;
    try {
      return spawn(process.execPath, [...(options.nodeArgs ?? []), main, 'worker'], {
        env: { ...process.env, SLOTFLEET_METRICS_PORT: '0', ...options.env },
        stdio: ['ignore', log ?? 'ignore', log ?? 'inherit'],
      });
    } finally {
      // The child holds its own copy of the descriptor.
      if (log !== undefined) closeSync(log);
    }
  });
}

export async function stopProcesses(children: readonly ChildProcess[]): Promise<void> {
  await Promise.all(
    children.map(
      (child) =>
        new Promise<void>((resolve) => {
          if (child.exitCode !== null || child.signalCode !== null) return resolve();
          const timer = setTimeout(() => child.kill('SIGKILL'), STOP_DEADLINE_MS);
          child.once('exit', () => {
            clearTimeout(timer);
            resolve();
          });
          child.kill('SIGTERM');
        }),
    ),
  );
}
