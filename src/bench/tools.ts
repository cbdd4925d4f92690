/**
 * The tools the bench times, by name. Every slotfleet variant runs the same API and 2 worker
 * processes; they differ only in what the workers are told and how the migration is posted:
 *
 *   slotfleet             the project's defaults, cold workers: no warm-up, and no SLOTFLEET_* setting
 *                         but the plumbing (cluster, control Redis, queue prefix, metrics port 0, log
 *                         level warn, so the workers do not log a line per slot). The headline row.
 *   slotfleet-warm        the same defaults, with workers warmed up as slotfleet-tuned's are: what a
 *                         standing fleet runs at, and against the headline, what a cold start costs.
 *   slotfleet-tuned       concurrency 32 and caps of 32 slots per source, 64 per target, with workers
 *                         warmed up by --warmup-slots slots moved there and back (untimed), as a
 *                         standing fleet's would be.
 *   slotfleet-budget-<N>  the defaults, cold, with the migration posted with
 *                         `limits: { maxClientLatencyMs: N }` (the headline row runs at the
 *                         workers' default, 10 ms).
 *   redis-cli-p10, redis-cli-p1000   `redis-cli --cluster` with --cluster-pipeline 10 or 1000.
 *
 * --worker-env applies to every slotfleet variant, after the variant's own settings.
 */

export type ToolVariant =
  | {
      readonly kind: 'slotfleet';
      readonly name: string;
      /** SLOTFLEET_* settings of this variant beyond the plumbing, --worker-env included. */
      readonly workerEnv: Readonly<Record<string, string>>;
      /** Slots moved there and back before the timed part; 0: cold workers. */
      readonly warmupSlots: number;
      /** The migration's client-latency budget (limits.maxClientLatencyMs); undefined: none. */
      readonly budgetMs?: number;
    }
  | { readonly kind: 'redis-cli'; readonly name: string; readonly pipeline: number };

export type SlotfleetVariant = Extract<ToolVariant, { kind: 'slotfleet' }>;

/** The row every ratio and the p99 rule are measured against. */
export const REFERENCE_TOOL = 'redis-cli-p1000';
/** The row the ratio targets and the RSS target judge. */
export const HEADLINE_TOOL = 'slotfleet';

/** slotfleet-tuned's settings: today's best measured on this 2-core machine, not the defaults. */
const TUNED_WORKER_ENV = {
  SLOTFLEET_WORKER_CONCURRENCY: '32',
  // The caps protect a production cluster's clients; the bench has none, and states its caps.
  SLOTFLEET_MAX_SLOTS_PER_SOURCE: '32',
  SLOTFLEET_MAX_SLOTS_PER_TARGET: '64',
} as const;

const BUDGET_PREFIX = 'slotfleet-budget-';

export interface VariantOptions {
  /** --budgets, in ms. */
  readonly budgetsMs: readonly number[];
  /** --warmup-slots, for slotfleet-warm and slotfleet-tuned. */
  readonly warmupSlots: number;
  /** --worker-env, for every slotfleet variant. */
  readonly workerEnv: Readonly<Record<string, string>>;
}

/** Every tool, in the order of the summary's rows. */
export function allTools(options: VariantOptions): ToolVariant[] {
  const slotfleet = (name: string, env: Record<string, string>, warmupSlots: number, budgetMs?: number) => ({
    kind: 'slotfleet' as const,
    name,
    workerEnv: { ...env, ...options.workerEnv },
    warmupSlots,
    ...(budgetMs !== undefined ? { budgetMs } : {}),
  });
  return [
    slotfleet(HEADLINE_TOOL, {}, 0),
    slotfleet('slotfleet-warm', {}, options.warmupSlots),
    slotfleet('slotfleet-tuned', TUNED_WORKER_ENV, options.warmupSlots),
    ...[...options.budgetsMs]
      .sort((a, b) => a - b)
      .map((ms) => slotfleet(`${BUDGET_PREFIX}${ms}`, {}, 0, ms)),
    { kind: 'redis-cli', name: 'redis-cli-p10', pipeline: 10 },
    { kind: 'redis-cli', name: REFERENCE_TOOL, pipeline: 1000 },
  ];
}

/**
 * The tools `--tools` names, in the summary's order. A `slotfleet-budget-<N>` not in --budgets is
 * added; any other unknown name is an error rather than a row silently left out.
 */
export function selectTools(names: readonly string[], options: VariantOptions): ToolVariant[] {
  const extraBudgets = names
    .filter((name) => name.startsWith(BUDGET_PREFIX))
    .map((name) => parseBudget(name.slice(BUDGET_PREFIX.length), `--tools ${name}`))
    .filter((ms) => !options.budgetsMs.includes(ms));
  const known = allTools({ ...options, budgetsMs: [...options.budgetsMs, ...extraBudgets] });
  const unknown = names.filter((name) => !known.some((tool) => tool.name === name));
  if (unknown.length > 0) {
    throw new Error(
      `--tools: unknown ${unknown.join(', ')}; known: ${known.map((tool) => tool.name).join(', ')} (slotfleet-budget-<ms> for any budget)`,
    );
  }
  return known.filter((tool) => names.includes(tool.name));
}

/** A budget in whole ms, from 1 to 1000: below 1 ms a loopback PING alone would break it. */
export function parseBudget(text: string, what: string): number {
  const ms = Number(text);
  if (!Number.isInteger(ms) || ms < 1 || ms > 1000) {
    throw new Error(`${what}: a budget is a whole number of ms from 1 to 1000, got "${text}"`);
  }
  return ms;
}
