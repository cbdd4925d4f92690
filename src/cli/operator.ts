/**
 * The operator commands: rebalance, reshard, drain, fix, status, pause, resume, cancel, limit. They talk to
 * the API (SLOTFLEET_API_URL, SLOTFLEET_API_TOKEN) and never to Redis. --json prints the API's JSON
 * and nothing else; --wait follows the migration with a progress bar and exits non-zero unless it
 * ends done. The commands that create a migration take --engine, passed on as the body's engine.
 */
import type { Config } from '../shared/config.js';
import {
  EngineChoice,
  MigrationEngine,
  MigrationState,
  migrationHasEnded,
} from '../shared/domain/migration.js';
import { ApiClient, type ApiResponse, refusalMessage } from './api-client.js';
import { ExitCode, parseCommandLine, UsageError } from './command-line.js';
import type {
  MigrationCreatedView,
  MigrationListView,
  MigrationSummaryView,
  MigrationView,
  PlanGroupView,
  PlanPreviewView,
  ServerTaskView,
} from './migration-view.js';
import { pollMigration, printProgress } from './progress.js';

const COMMON = {
  cluster: { type: 'string', default: 'default' },
  'dry-run': { type: 'boolean', default: false },
  engine: { type: 'string' },
  wait: { type: 'boolean', default: false },
  json: { type: 'boolean', default: false },
  help: { type: 'boolean', short: 'h', default: false },
} as const;

export const OPERATOR_COMMANDS = [
  'rebalance',
  'reshard',
  'drain',
  'fix',
  'status',
  'pause',
  'resume',
  'cancel',
  'limit',
] as const;
export type OperatorCommand = (typeof OPERATOR_COMMANDS)[number];

export const OPERATOR_HELP: Readonly<Record<OperatorCommand, string>> = {
  rebalance:
    'slotfleet rebalance [--weight NODE=W]... [--threshold PCT] [--use-empty-masters] [--by slots|keys] ' +
    '[--engine auto|keys|atomic] [--cluster NAME] [--dry-run] [--wait] [--json]',
  reshard:
    'slotfleet reshard --from NODE[,NODE...|all] --to NODE (--slots N | --ranges 0-99,200) ' +
    '[--engine auto|keys|atomic] [--dry-run] [--wait] [--json]',
  drain:
    'slotfleet drain NODE [--weight NODE=W]... [--engine auto|keys|atomic] [--dry-run] [--wait] [--json]',
  fix: 'slotfleet fix [--engine auto|keys] [--dry-run] [--wait] [--json]',
  status: 'slotfleet status [ID] [--json]   (no ID: the newest migrations)',
  pause: 'slotfleet pause ID [--json]',
  resume: 'slotfleet resume ID [--json]',
  cancel: 'slotfleet cancel ID [--json]',
  limit:
    'slotfleet limit ID [--keys-per-second N|none] [--bytes-per-second N|none] [--batch-keys N|none] ' +
    '[--max-client-latency-ms N|none] [--json]',
};

/** The flags of `slotfleet limit` and the limit each sets. */
const LIMIT_FLAGS = {
  'keys-per-second': 'maxKeysPerSecond',
  'bytes-per-second': 'maxBytesPerSecond',
  'batch-keys': 'batchKeys',
  'max-client-latency-ms': 'maxClientLatencyMs',
} as const;

