/** Small checks the integration tests share: whether a process still runs, and a logger they can read. */
import { Writable } from 'node:stream';
import { createLogger, type Logger } from '../../../src/shared/logger.js';

/** Signal 0 checks that a pid exists without touching it. */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** A pino logger whose lines (JSON, one per entry) the test reads from `lines`. */
export function capturedLogger(level: string, name = 'test'): { log: Logger; lines: string[] } {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk, _encoding, done) {
      lines.push(String(chunk));
      done();
    },
  });
  return { log: createLogger({ level, name }, sink), lines };
}
