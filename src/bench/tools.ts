/**
 * The tools the bench times, by name. Every slotfleet variant runs the same API and 2 worker
 * processes; they differ only in what the workers are told and how the migration is posted. Every
 * slotfleet variant posts `engine: "auto"` (the API's default: atomic when every master has
 * CLUSTER MIGRATESLOTS, as Valkey 9's do, else keys) unless it names another:
 *
 *   slotfleet             the project's defaults, cold workers: no warm-up, and no SLOTFLEET_* setting
 *                         but the plumbing (cluster, control Redis, queue prefix, metrics port 0, log
 *                         level warn, so the workers do not log a line per slot). The headline row.
 *   slotfleet-keys        the same, posted with engine keys: where the servers have atomic slot
 *                         migration (Valkey 9), slotfleet's classic path next to it. Elsewhere auto is
 *                         keys already, so the row is not offered.
 *   slotfleet-nice0       the same defaults, with SLOTFLEET_NICE=0: the workers keep the bench's CPU
 *                         priority instead of lowering theirs, so the cluster's nodes do not get a
 *                         core first. Against the headline, what that priority gives clients here.
 *   slotfleet-warm        the same defaults, with workers warmed up as slotfleet-tuned's are: what a
 *                         standing fleet runs at, and against the headline, what a cold start costs.
 *   slotfleet-tuned       concurrency 32 and caps of 32 slots per source, 64 per target, with workers
 *                         warmed up by --warmup-slots slots moved there and back (untimed), as a
 *                         standing fleet's would be.
 *   slotfleet-budget-<N>  the defaults, cold, with the migration posted with
 *                         `limits: { maxClientLatencyMs: N }` (the headline row runs at the
 *                         workers' default, 10 ms).
 *   <cli>-p10, <cli>-p1000   `<cli> --cluster` with --cluster-pipeline 10 or 1000, key by key (MIGRATE).
 *   <cli>-atomic          `<cli> --cluster ... --cluster-use-atomic-slot-migration`: one CLUSTER
 *                         MIGRATESLOTS per source -> target pair, polled until done (Valkey 9 only).
 *
 * <cli> is the chosen server's own CLI, redis-cli or valkey-cli, so a Redis run's rows keep the names
 * older results have. --worker-env applies to every slotfleet variant, after the variant's own settings.
 */
import type { ServerIdentity } from '../sandbox/index.js';
import { EngineChoice } from '../shared/domain/migration.js';

export type ToolVariant =
  | {
      readonly kind: 'slotfleet';
      readonly name: string;
      /** The migration's `engine`, as posted. */
      readonly engine: EngineChoice;
      /** SLOTFLEET_* settings of this variant beyond the plumbing, --worker-env included. */
      readonly workerEnv: Readonly<Record<string, string>>;
      /** Slots moved there and back before the timed part; 0: cold workers. */
      readonly warmupSlots: number;
      /** The migration's client-latency budget (limits.maxClientLatencyMs); undefined: none. */
      readonly budgetMs?: number;
    }
  | CliVariant;

/** The server's CLI: key by key with a pipeline, or the servers' atomic slot migration. */
export type CliVariant =
  | { readonly kind: 'cli'; readonly name: string; readonly engine: 'keys'; readonly pipeline: number }
  | { readonly kind: 'cli'; readonly name: string; readonly engine: 'atomic' };

export type SlotfleetVariant = Extract<ToolVariant, { kind: 'slotfleet' }>;

/** The CLI a run drives: the chosen server's own, and whether it can move slots atomically. */
export interface CliFlavor {
  readonly name: 'redis-cli' | 'valkey-cli';
  /** `--cluster-use-atomic-slot-migration` (valkey-cli 9, on servers with CLUSTER MIGRATESLOTS). */
  readonly atomic: boolean;
}

/**
 * The rows ratios are measured against. classic: the CLI key by key at pipeline 1000, the yardstick
 * of each case's ratio target and the p99 rule (issue 15). atomic: the CLI's atomic slot migration,
 * the yardstick of issue 17's targets, where the CLI has it.
 */
export interface References {
  readonly classic: string;
  readonly atomic?: string;
}

/** The row the ratio targets and the RSS target judge. */
export const HEADLINE_TOOL = 'slotfleet';
/** The pipeline of the classic reference row. */
const REFERENCE_PIPELINE = 1000;
/** Valkey's first version with atomic slot migration (CLUSTER MIGRATESLOTS, and valkey-cli's flag). */
const ATOMIC_SINCE_VALKEY_MAJOR = 9;

/** The CLI beside the chosen server: valkey-cli for Valkey, atomic from Valkey 9 on. */
export function cliFlavor(server: ServerIdentity): CliFlavor {
  if (server.name === 'redis') return { name: 'redis-cli', atomic: false };
  return { name: 'valkey-cli', atomic: Number(server.version.split('.')[0]) >= ATOMIC_SINCE_VALKEY_MAJOR };
}

export function referencesOf(cli: CliFlavor): References {
  return {
    classic: `${cli.name}-p${REFERENCE_PIPELINE}`,
    ...(cli.atomic ? { atomic: `${cli.name}-atomic` } : {}),
  };
}

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
  /** The chosen server's CLI: names the CLI rows and says whether the atomic ones exist. */
  readonly cli: CliFlavor;
}

/** Every tool, in the order of the summary's rows. */
export function allTools(options: VariantOptions): ToolVariant[] {
  const slotfleet = (
    name: string,
    env: Record<string, string>,
    warmupSlots: number,
    extra: { budgetMs?: number; engine?: EngineChoice } = {},
  ): ToolVariant => ({
    kind: 'slotfleet',
    name,
    engine: extra.engine ?? EngineChoice.Auto,
    workerEnv: { ...env, ...options.workerEnv },
    warmupSlots,
    ...(extra.budgetMs !== undefined ? { budgetMs: extra.budgetMs } : {}),
  });
  const { cli } = options;
  const references = referencesOf(cli);
  return [
    slotfleet(HEADLINE_TOOL, {}, 0),
    ...(cli.atomic ? [slotfleet('slotfleet-keys', {}, 0, { engine: EngineChoice.Keys })] : []),
    slotfleet('slotfleet-nice0', { SLOTFLEET_NICE: '0' }, 0),
    slotfleet('slotfleet-warm', {}, options.warmupSlots),
    slotfleet('slotfleet-tuned', TUNED_WORKER_ENV, options.warmupSlots),
    ...[...options.budgetsMs]
      .sort((a, b) => a - b)
      .map((ms) => slotfleet(`${BUDGET_PREFIX}${ms}`, {}, 0, { budgetMs: ms })),
    { kind: 'cli', name: `${cli.name}-p10`, engine: 'keys', pipeline: 10 },
    { kind: 'cli', name: references.classic, engine: 'keys', pipeline: REFERENCE_PIPELINE },
    ...(references.atomic ? [{ kind: 'cli', name: references.atomic, engine: 'atomic' } as const] : []),
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
      `--tools: unknown ${unknown.join(', ')}; known: ${known.map((tool) => tool.name).join(', ')} (slotfleet-budget-<ms> for any budget; the CLI rows are the chosen server's ${options.cli.name}${options.cli.atomic ? '' : ', without atomic slot migration'})`,
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