export async function runOperatorCommand(
  name: OperatorCommand,
  args: string[],
  config: Config,
): Promise<ExitCode> {
  const { values, positionals } = parseCommandLine({
    args,
    allowPositionals: true,
    options: {
      ...COMMON,
      weight: { type: 'string', multiple: true },
      threshold: { type: 'string' },
      'use-empty-masters': { type: 'boolean', default: false },
      by: { type: 'string' },
      from: { type: 'string' },
      to: { type: 'string' },
      slots: { type: 'string' },
      ranges: { type: 'string' },
      'keys-per-second': { type: 'string' },
      'bytes-per-second': { type: 'string' },
      'batch-keys': { type: 'string' },
      'max-client-latency-ms': { type: 'string' },
    },
  });
  if (values.help) {
    out(
      `${OPERATOR_HELP[name]}\n\nEnvironment: SLOTFLEET_API_URL (default http://127.0.0.1:8080), SLOTFLEET_API_TOKEN.`,
    );
    return ExitCode.Ok;
  }
  const api = new ApiClient(config.apiUrl, config.api.token);
  const cluster = encodeURIComponent(values.cluster);
  const dryRun = values['dry-run'] ? { dryRun: true } : {};
  const engine = parseEngine(values.engine);
  // Sent only when given: the body is what an Idempotency-Key hashes, and {} is not {engine: "auto"}.
  const engineBody = engine === undefined ? {} : { engine };
  const weights = parseWeights(values.weight ?? []);
  let path: string;
  let body: Record<string, unknown>;
  switch (name) {
    case 'rebalance':
      path = `/v1/clusters/${cluster}/rebalance`;
      body = {
        ...(weights ? { weights } : {}),
        ...(values.threshold !== undefined ? { threshold: Number(values.threshold) } : {}),
        ...(values['use-empty-masters'] ? { useEmptyMasters: true } : {}),
        ...(values.by ? { by: values.by } : {}),
        ...engineBody,
        ...dryRun,
      };
      break;
    case 'reshard':
      if (!values.from || !values.to || (values.slots === undefined) === (values.ranges === undefined)) {
        return usage(name);
      }
      path = `/v1/clusters/${cluster}/reshard`;
      body = {
        from: values.from.split(','),
        to: values.to,
        ...(values.slots !== undefined ? { slots: Number(values.slots) } : { ranges: values.ranges }),
        ...engineBody,
        ...dryRun,
      };
      break;
    case 'drain':
      if (positionals.length !== 1) return usage(name);
      path = `/v1/clusters/${cluster}/drain`;
      body = { node: positionals[0], ...(weights ? { weights } : {}), ...engineBody, ...dryRun };
      break;
    case 'fix':
      path = `/v1/clusters/${cluster}/fix`;
      // The API refuses atomic for fix (400), with the reason; the CLI does not keep a copy of that rule.
      body = { ...engineBody, ...dryRun };
      break;
    case 'status': {
      const response = positionals[0]
        ? await api.request('GET', `/v1/migrations/${encodeURIComponent(positionals[0])}`)
        : await api.request('GET', '/v1/migrations?limit=20');
      if (response.status !== 200) return refused(response, values.json);
      if (values.json) return printJson(response.body);
      if (positionals[0]) {
        const view = response.body as MigrationView;
        out(describeMigration(view));
        for (const line of describeServerTasks(view)) out(line);
      } else for (const item of (response.body as MigrationListView).items) out(describeMigration(item));
      return ExitCode.Ok;
    }
    case 'pause':
    case 'resume':
    case 'cancel': {
      if (positionals.length !== 1) return usage(name);
      const response = await api.request(
        'POST',
        `/v1/migrations/${encodeURIComponent(positionals[0]!)}/${name}`,
      );
      if (response.status !== 200) return refused(response, values.json);
      if (values.json) return printJson(response.body);
      out(describeMigration(response.body as MigrationSummaryView));
      return ExitCode.Ok;
    }
    case 'limit': {
      const limits: Record<string, number | null> = {};
      for (const [flag, limit] of Object.entries(LIMIT_FLAGS)) {
        const text = values[flag as keyof typeof LIMIT_FLAGS];
        if (text === undefined) continue;
        // Checked here: Number('abc') is NaN, which JSON sends as null, which clears the limit.
        if (text === 'none') limits[limit] = null;
        else if (/^\d{1,16}$/.test(text)) limits[limit] = Number(text);
        else throw new UsageError(`--${flag} takes a whole number, or none to clear the limit`);
      }
      if (positionals.length !== 1 || Object.keys(limits).length === 0) return usage(name);
      const response = await api.request(
        'PATCH',
        `/v1/migrations/${encodeURIComponent(positionals[0]!)}`,
        limits,
      );
      if (response.status !== 200) return refused(response, values.json);
      if (values.json) return printJson(response.body);
      out(describeMigration(response.body as MigrationSummaryView));
      return ExitCode.Ok;
    }
    default: {
      const never: never = name;
      throw new Error(`unhandled operator command: ${never}`);
    }
  }
  const response = await api.request('POST', path, body);
  if (response.status !== 200 && response.status !== 202) return refused(response, values.json);
  if (response.status === 200) {
    const preview = response.body as PlanPreviewView;
    if (values.json) return printJson(preview);
    out(planTable(preview.plan));
    out(`${preview.slots} slots, ${preview.keys} keys (dry run: nothing enqueued)`);
    return ExitCode.Ok;
  }
  const result = response.body as MigrationCreatedView;
  if (!values.wait) {
    if (values.json) return printJson(result);
    out(`migration ${result.id}: ${result.slots} slots enqueued, engine ${result.engine}`);
    out(planTable(result.plan));
    return ExitCode.Ok;
  }
  const final = await pollMigration(() => api.migration(result.id), {
    ...(values.json ? {} : { onView: printProgress(process.stderr, 2_000) }),
  });
  if (values.json) printJson(final);
  else out(describeMigration(final));
  return final.state === MigrationState.Done ? ExitCode.Ok : ExitCode.Failed;
}

