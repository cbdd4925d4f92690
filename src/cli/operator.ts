/**
 * The operator commands: rebalance, reshard, drain, fix, status, pause, resume, cancel, limit. They talk to
 * the API (SLOTFLEET_API_URL, SLOTFLEET_API_TOKEN) and never to Redis. --json prints the API's JSON
 * and nothing else; --wait follows the migration with a progress bar and exits non-zero unless it
 * ends done.
 */
import { parseArgs } from 'node:util';
import type { Config } from '../shared/config.js';

interface PlanGroup {
  source: string;
  target: string;
  slots: string;
  slotCount: number;
  keys?: number;
}

interface MigrationView {
  id: string;
  state: string;
  slotsTotal: number;
  slots: Record<string, number>;
  keysMoved: number;
  keysRemaining?: number | null;
  keysPerSecond?: number;
  etaSeconds?: number | null;
  errors?: { slot: number; code: string; message: string }[];
  limits?: Record<string, number | null>;
}

/** Exit codes: 0 done (or accepted without --wait), 1 failed or cancelled, 2 usage, 3 API refused. */
export const ExitCode = { Ok: 0, Failed: 1, Usage: 2, Refused: 3 } as const;

const COMMON = {
  cluster: { type: 'string', default: 'default' },
  'dry-run': { type: 'boolean', default: false },
  wait: { type: 'boolean', default: false },
  json: { type: 'boolean', default: false },
  help: { type: 'boolean', short: 'h', default: false },
} as const;

export const OPERATOR_HELP: Record<string, string> = {
  rebalance:
    'slotfleet rebalance [--weight NODE=W]... [--threshold PCT] [--use-empty-masters] [--by slots|keys] [--cluster NAME] [--dry-run] [--wait] [--json]',
  reshard:
    'slotfleet reshard --from NODE[,NODE...|all] --to NODE (--slots N | --ranges 0-99,200) [--dry-run] [--wait] [--json]',
  drain: 'slotfleet drain NODE [--weight NODE=W]... [--dry-run] [--wait] [--json]',
  fix: 'slotfleet fix [--dry-run] [--wait] [--json]',
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

export async function runOperatorCommand(name: string, args: string[], config: Config): Promise<number> {
  const { values, positionals } = parseArgs({
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
        ...dryRun,
      };
      break;
    case 'drain':
      if (positionals.length !== 1) return usage(name);
      path = `/v1/clusters/${cluster}/drain`;
      body = { node: positionals[0], ...(weights ? { weights } : {}), ...dryRun };
      break;
    case 'fix':
      path = `/v1/clusters/${cluster}/fix`;
      body = { ...dryRun };
      break;
    case 'status': {
      const response = positionals[0]
        ? await api.request('GET', `/v1/migrations/${encodeURIComponent(positionals[0])}`)
        : await api.request('GET', '/v1/migrations?limit=20');
      if (response.status !== 200) return refused(response, values.json);
      if (values.json) return printJson(response.body);
      if (positionals[0]) out(describe(response.body as MigrationView));
      else for (const item of (response.body as { items: MigrationView[] }).items) out(describe(item));
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
      out(describe(response.body as MigrationView));
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
        else {
          process.stderr.write(`slotfleet: --${flag} takes a whole number, or none to clear the limit\n`);
          return usage(name);
        }
      }
      if (positionals.length !== 1 || Object.keys(limits).length === 0) return usage(name);
      const response = await api.request(
        'PATCH',
        `/v1/migrations/${encodeURIComponent(positionals[0]!)}`,
        limits,
      );
      if (response.status !== 200) return refused(response, values.json);
      if (values.json) return printJson(response.body);
      out(describe(response.body as MigrationView));
      return ExitCode.Ok;
    }
    default:
      return usage(name);
  }
  const response = await api.request('POST', path, body);
  if (response.status !== 200 && response.status !== 202) return refused(response, values.json);
  const result = response.body as { id?: string; slots: number; keys?: number; plan: PlanGroup[] };
  if (response.status === 200) {
    if (values.json) return printJson(result);
    out(planTable(result.plan));
    out(`${result.slots} slots, ${result.keys ?? '?'} keys (dry run: nothing enqueued)`);
    return ExitCode.Ok;
  }
  if (!values.wait) {
    if (values.json) return printJson(result);
    out(`migration ${result.id}: ${result.slots} slots enqueued`);
    out(planTable(result.plan));
    return ExitCode.Ok;
  }
  const final = await follow(api, result.id!, values.json);
  if (values.json) printJson(final);
  return final.state === 'done' ? ExitCode.Ok : ExitCode.Failed;
}

