/**
 * The bench's cases: what each one seeds, which move it times, and how many keys that move must
 * carry for a run to count. Pure data; main.ts runs them, judge.ts judges them.
 */

export type MoveKind = 'rebalance' | 'hot-slot';

export interface MigrationCase {
  readonly name: string;
  readonly keys: number;
  readonly valueBytes: number;
  /** Masters the cluster is created with and seeded on (no replicas). */
  readonly masters: number;
  /** Empty masters added after seeding, for the rebalance to fill. */
  readonly addedMasters: number;
  /**
   * rebalance: `--cluster rebalance --cluster-use-empty-masters` / POST rebalance onto the added
   * masters. hot-slot: HOT_SLOT, holding every key, to another master (reshard --cluster-slots 1).
   */
  readonly move: MoveKind;
  /**
   * redis-cli-p1000's median time / slotfleet's at least, with slotfleet's client p99 within the p99
   * rule (judge.ts). Undefined: the case has no ratio target.
   */
  readonly ratioAtLeast?: number;
}

/** The slot the hot-slot case fills and moves. */
export const HOT_SLOT = 0;

export const MIGRATION_CASE_NAMES = ['rebalance', 'wide', 'hotslot', 'bigvalues'] as const;
/** Cases that time the API alone (enqueue) and the queue alone (queuefloor), no migration. */
export const OTHER_CASE_NAMES = ['enqueue', 'queuefloor'] as const;
export const CASE_NAMES = [...MIGRATION_CASE_NAMES, ...OTHER_CASE_NAMES] as const;

/** The migration cases at `scale` (1: the sizes below), in the order they run. */
export function migrationCases(scale: number): MigrationCase[] {
  const keys = (atScale1: number) => Math.max(1, Math.round(atScale1 * scale));
  return [
    {
      name: 'rebalance',
      keys: keys(1_000_000),
      valueBytes: 64,
      masters: 3,
      addedMasters: 1,
      move: 'rebalance',
      ratioAtLeast: 1.5,
    },
    // Many masters give to several at once: where a fleet running slots in parallel should gain most.
    {
      name: 'wide',
      keys: keys(400_000),
      valueBytes: 64,
      masters: 12,
      addedMasters: 4,
      move: 'rebalance',
      ratioAtLeast: 3,
    },
    {
      name: 'hotslot',
      keys: keys(300_000),
      valueBytes: 64,
      masters: 3,
      addedMasters: 0,
      move: 'hot-slot',
      ratioAtLeast: 1,
    },
    {
      name: 'bigvalues',
      keys: keys(50_000),
      valueBytes: 16_384,
      masters: 3,
      addedMasters: 1,
      move: 'rebalance',
    },
  ];
}

/**
 * The keys the move must carry, and how far off a run may be: a tool that moved the wrong slots (or
 * none) must not pass as fast. A rebalance moves the added masters' share of the slots; the keys in
 * those slots vary as a binomial draw, so at a small scale the tolerance is 4 standard deviations
 * rather than 5%, or a correct run would fail now and then.
 */
export function expectedKeysMoved(spec: MigrationCase): { keys: number; tolerance: number } {
  switch (spec.move) {
    case 'hot-slot':
      return { keys: spec.keys, tolerance: Math.round(spec.keys * 0.05) };
    case 'rebalance': {
      const share = spec.addedMasters / (spec.masters + spec.addedMasters);
      const keys = spec.keys * share;
      const deviation = Math.sqrt(spec.keys * share * (1 - share));
      return { keys: Math.round(keys), tolerance: Math.round(Math.max(keys * 0.05, 4 * deviation)) };
    }
    default: {
      const never: never = spec.move;
      throw new Error(`unhandled move: ${never}`);
    }
  }
}