/** One line per migration; a summary (from a list, or a pause) has no errors to count. */
export function describeMigration(
  view: MigrationSummaryView & Partial<Pick<MigrationView, 'errors'>>,
): string {
  const errors = view.errors?.length
    ? `, ${view.errors.length} slot errors (first: slot ${view.errors[0]!.slot} ${view.errors[0]!.code})`
    : '';
  return (
    `${view.id}  ${view.state}  engine ${view.engine}  slots done ${view.slots.done}/${view.slotsTotal}` +
    ` (failed ${view.slots.failed}, cancelled ${view.slots.cancelled})  keys moved ${view.keysMoved}${errors}` +
    describeLimits(view.limits)
  );
}

/** "  limits: 1500 keys/s per source, batches of 100 keys", or nothing when no limit is set. */
export function describeLimits(limits: MigrationSummaryView['limits']): string {
  const parts = [
    limits.maxKeysPerSecond ? `${limits.maxKeysPerSecond} keys/s per source` : undefined,
    limits.maxBytesPerSecond ? `${limits.maxBytesPerSecond} bytes/s per source` : undefined,
    limits.batchKeys ? `batches of ${limits.batchKeys} keys` : undefined,
    limits.maxClientLatencyMs ? `clients wait at most ${limits.maxClientLatencyMs} ms` : undefined,
  ].filter((part) => part !== undefined);
  return parts.length > 0 ? `  limits: ${parts.join(', ')}` : '';
}

/**
 * For `slotfleet status ID` of an atomic migration, one line per server task:
 * `  task <name> 10.0.0.5:7000 -> 10.0.0.8:7000 slots 0-99: snapshotting`. Nothing for the keys
 * engine, nor from an API that does not send the tasks.
 */
export function describeServerTasks(view: Pick<MigrationView, 'engine' | 'state' | 'serverTasks'>): string[] {
  if (view.engine !== MigrationEngine.Atomic || view.serverTasks === undefined) return [];
  if (view.serverTasks === null) return ['  server tasks: the cluster did not answer'];
  if (view.serverTasks.length === 0) {
    return migrationHasEnded(view.state)
      ? []
      : ['  server tasks: none running or ended since it was created'];
  }
  return view.serverTasks.map(describeServerTask);
}

function describeServerTask(task: ServerTaskView): string {
  const why = task.message ? ` (${task.message})` : '';
  return `  task ${task.name} ${task.source} -> ${task.target} slots ${task.slots}: ${task.state}${why}`;
}

/** --engine's value, or undefined when not given; anything else is a usage error. */
export function parseEngine(text: string | undefined): EngineChoice | undefined {
  if (text === undefined) return undefined;
  const choices: readonly string[] = Object.values(EngineChoice);
  if (!choices.includes(text)) {
    throw new UsageError(`--engine takes ${choices.join(', ')}, not "${text}"`);
  }
  return text as EngineChoice;
}

export function planTable(plan: readonly PlanGroupView[]): string {
  const rows = [
    ['source', 'target', 'slots', 'keys'],
    ...plan.map((group) => [
      group.source,
      group.target,
      String(group.slotCount),
      group.keys === undefined ? '' : String(group.keys),
    ]),
  ];
  const widths = rows[0]!.map((_, column) => Math.max(...rows.map((row) => row[column]!.length)));
  return rows
    .map((row) =>
      row
        .map((cell, column) => cell.padEnd(widths[column]!))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

function parseWeights(entries: string[]): Record<string, number> | undefined {
  if (entries.length === 0) return undefined;
  return Object.fromEntries(
    entries.map((entry) => {
      const at = entry.lastIndexOf('=');
      return [entry.slice(0, at), Number(entry.slice(at + 1))];
    }),
  );
}

function refused(response: ApiResponse, json: boolean): ExitCode {
  if (json) printJson(response.body);
  else process.stderr.write(`slotfleet: ${refusalMessage(response)}\n`);
  return ExitCode.Refused;
}

function usage(name: OperatorCommand): ExitCode {
  process.stderr.write(`usage: ${OPERATOR_HELP[name]}\n`);
  return ExitCode.Usage;
}

function printJson(value: unknown): ExitCode {
  out(JSON.stringify(value, null, 2));
  return ExitCode.Ok;
}

function out(text: string): void {
  process.stdout.write(`${text}\n`);
}
