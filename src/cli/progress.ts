/**
 * Following a migration until it ends: the one poller of GET /v1/migrations/:id, used by
 * `slotfleet ... --wait`, the demo and the tests, and the progress line they print. Which states end
 * a migration is the domain's word (migrationHasEnded), not a list kept here.
 */
import { type MigrationState, migrationHasEnded } from '../shared/domain/migration.js';
import type { MigrationView } from './migration-view.js';

export interface PollOptions<View> {
  /** Pause between two reads. @defaultValue 250 */
  readonly intervalMs?: number;
  /** Throw once this long has passed without an end state. @defaultValue no limit */
  readonly timeoutMs?: number;
  /** Called with every view read, the final one included. */
  readonly onView?: (view: View) => void | Promise<void>;
}

/**
 * Reads the migration until it is in an end state and returns that last view. `read` answers one
 * GET /v1/migrations/:id (over HTTP, or with fastify's inject in tests); an error it throws ends
 * the polling, since a poller that swallowed a 404 or a 401 would wait until its deadline for nothing.
 */
export async function pollMigration<View extends { readonly state: MigrationState }>(
  read: () => Promise<View>,
  options: PollOptions<View> = {},
): Promise<View> {
  const intervalMs = options.intervalMs ?? 250;
  const deadline = Date.now() + (options.timeoutMs ?? Number.POSITIVE_INFINITY);
  for (;;) {
    const view = await read();
    await options.onView?.(view);
    if (migrationHasEnded(view.state)) return view;
    if (Date.now() >= deadline) {
      throw new Error(
        `the migration did not end within ${options.timeoutMs} ms; last: ${JSON.stringify(view)}`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

/** Slots ended (done, failed or cancelled) of all the migration's slots. */
export function slotsEnded(view: Pick<MigrationView, 'slots'>): number {
  return view.slots.done + view.slots.failed + view.slots.cancelled;
}

const BAR_WIDTH = 30;

/** `[#####.....] running slots 120/400  keys 1,234  5,678 keys/s  ETA 12 s`, with the API's rate and ETA. */
export function progressLine(view: MigrationView): string {
  const ended = slotsEnded(view);
  const filled = Math.round((ended / Math.max(view.slotsTotal, 1)) * BAR_WIDTH);
  const eta = view.etaSeconds === null ? '?' : `${view.etaSeconds.toFixed(0)} s`;
  return (
    `[${'#'.repeat(filled)}${'.'.repeat(BAR_WIDTH - filled)}] ${view.state} slots ${ended}/${view.slotsTotal}` +
    `  keys ${view.keysMoved.toLocaleString('en-US')}  ${Math.round(view.keysPerSecond).toLocaleString('en-US')} keys/s  ETA ${eta}`
  );
}

/**
 * An onView for pollMigration that prints the progress line: redrawn in place on a terminal;
 * elsewhere (a log, a pipe) a line at most every `everyMs`, and the last one always.
 */
export function printProgress(
  stream: Pick<NodeJS.WriteStream, 'write' | 'isTTY'>,
  everyMs: number,
): (view: MigrationView) => void {
  let lastPrintedMs = 0;
  return (view) => {
    const line = progressLine(view);
    const ended = migrationHasEnded(view.state);
    if (stream.isTTY) stream.write(`\r${line}${ended ? '\n' : ''}`);
    else if (ended || Date.now() - lastPrintedMs > everyMs) {
      stream.write(`${line}\n`);
      lastPrintedMs = Date.now();
    }
  };
}