class ApiClient {
  constructor(
    private readonly baseUrl: string,
    private readonly token: string | undefined,
  ) {}

  async request(
    method: 'GET' | 'POST' | 'PATCH',
    path: string,
    body?: unknown,
  ): Promise<{ status: number; body: unknown }> {
    const response = await fetch(`${this.baseUrl}${path}`, {
      method,
      headers: {
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
        ...(this.token ? { authorization: `Bearer ${this.token}` } : {}),
      },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    }).catch((error: Error) => {
      throw new Error(`cannot reach the API at ${this.baseUrl} (SLOTFLEET_API_URL): ${error.message}`);
    });
    const text = await response.text();
    return { status: response.status, body: text ? JSON.parse(text) : null };
  }
}

async function follow(api: ApiClient, id: string, quiet: boolean): Promise<MigrationView> {
  const interactive = process.stderr.isTTY && !quiet;
  let lastLine = 0;
  for (;;) {
    const response = await api.request('GET', `/v1/migrations/${id}`);
    if (response.status !== 200) throw new Error(`GET /v1/migrations/${id}: ${response.status}`);
    const view = response.body as MigrationView;
    const ended = ['done', 'failed', 'cancelled'].includes(view.state);
    if (!quiet) {
      const line = progressLine(view);
      if (interactive) process.stderr.write(`\r${line}${ended ? '\n' : ''}`);
      else if (ended || Date.now() - lastLine > 2_000) {
        process.stderr.write(`${line}\n`);
        lastLine = Date.now();
      }
    }
    if (ended) {
      if (!quiet) out(describe(view));
      return view;
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

export function progressLine(view: MigrationView): string {
  const done = (view.slots.done ?? 0) + (view.slots.cancelled ?? 0) + (view.slots.failed ?? 0);
  const width = 30;
  const filled = Math.round((done / Math.max(view.slotsTotal, 1)) * width);
  const eta =
    view.etaSeconds === null || view.etaSeconds === undefined ? '?' : `${view.etaSeconds.toFixed(0)} s`;
  return (
    `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${view.state} slots ${done}/${view.slotsTotal}` +
    `  keys ${view.keysMoved.toLocaleString('en-US')}  ${Math.round(view.keysPerSecond ?? 0).toLocaleString('en-US')} keys/s  ETA ${eta}`
  );
}

function describe(view: MigrationView): string {
  const errors = view.errors?.length
    ? `, ${view.errors.length} slot errors (first: slot ${view.errors[0]!.slot} ${view.errors[0]!.code})`
    : '';
  return (
    `${view.id}  ${view.state}  slots done ${view.slots.done ?? 0}/${view.slotsTotal}` +
    ` (failed ${view.slots.failed ?? 0}, cancelled ${view.slots.cancelled ?? 0})  keys moved ${view.keysMoved}${errors}` +
    describeLimits(view.limits)
  );
}

/** "  limits: 1500 keys/s per source, batches of 100 keys", or nothing when no limit is set. */
export function describeLimits(limits: MigrationView['limits']): string {
  const parts = [
    limits?.maxKeysPerSecond ? `${limits.maxKeysPerSecond} keys/s per source` : undefined,
    limits?.maxBytesPerSecond ? `${limits.maxBytesPerSecond} bytes/s per source` : undefined,
    limits?.batchKeys ? `batches of ${limits.batchKeys} keys` : undefined,
    limits?.maxClientLatencyMs ? `clients wait at most ${limits.maxClientLatencyMs} ms` : undefined,
  ].filter((part) => part !== undefined);
  return parts.length > 0 ? `  limits: ${parts.join(', ')}` : '';
}

export function planTable(plan: readonly PlanGroup[]): string {
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

function refused(response: { status: number; body: unknown }, json: boolean): number {
  if (json) printJson(response.body);
  else {
    const error = response.body as { message?: string; code?: string } | null;
    process.stderr.write(
      `slotfleet: the API refused (${response.status} ${error?.code ?? ''}): ${error?.message ?? ''}\n`,
    );
  }
  return ExitCode.Refused;
}

function usage(name: string): number {
  process.stderr.write(`usage: ${OPERATOR_HELP[name] ?? 'slotfleet --help'}\n`);
  return ExitCode.Usage;
}

function printJson(value: unknown): number {
  out(JSON.stringify(value, null, 2));
  return ExitCode.Ok;
}

function out(text: string): void {
  process.stdout.write(`${text}\n`);
}
