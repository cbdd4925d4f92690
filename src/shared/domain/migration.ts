/**
 * A migration is a set of slot moves requested together. Its state is derived from its slots'
 * steps, never stored separately, so it cannot disagree with them. Pure.
 */
import { SLOT_STEPS, SlotStep } from './slot-migration.js';

export const MigrationState = {
  Pending: 'pending',
  Running: 'running',
  Paused: 'paused',
  Done: 'done',
  Failed: 'failed',
  Cancelled: 'cancelled',
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
 * How a migration's slots move; chosen when it is created and recorded in it, so every worker runs
 * its slots the same way.
 *   keys   - key by key (SETSLOT IMPORTING/MIGRATING, MIGRATE batches, SETSLOT NODE), which every
 *            Redis and Valkey supports. Database 0 only.
 *   atomic - the servers' own slot migration (Valkey 9 CLUSTER MIGRATESLOTS, see
 *            server-migrations.ts): the source streams a snapshot of whole slots, every database,
 *            and hands them over at once.
 */
export const MigrationEngine = { Keys: 'keys', Atomic: 'atomic' } as const;
export type MigrationEngine = (typeof MigrationEngine)[keyof typeof MigrationEngine];

/** What a request may ask for: an engine, or auto (atomic where every master supports it). */
export const EngineChoice = { Auto: 'auto', ...MigrationEngine } as const;
export type EngineChoice = (typeof EngineChoice)[keyof typeof EngineChoice];

/**
 * The engine a migration runs with. auto: atomic when every master has atomic slot migration, else
 * keys. An explicit choice is kept as it is; whether the cluster can honour it is the caller's check.
 */
export function resolveEngine(choice: EngineChoice, everyMasterHasAtomic: boolean): MigrationEngine {
  switch (choice) {
    case EngineChoice.Auto:
      return everyMasterHasAtomic ? MigrationEngine.Atomic : MigrationEngine.Keys;
    case EngineChoice.Keys:
    case EngineChoice.Atomic:
      return choice;
    default: {
      const never: never = choice;
      throw new Error(`unhandled engine choice: ${String(never)}`);
    }
  }
}

/** What an operator asked of a migration: run it, hold it, or stop it. */
export const MigrationControl = { Run: 'run', Pause: 'pause', Cancel: 'cancel' } as const;
export type MigrationControl = (typeof MigrationControl)[keyof typeof MigrationControl];

export const ENDED_STEPS: readonly SlotStep[] = [SlotStep.Done, SlotStep.Failed, SlotStep.Cancelled];

/** Done, failed or cancelled: nothing will change the migration any more. */
export const ENDED_STATES: readonly MigrationState[] = [
  MigrationState.Done,
  MigrationState.Failed,
  MigrationState.Cancelled,
];

export function migrationHasEnded(state: MigrationState): boolean {
  return ENDED_STATES.includes(state);
}

/** A slot step after which nothing moves the slot any more; false for a slot with no step. */
export function slotHasEnded(step: SlotStep | undefined): boolean {
  return step !== undefined && ENDED_STEPS.includes(step);
}

/**
 * Once every slot has ended: failed if any slot failed, cancelled if any was cancelled, else done.
 * Before that: paused while the operator holds it, pending while no slot has started, else running.
 */
export function migrationState(
  counts: SlotStepCounts,
  control: MigrationControl = MigrationControl.Run,
): MigrationState {
  const total = SLOT_STEPS.reduce((sum, step) => sum + counts[step], 0);
  const ended = ENDED_STEPS.reduce((sum, step) => sum + counts[step], 0);
  if (ended === total) {
    if (counts[SlotStep.Failed] > 0) return MigrationState.Failed;
    if (counts[SlotStep.Cancelled] > 0) return MigrationState.Cancelled;
    return MigrationState.Done;
  }
  if (control === MigrationControl.Pause) return MigrationState.Paused;
  if (counts[SlotStep.Pending] === total) return MigrationState.Pending;
  return MigrationState.Running;
}

/**
 * How fast an operator lets a migration go, set at creation or on a running migration (PATCH). The
 * rates hold per source node, for the whole fleet; batchKeys replaces the workers' SLOTFLEET_BATCH_KEYS
 * for this migration; maxClientLatencyMs is how long a client of a source node may wait because of
 * the migration (the workers pace their drains to it, see pacing.ts). Unset: no limit (rates), the
 * worker's setting (batchKeys, maxClientLatencyMs).
 */
export interface MigrationLimits {
  readonly maxKeysPerSecond?: number;
  readonly maxBytesPerSecond?: number;
  readonly batchKeys?: number;
  readonly maxClientLatencyMs?: number;
}

export const LIMIT_NAMES = [
  'maxKeysPerSecond',
  'maxBytesPerSecond',
  'batchKeys',
  'maxClientLatencyMs',
] as const;
export type LimitName = (typeof LIMIT_NAMES)[number];

/** A change of limits: a number sets one, null clears it, a missing name keeps it. */
export type LimitsPatch = { readonly [name in LimitName]?: number | null };

/**
 * What each limit accepts. batchKeys: at most 5000, like SLOTFLEET_BATCH_KEYS (a batch is chosen
 * by a script on the source, and Lua's unpack() is bounded).
 */
export const LIMIT_RANGES: Readonly<
  Record<LimitName, { readonly minimum: number; readonly maximum: number }>
> = {
  maxKeysPerSecond: { minimum: 1, maximum: 10_000_000 },
  maxBytesPerSecond: { minimum: 1, maximum: 10 * 1024 ** 3 },
  batchKeys: { minimum: 1, maximum: 5_000 },
  maxClientLatencyMs: { minimum: 1, maximum: 10_000 },
};
