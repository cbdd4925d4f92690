/**
 * Runs the built `slotfleet` command (or another built script) as a child process and collects its
 * output, with a deadline.
 */
import { spawn } from 'node:child_process';

export interface SlotfleetRun {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

export function runSlotfleet(
  args: readonly string[],
  env: NodeJS.ProcessEnv,
  timeoutMs = 120_000,
): Promise<SlotfleetRun> {
  return runScript('dist/cli/main.js', args, { env, timeoutMs });
}

/** `node <script> <args>`; the script's path is taken from the repository root. */
export function runScript(
  script: string,
  args: readonly string[],
  options: { env?: NodeJS.ProcessEnv; cwd?: string; timeoutMs?: number } = {},
): Promise<SlotfleetRun> {
  const timeoutMs = options.timeoutMs ?? 120_000;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [`${process.cwd()}/${script}`, ...args], {
      env: options.env ?? process.env,
      ...(options.cwd ? { cwd: options.cwd } : {}),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk) => {
      stdout += chunk;
    });
    child.stderr.on('data', (chunk) => {
      stderr += chunk;
    });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${script} ${args.join(' ')} did not finish in ${timeoutMs} ms`));
    }, timeoutMs);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}
