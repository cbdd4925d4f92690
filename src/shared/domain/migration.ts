/**
 * A migration is a set of slot moves requested together. Its state is derived from its slots'
 * steps, never stored separately, so it cannot disagree with them. Pure.
 */
import { SLOT_STEPS, SlotStep } from './slot-migration.js';

export const MigrationState = {
  Pending: 'pending',
  Running: 'running',
  Done: 'done',
  Failed: 'failed',
} as const;
export type MigrationState = (typeof MigrationState)[keyof typeof MigrationState];

export type SlotStepCounts = Record<SlotStep, number>;

export function countSteps(steps: Iterable<string>): SlotStepCounts {
  const counts = Object.fromEntries(SLOT_STEPS.map((step) => [step, 0])) as SlotStepCounts;
  for (const step of steps) {
    if (step in counts) counts[step as SlotStep] += 1;
  }
  return counts;
}

/**
 * pending: no slot has started; running: some slot is between pending and an end; done: every slot
 * is done; failed: no slot can make progress any more and at least one failed.
 */
export function migrationState(counts: SlotStepCounts): MigrationState {
  const total = SLOT_STEPS.reduce((sum, step) => sum + counts[step], 0);
  const ended = counts[SlotStep.Done] + counts[SlotStep.Failed];
  if (ended === total) return counts[SlotStep.Failed] > 0 ? MigrationState.Failed : MigrationState.Done;
  if (counts[SlotStep.Pending] + counts[SlotStep.Failed] === total && counts[SlotStep.Failed] === 0) {
    return MigrationState.Pending;
  }
  return MigrationState.Running;
}
