/**
 * slotfleet's processes yield the CPU to the cluster they serve. On a host where a worker shares
 * cores with the cluster's nodes (the demo, the bench, a small VM), a worker that is busy when a
 * node wakes up to answer a client makes that client wait for a core: on the bench's 2 cores that
 * was most of what clients waited (docs/performance.md). At a higher nice value the kernel gives
 * the node the core first. Where slotfleet has cores of its own, it changes nothing.
 *
 * Only ever lowered: an unprivileged process cannot raise its priority again, and one started
 * lower (`nice -n 15 slotfleet worker`) keeps what its operator chose.
 */
import { getPriority, setPriority } from 'node:os';
import type { Logger } from './logger.js';

export interface PriorityCalls {
  getPriority(): number;
  setPriority(priority: number): void;
}

const OS_CALLS: PriorityCalls = { getPriority: () => getPriority(), setPriority: (p) => setPriority(p) };

/** @returns the nice value the process runs at from now on. */
export function lowerCpuPriority(nice: number, log: Logger, calls: PriorityCalls = OS_CALLS): number {
  const current = calls.getPriority();
  if (current >= nice) {
    log.debug({ nice: current }, 'CPU priority: already at or below SLOTFLEET_NICE, kept');
    return current;
  }
  try {
    calls.setPriority(nice);
  } catch (error) {
    log.warn(
      { nice: current, wanted: nice, err: (error as Error).message },
      'could not lower the CPU priority (SLOTFLEET_NICE): running at the current one',
    );
    return current;
  }
  log.info({ nice, was: current }, 'CPU priority lowered: the cluster nodes on this host get a core first');
  return nice;
}
