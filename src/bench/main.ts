/**
 * `npm run bench`: slotfleet side by side with `redis-cli --cluster` on the same data, in the same
 * rotation, each run on a fresh local cluster (no replicas) seeded with identical data. Every case
 * runs --runs times (default 3) with the tools' order rotated; after every run all keys must be
 * present (DBSIZE), a sample of values must match, `redis-cli --cluster check` must pass and the keys
 * the targets gained must be what the move should carry, or the run is a failure, not a number.
 *
 *   rebalance  1,000,000 x 64 B strings, 3 -> 4 masters (rebalance --cluster-use-empty-masters)
 *   wide       400,000 x 64 B strings, 12 -> 16 masters (the same rebalance onto 4 empty masters)
 *   hotslot    300,000 keys in one slot moved to another master (reshard --cluster-slots 1)
 *   bigvalues  50,000 x 16 KB strings, 3 -> 4 masters
 *   enqueue    planning + enqueueing a migration of all 16384 slots (API call, no worker running)
 *   queuefloor 4096 BullMQ jobs with an empty processor through 2 worker processes at the default
 *              concurrency: what the queue alone costs in CPU (see queue-floor.ts)
 *
 * The server is redis-server unless SLOTFLEET_SERVER_BIN names another (valkey-server, by name or
 * path; SLOTFLEET_CLI_BIN its CLI, by default the sibling): every cluster, the control Redis and the
 * CLI rows run it, and the results file names it.
 *
 * The tools (tools.ts): `slotfleet` is the project's defaults with cold workers, the headline row
 * (its client-latency budget is the default, 10 ms, its engine auto: atomic on Valkey 9);
 * `slotfleet-keys` the same with engine keys (Valkey 9 only); `slotfleet-warm` the same on warmed-up
 * workers; `slotfleet-tuned` the bench's own settings with warmed-up workers; `slotfleet-budget-<N>`
 * the defaults with the migration's client-latency budget set to N ms (--budgets, 5 and 20 by
 * default); the server's CLI (redis-cli or valkey-cli) with pipeline 10 and 1000, and on Valkey 9
 * with atomic slot migration. The workers inherit no SLOTFLEET_* setting from the bench's
 * environment but the server choice: the bench refuses to start with one set, so the defaults row
 * shows the defaults.
 *
 * A slotfleet run is timed from its POST to the migration's own end (the last update of its record);
 * the CLI from its start to its exit. Meanwhile a probe PINGs every master every 20 ms
 * (latency-probe.ts), so each run also says what a client waited, overall and per master.
 *
 * Results go to bench/results/<time>.json; the summary prints each tool's figures, the targets
 * judged (judge.ts) and, last, the frontier of each case: median time against median client wait.
 */
import { type ChildProcess, execFile } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { parseArgs, promisify } from 'node:util';
import { Queue } from 'bullmq';
import calculateSlot from 'cluster-key-slot';
import { pino } from 'pino';
import { startApi } from '../producer/server.js';
import {
  chooseServer,
  countKeys,
  type DatasetManifest,
  describeServer,
  type RedisProcess,
  requireRedisBinaries,
  SandboxCluster,
  SERVER_CHOICE_VARIABLES,
  seedDataset,
  serverChoiceFromEnvironment,
  spawnWorkerProcesses,
  startControlRedis,
  stopProcesses,
  verifyDataset,
} from '../sandbox/index.js';
import { NODE_SCRIPTS } from '../shared/cluster/slot-commands.js';
import { type Config, loadConfig } from '../shared/config.js';
import type { MigrationEngine } from '../shared/domain/migration.js';
import { ownerOf, parseClusterNodes } from '../shared/domain/topology.js';
import { createLogger } from '../shared/logger.js';
import { ConnectionRole, controlConnectionOptions } from '../shared/queue/connections.js';
import { QueueName } from '../shared/queue/names.js';
import {
  CASE_NAMES,
  expectedKeysMoved,
  HOT_SLOT,
  type MigrationCase,
  migrationCases,
  OTHER_CASE_NAMES,
} from './cases.js';
import {
  type CaseSummary,
  caseLines,
  frontierLines,
  metText,
  type NodeRole,
  type RunResult,
  round,
  stats,
  summarizeCase,
  worstByRole,
} from './judge.js';
import { type ClientLatency, startLatencyProbes } from './latency-probe.js';
import { cpuByGroup, cpuOfChildUntilExit, cpuWaitByGroup, peakRssMb } from './proc-stats.js';
import { measureQueueFloor, type QueueFloorResult } from './queue-floor.js';
import { scriptNamesBySha, slowlogCommand } from './slowlog.js';
import {
  allTools,
  type CliFlavor,
  type CliVariant,
  cliFlavor,
  parseBudget,
  type References,
  referencesOf,
  type SlotfleetVariant,
  selectTools,
  type ToolVariant,
} from './tools.js';

const execFileAsync = promisify(execFile);

const ENQUEUE_TARGET_SECONDS = 2;
const WORKERS = 2;
/** Slots a 3 -> 4 master rebalance moves: the queue floor runs as many jobs. */
const REBALANCE_SLOTS = 4096;
/**
 * What every slotfleet variant's workers are told besides the cluster, control Redis and queue
 * prefix of the run: plumbing, not tuning. Their logs stay at the default level (info: one line per
 * slot done), written to files as a deployment's would be (see logDirOf).
 */
const WORKER_PLUMBING = { SLOTFLEET_METRICS_PORT: '0' } as const;
/**
 * Deadline for a cluster to agree (after creation, after adding a master, after a move): 16 nodes on
 * 2 cores, with the bench's other processes still exiting, can take longer than the sandbox's 30 s.
 */
const CONSENSUS_TIMEOUT_MS = 120_000;
/** Deadline for one timed move (a migration or a redis-cli run): past it the run fails. */
const MOVE_DEADLINE_MS = 30 * 60_000;
const MAX_RUNS = 20;
const MAX_BUDGETS = 8;

interface BenchOptions {
  readonly cases: ReadonlySet<string>;
  readonly runs: number;
  readonly scale: number;
  readonly tools: readonly ToolVariant[];
  readonly budgetsMs: readonly number[];
  /** --worker-env: SLOTFLEET_* settings for every slotfleet variant's workers. */
  readonly workerEnv: Readonly<Record<string, string>>;
  /** Node/V8 options of the workers (--cpu-prof-dir, --perf-map, --worker-node-args). */
  readonly workerNodeArgs: readonly string[];
  /** --worker-log-dir: each slotfleet run writes <dir>/<tool>-<start time>/worker-<n>.log and api.log. */
  readonly workerLogDir: string;
  /** --commandstats: print each server's INFO commandstats after a slotfleet run (calls and usec). */
  readonly commandStats: boolean;
  /** --slowlog MS: print what each master ran for MS or longer during a slotfleet run (SLOWLOG). */
  readonly slowlogMs: number | undefined;
  /** The chosen server's CLI: what the CLI rows and the cluster check run. */
  readonly cli: { readonly path: string; readonly flavor: CliFlavor; readonly references: References };
}

function parseOptions(cli: { path: string; flavor: CliFlavor }): BenchOptions {
  const { values } = parseArgs({
    options: {
      cases: { type: 'string', default: 'rebalance,wide,hotslot,bigvalues,enqueue,queuefloor' },
      runs: { type: 'string', default: '3' },
      scale: { type: 'string', default: '1' },
      // Default: every tool of allTools(), in its order.
      tools: { type: 'string' },
      // Client-latency budgets (ms) of the slotfleet-budget-<N> variants, around the default 10 ms
      // of the headline row.
      budgets: { type: 'string', default: '5,20' },
      commandstats: { type: 'boolean', default: false },
      slowlog: { type: 'string' },
      // Where the workers and the API of each slotfleet run write their logs (default: a new
      // directory under the system's temporary directory, named at the start).
      'worker-log-dir': { type: 'string' },
      // Workers write V8 CPU profiles there (open them in Chrome DevTools).
      'cpu-prof-dir': { type: 'string' },
      // Workers write /tmp/perf-<pid>.map, so `perf record -g -- node dist/bench/main.js ...` (its
      // children inherit it) names their JavaScript functions.
      'perf-map': { type: 'boolean', default: false },
      // Slots slotfleet-tuned's workers move there and back before a run is timed, so they run
      // JIT-compiled code as a standing fleet's do (4096 moves: one rebalance's worth).
      'warmup-slots': { type: 'string', default: '2048' },
      // SLOTFLEET_NAME=value[,...] for the workers of every slotfleet variant, after its own settings.
      'worker-env': { type: 'string', default: '' },
      // Node/V8 options for the workers, space-separated, given with "=" since they start with a dash:
      // --worker-node-args=--max-semi-space-size=32
      'worker-node-args': { type: 'string', default: '' },
    },
  });
  const cases = new Set(values.cases.split(',').filter(Boolean));
  const unknownCases = [...cases].filter((name) => !(CASE_NAMES as readonly string[]).includes(name));
  if (unknownCases.length > 0)
    throw new Error(`--cases: unknown ${unknownCases.join(', ')}; known: ${CASE_NAMES.join(', ')}`);
  const runs = Number(values.runs);
  if (!Number.isInteger(runs) || runs < 1 || runs > MAX_RUNS)
    throw new Error(`--runs: a whole number from 1 to ${MAX_RUNS}, got "${values.runs}"`);
  const scale = Number(values.scale);
  if (!(scale > 0 && scale <= 10)) throw new Error(`--scale: above 0, at most 10, got "${values.scale}"`);
  const warmupSlots = Number(values['warmup-slots']);
  if (!Number.isInteger(warmupSlots) || warmupSlots < 0 || warmupSlots > 16383)
    throw new Error(`--warmup-slots: a whole number from 0 to 16383, got "${values['warmup-slots']}"`);
  const budgetsMs = [
    ...new Set(
      values.budgets
        .split(',')
        .filter(Boolean)
        .map((text) => parseBudget(text, '--budgets')),
    ),
  ];
  if (budgetsMs.length > MAX_BUDGETS) throw new Error(`--budgets: at most ${MAX_BUDGETS}`);
  const workerEnv = parseWorkerEnv(values['worker-env']);
  const slowlogMs = values.slowlog === undefined ? undefined : Number(values.slowlog);
  if (slowlogMs !== undefined && !(slowlogMs > 0 && slowlogMs <= 10_000))
    throw new Error(`--slowlog: milliseconds above 0, up to 10000, got "${values.slowlog}"`);
  const variantOptions = { budgetsMs, warmupSlots, workerEnv, cli: cli.flavor };
  const tools =
    values.tools === undefined
      ? allTools(variantOptions)
      : selectTools(values.tools.split(',').filter(Boolean), variantOptions);
  if (tools.length === 0) throw new Error('--tools: name at least one tool');
  return {
    cases,
    runs,
    scale,
    tools,
    budgetsMs,
    workerEnv,
    workerNodeArgs: [
      ...(values['cpu-prof-dir'] ? ['--cpu-prof', `--cpu-prof-dir=${values['cpu-prof-dir']}`] : []),
      ...(values['perf-map'] ? ['--perf-basic-prof'] : []),
      ...values['worker-node-args'].split(' ').filter((arg) => arg !== ''),
    ],
    commandStats: values.commandstats,
    slowlogMs,
    workerLogDir: values['worker-log-dir'] ?? join(tmpdir(), `slotfleet-bench-${process.pid}-${Date.now()}`),
    cli: { ...cli, references: referencesOf(cli.flavor) },
  };
}

async function main(): Promise<void> {
  refuseInheritedSettings();
  chooseServer(serverChoiceFromEnvironment(process.env));
  const binaries = await requireRedisBinaries();
  const options = parseOptions({ path: binaries.cliPath, flavor: cliFlavor(binaries) });
  const report = {
    startedAt: new Date().toISOString(),
    machine: {
      cpus: cpus().length,
      cpuModel: cpus()[0]?.model,
      memoryGb: Math.round(totalmem() / 2 ** 30),
      node: process.version,
      // `redis 7.0.15`, `valkey 9.1.2`: every cluster and the control Redis of the run.
      server: describeServer(binaries),
      serverPath: binaries.serverPath,
      cliPath: binaries.cliPath,
    },
    settings: describeSettings(options),
    cases: {} as Record<string, unknown>,
  };
  log(`slotfleet runs log to ${options.workerLogDir} (workers and API at the default level)`);
  const summaries: [string, CaseSummary][] = [];
  for (const spec of migrationCases(options.scale).filter((candidate) => options.cases.has(candidate.name))) {
    const summary = await runCase(spec, options);
    report.cases[spec.name] = summary;
    summaries.push([spec.name, summary]);
  }
  if (options.cases.has('enqueue')) report.cases.enqueue = await runEnqueueCase(options.runs);
  if (options.cases.has('queuefloor')) report.cases.queuefloor = await runQueueFloorCase(options);
  await mkdir('bench/results', { recursive: true });
  const file = join('bench/results', `${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  await writeFile(file, `${JSON.stringify(report, null, 2)}\n`);
  log('');
  log(`machine: ${JSON.stringify(report.machine)}`);
  if (options.scale !== 1)
    log(`scale ${options.scale}: the targets are stated for --scale 1, so here they say little`);
  for (const [name, summary] of summaries) for (const line of caseLines(name, summary)) log(line);
  for (const name of OTHER_CASE_NAMES) {
    const result = report.cases[name] as {
      seconds: { median: number | null };
      target?: string;
      targetMet?: boolean;
    };
    if (!result) continue;
    const target = result.target ? `  (target ${result.target}: ${metText(result.targetMet ?? null)})` : '';
    log(`${name}: median ${result.seconds.median} s${target}`);
  }
  for (const [name, summary] of summaries) for (const line of frontierLines(name, summary)) log(line);
  log(`results written to ${file}`);
}

/**
 * The workers are spawned with the bench's environment: a SLOTFLEET_* variable set there would reach
 * every variant and make the defaults row show something else. (Not read as configuration: only
 * the names are looked at, to refuse.) The server choice is the bench's own, and no worker setting.
 */
function refuseInheritedSettings(): void {
  const serverChoice: readonly string[] = SERVER_CHOICE_VARIABLES;
  const inherited = Object.keys(process.env).filter(
    (name) => name.startsWith('SLOTFLEET_') && !serverChoice.includes(name),
  );
  if (inherited.length > 0) {
    throw new Error(
      `${inherited.join(', ')} set in the environment would reach every slotfleet variant's workers: unset it, or pass it with --worker-env`,
    );
  }
}

/** What the JSON says each tool ran with: for slotfleet, the worker settings as the workers load them. */
function describeSettings(options: BenchOptions) {
  return {
    runs: options.runs,
    scale: options.scale,
    workers: WORKERS,
    tools: options.tools.map((tool) => tool.name),
    budgetsMs: options.budgetsMs,
    workerPlumbing: {
      ...WORKER_PLUMBING,
      SLOTFLEET_CLUSTER_URL: "the run's cluster",
      SLOTFLEET_CONTROL_URL: "the run's control Redis",
      SLOTFLEET_QUEUE_PREFIX: "the API's prefix",
    },
    workerEnv: options.workerEnv,
    workerNodeArgs: options.workerNodeArgs,
    logDir: options.workerLogDir,
    variants: Object.fromEntries(
      options.tools.map((tool) => [
        tool.name,
        tool.kind === 'slotfleet'
          ? {
              engine: tool.engine,
              warmupSlots: tool.warmupSlots,
              workerEnv: tool.workerEnv,
              limits: tool.budgetMs === undefined ? null : { maxClientLatencyMs: tool.budgetMs },
              worker: loadConfig({ ...WORKER_PLUMBING, ...tool.workerEnv }).worker,
            }
          : {
              cli: options.cli.flavor.name,
              engine: tool.engine,
              ...('pipeline' in tool ? { pipeline: tool.pipeline } : {}),
            },
      ]),
    ),
  };
}

/** Every tool --runs times, the order rotated each run, every run on a fresh cluster. */
async function runCase(spec: MigrationCase, options: BenchOptions): Promise<CaseSummary> {
  const { tools, runs } = options;
  const results: RunResult[] = [];
  for (let run = 0; run < runs; run++) {
    const order = tools.map((_, index) => tools[(index + run) % tools.length]!);
    for (const tool of order) {
      const result = await measure(spec, tool, options).catch(
        (error: Error): RunResult => ({
          tool: tool.name,
          seconds: Number.NaN,
          keysMoved: 0,
          slotsMoved: 0,
          verified: false,
          error: error.message,
        }),
      );
      results.push(result);
      log(`${spec.name} run ${run + 1}/${runs} ${tool.name}: ${runText(result)}`);
    }
  }
  return summarizeCase(spec, tools, results, options.cli.references);
}

function runText(result: RunResult): string {
  if (result.error) return `FAILED ${result.error}`;
  const cpu = result.cpuSeconds ? `, cpu s ${JSON.stringify(result.cpuSeconds)}` : '';
  const cpuWait = result.cpuWaitSeconds
    ? `, waited for a cpu s ${JSON.stringify(result.cpuWaitSeconds)}`
    : '';
  const latency = result.clientLatency;
  const roles = Object.entries(worstByRole(result)).map(
    ([role, worst]) => `${role}s p99 ${worst.p99Ms} max ${worst.maxMs}`,
  );
  const waits = latency
    ? `, client PING max ${latency.maxMs} ms p99 ${latency.p99Ms} ms${roles.length > 0 ? ` (worst ${roles.join(', ')} ms)` : ''}`
    : '';
  const engine = result.engine ? `, engine ${result.engine}` : '';
  return `${result.seconds.toFixed(2)} s, ${result.keysMoved} keys, ${result.slotsMoved} slot${result.slotsMoved === 1 ? '' : 's'}, verified ${result.verified}${engine}${cpu}${cpuWait}${waits}`;
}

/** A fresh cluster, seeded, with its empty masters added: what one run moves and where. */
interface Stage {
  readonly spec: MigrationCase;
  readonly cluster: SandboxCluster;
  readonly manifest: DatasetManifest;
  /** host:port of the first master, for redis-cli. */
  readonly seed: string;
  /** The masters the cluster was created with, by port. */
  readonly masters: readonly MasterRef[];
  /** The masters the move fills: the added ones, or the hot slot's new owner. */
  readonly targets: readonly MasterRef[];
  /** The hot slot's owner before the move (hot-slot only). */
  readonly hotSlotOwnerId?: string;
  /** Every master's part in the move, by port: what the probe's per-port figures mean. */
  readonly roles: Readonly<Record<number, NodeRole>>;
}

interface MasterRef {
  readonly id: string;
  readonly port: number;
}

/** What one tool's timed move gave, before the checks. */
interface Move {
  readonly seconds: number;
  readonly clientLatency: ClientLatency;
  readonly cpuSeconds: Record<string, number>;
  readonly cpuWaitSeconds: Record<string, number>;
  readonly workerPeakRssMb?: number;
  /** What the tool says it moved (slotfleet's migration record), checked against the cluster. */
  readonly reported?: { readonly keys: number; readonly slots: number };
  /** The engine slotfleet's migration ran with, from its record. */
  readonly engine?: MigrationEngine;
}

/** One timed run on a fresh cluster: stage, move, check, verify, tear down. */
async function measure(spec: MigrationCase, tool: ToolVariant, options: BenchOptions): Promise<RunResult> {
  const stage = await prepareStage(spec);
  try {
    const keysBefore = await keysOn(stage);
    const slotsBefore = await slotsOf(stage);
    const move =
      tool.kind === 'slotfleet'
        ? await moveWithSlotfleet(stage, tool, options)
        : await moveWithCli(stage, tool, options.cli);
    const keysMoved = (await keysOn(stage)) - keysBefore;
    if (move.reported && move.reported.keys !== keysMoved)
      throw new Error(`the record says ${move.reported.keys} keys moved, the targets gained ${keysMoved}`);
    const expected = expectedKeysMoved(spec);
    if (Math.abs(keysMoved - expected.keys) > expected.tolerance)
      throw new Error(`moved ${keysMoved} keys, expected ${expected.keys} +- ${expected.tolerance}`);
    const verified = await verify(stage, options.cli.path);
    const slotsMoved = (await slotsOf(stage)) - slotsBefore;
    if (move.reported && move.reported.slots !== slotsMoved)
      throw new Error(`the migration has ${move.reported.slots} slots, the targets gained ${slotsMoved}`);
    return {
      tool: tool.name,
      seconds: move.seconds,
      keysMoved,
      slotsMoved,
      verified,
      ...(move.workerPeakRssMb !== undefined ? { workerPeakRssMb: move.workerPeakRssMb } : {}),
      cpuSeconds: move.cpuSeconds,
      cpuWaitSeconds: move.cpuWaitSeconds,
      clientLatency: move.clientLatency,
      roles: stage.roles,
      ...(move.engine !== undefined ? { engine: move.engine } : {}),
    };
  } finally {
    await stage.cluster.stop();
  }
}

async function prepareStage(spec: MigrationCase): Promise<Stage> {
  const cluster = await SandboxCluster.start({
    masters: spec.masters,
    replicasPerMaster: 0,
    readyTimeoutMs: CONSENSUS_TIMEOUT_MS,
  });
  try {
    const hot = spec.move === 'hot-slot';
    const manifest = await seedDataset(cluster.seedUrl, {
      keys: spec.keys,
      types: 'string',
      valueBytes: spec.valueBytes,
      ...(hot ? { hashTag: hotTagForSlot(HOT_SLOT) } : {}),
    });
    const masters = (await cluster.masters())
      .sort((a, b) => a.port - b.port)
      .map(({ id, port }) => ({ id, port }));
    // Together: every node MEETs each new one, and the wait for consensus is one.
    const added: MasterRef[] = (
      spec.addedMasters > 0 ? await cluster.addEmptyMasters(spec.addedMasters, CONSENSUS_TIMEOUT_MS) : []
    ).map((master) => ({ id: master.id, port: master.process.port }));
    const roles: Record<number, NodeRole> = {};
    if (hot) {
      const ownerId = await ownerOfSlot(cluster, HOT_SLOT);
      const target = masters.find((master) => master.id !== ownerId)!;
      for (const master of masters)
        roles[master.port] = master.id === ownerId ? 'source' : master === target ? 'target' : 'bystander';
      return {
        spec,
        cluster,
        manifest,
        seed: seedOf(masters),
        masters,
        targets: [target],
        hotSlotOwnerId: ownerId,
        roles,
      };
    }
    for (const master of masters) roles[master.port] = 'source';
    for (const master of added) roles[master.port] = 'target';
    return { spec, cluster, manifest, seed: seedOf(masters), masters, targets: added, roles };
  } catch (error) {
    await cluster.stop();
    throw error;
  }
}

function seedOf(masters: readonly MasterRef[]): string {
  return `127.0.0.1:${masters[0]!.port}`;
}

async function moveWithSlotfleet(stage: Stage, tool: SlotfleetVariant, options: BenchOptions): Promise<Move> {
  const { cluster } = stage;
  const control = await startControlRedis();
  let api: Awaited<ReturnType<typeof startApi>> | undefined;
  let apiLog: ReturnType<typeof pino.destination> | undefined;
  let workers: ChildProcess[] = [];
  try {
    const config = loadConfig({
      SLOTFLEET_CLUSTER_URL: cluster.seedUrl,
      SLOTFLEET_CONTROL_URL: control.url,
      SLOTFLEET_API_PORT: '0',
    });
    const logDir = await logDirOf(tool, options);
    // At the default level, as `slotfleet api` logs (every request is a line).
    apiLog = pino.destination(join(logDir, 'api.log'));
    api = await startApi(config, createLogger({ level: config.logLevel, name: 'bench-api' }, apiLog));
    const apiUrl = api.url;
    await untilReady(apiUrl);
    workers = await startWorkers(
      tool,
      options,
      logDir,
      {
        SLOTFLEET_CLUSTER_URL: cluster.seedUrl,
        SLOTFLEET_CONTROL_URL: control.url,
        SLOTFLEET_QUEUE_PREFIX: config.queuePrefix,
      },
      config,
    );
    if (tool.warmupSlots > 0) await warmUp(apiUrl, stage, tool);
    const groups = {
      cluster: cluster.nodes.map((node) => node.pid),
      // Part of "cluster": every key moves into these nodes, so they are the first to run out of CPU.
      'cluster targets': stage.targets.map((target) => cluster.process(target.port).pid),
      control: [control.pid],
      workers: workers.map((worker) => worker.pid!),
    };
    const request = migrationRequest(stage, tool);
    if (options.slowlogMs !== undefined) await resetSlowlogs(cluster.nodes, options.slowlogMs);
    const observed = await observe(stage, groups, 'api', async () => {
      const startedAtMs = Date.now();
      const created = await postMigration(apiUrl, request.path, request.payload);
      return { startedAtMs, created, final: await waitForMigration(apiUrl, created.id) };
    });
    const { startedAtMs, created, final } = observed.value;
    if (final.state !== 'done')
      throw new Error(`migration ${final.state}: ${JSON.stringify(final.errors).slice(0, 300)}`);
    const workerPeakRssMb = Math.max(...(await Promise.all(workers.map((worker) => peakRssMb(worker.pid!)))));
    if (options.commandStats) {
      await logCommandStats('cluster', cluster.nodes);
      await logCommandStats('control', [control]);
    }
    if (options.slowlogMs !== undefined) await logSlowlogs(cluster.nodes, stage.roles, options.slowlogMs);
    await logPaces(control, config.queuePrefix, stage);
    return {
      // Until the migration's own end (its record's last update), not until the poll that saw it.
      seconds: (Date.parse(final.updatedAt) - startedAtMs) / 1000,
      clientLatency: observed.clientLatency,
      cpuSeconds: observed.cpuSeconds,
      cpuWaitSeconds: observed.cpuWaitSeconds,
      workerPeakRssMb,
      reported: { keys: final.keysMoved, slots: created.slots },
      engine: final.engine,
    };
  } finally {
    await stopProcesses(workers);
    await api?.close();
    apiLog?.end();
    await control.stop();
    await control.removeDir();
  }
}

/** The POST that starts the move: the variant's engine, and its client-latency budget if it has one. */
function migrationRequest(stage: Stage, tool: SlotfleetVariant): { path: string; payload: object } {
  const limits = tool.budgetMs === undefined ? {} : { limits: { maxClientLatencyMs: tool.budgetMs } };
  const engine = { engine: tool.engine };
  switch (stage.spec.move) {
    case 'hot-slot':
      return {
        path: 'migrations',
        payload: { moves: [{ slots: String(HOT_SLOT), target: stage.targets[0]!.id }], ...engine, ...limits },
      };
    case 'rebalance':
      return { path: 'rebalance', payload: { useEmptyMasters: true, ...engine, ...limits } };
    default: {
      const never: never = stage.spec.move;
      throw new Error(`unhandled move: ${never}`);
    }
  }
}

/**
 * The server's CLI, key by key at the variant's pipeline or with the servers' atomic slot migration
 * (valkey-cli sends one CLUSTER MIGRATESLOTS per source -> target pair and polls GETSLOTMIGRATIONS
 * every 100 ms until it is done).
 */
async function moveWithCli(stage: Stage, tool: CliVariant, cli: BenchOptions['cli']): Promise<Move> {
  const how =
    tool.engine === 'atomic'
      ? ['--cluster-use-atomic-slot-migration']
      : ['--cluster-pipeline', String(tool.pipeline)];
  let args: string[];
  switch (stage.spec.move) {
    case 'hot-slot':
      args = [
        '--cluster',
        'reshard',
        stage.seed,
        '--cluster-from',
        stage.hotSlotOwnerId!,
        '--cluster-to',
        stage.targets[0]!.id,
        '--cluster-slots',
        '1',
        '--cluster-yes',
        ...how,
      ];
      break;
    case 'rebalance':
      args = ['--cluster', 'rebalance', stage.seed, '--cluster-use-empty-masters', ...how];
      break;
    default: {
      const never: never = stage.spec.move;
      throw new Error(`unhandled move: ${never}`);
    }
  }
  const { cluster } = stage;
  const groups = {
    cluster: cluster.nodes.map((node) => node.pid),
    'cluster targets': stage.targets.map((target) => cluster.process(target.port).pid),
  };
  const observed = await observe(stage, groups, undefined, async () => {
    const started = performance.now();
    const child = execFileAsync(cli.path, args, { maxBuffer: 256 * 1024 * 1024, timeout: MOVE_DEADLINE_MS });
    const cliCpu = cpuOfChildUntilExit(child.child.pid!);
    await child;
    return { seconds: (performance.now() - started) / 1000, cliCpuSeconds: await cliCpu };
  });
  return {
    seconds: observed.value.seconds,
    clientLatency: observed.clientLatency,
    cpuSeconds: { ...observed.cpuSeconds, [cli.flavor.name]: round(observed.value.cliCpuSeconds) },
    cpuWaitSeconds: observed.cpuWaitSeconds,
  };
}

/**
 * Runs the timed part with the client probe on every master and the CPU of each process group read
 * before and after (`selfGroup`: the bench's own process, which hosts slotfleet's API, as that group),
 * the probe's own CPU as `probe`.
 */
async function observe<T>(
  stage: Stage,
  groups: Record<string, number[]>,
  selfGroup: string | undefined,
  timed: () => Promise<T>,
): Promise<{
  value: T;
  clientLatency: ClientLatency;
  cpuSeconds: Record<string, number>;
  cpuWaitSeconds: Record<string, number>;
}> {
  // The cluster's servers only: their wait for a CPU is what their clients waited with them.
  const servers = { cluster: groups.cluster ?? [], 'cluster targets': groups['cluster targets'] ?? [] };
  const waitBefore = await cpuWaitByGroup(servers);
  const cpuBefore = await cpuByGroup(groups, selfGroup);
  const probe = startLatencyProbes(stage.cluster.nodes.map((node) => node.port));
  try {
    const value = await timed();
    const clientLatency = await probe.stop();
    const cpuAfter = await cpuByGroup(groups, selfGroup);
    const waitAfter = await cpuWaitByGroup(servers);
    const cpuSeconds = Object.fromEntries(
      Object.keys(cpuAfter).map((group) => [group, round(cpuAfter[group]! - cpuBefore[group]!)]),
    );
    const cpuWaitSeconds = Object.fromEntries(
      Object.keys(waitAfter).map((group) => [group, round(waitAfter[group]! - waitBefore[group]!)]),
    );
    return {
      value,
      clientLatency,
      cpuSeconds: { ...cpuSeconds, probe: clientLatency.probeCpuSeconds },
      cpuWaitSeconds,
    };
  } finally {
    // A run that failed midway leaves no probe behind (stopping twice is harmless).
    await probe.stop().catch(() => undefined);
  }
}

/** DBSIZE summed over the stage's targets. */
async function keysOn(stage: Stage): Promise<number> {
  const sizes = await Promise.all(stage.targets.map((target) => dbSize(stage.cluster, target.port)));
  return sizes.reduce((sum, size) => sum + size, 0);
}

/** Slots the stage's targets own, as the cluster reports them. */
async function slotsOf(stage: Stage): Promise<number> {
  const topology = await stage.cluster.topology();
  const targetIds = new Set(stage.targets.map((target) => target.id));
  return topology.filter((node) => targetIds.has(node.id)).reduce((sum, node) => sum + node.slots, 0);
}

/** All keys present (DBSIZE), every 97th value and TTL checked, and redis-cli --cluster check. */
async function verify(stage: Stage, cliPath: string): Promise<boolean> {
  const { cluster, manifest } = stage;
  await cluster.waitForConsensus(CONSENSUS_TIMEOUT_MS);
  const present = await countKeys(cluster.seedUrl);
  if (present !== manifest.count) throw new Error(`${manifest.count - present} keys missing after the move`);
  const sample = await verifyDataset(cluster.seedUrl, manifest, { sampleEvery: 97 });
  if (!sample.ok) throw new Error(`verification failed: ${JSON.stringify(sample).slice(0, 300)}`);
  const check = await execFileAsync(cliPath, ['--cluster', 'check', stage.seed], {
    maxBuffer: 64 * 1024 * 1024,
    timeout: CONSENSUS_TIMEOUT_MS,
  }).then(
    (result) => result.stdout,
    (error: { stdout?: string }) => `FAILED ${error.stdout ?? ''}`,
  );
  if (check.startsWith('FAILED') || /\[ERR\]|\[WARNING\]/.test(check))
    throw new Error(`cluster check: ${check.slice(-400)}`);
  return true;
}

async function runEnqueueCase(runs: number) {
  const seconds: number[] = [];
  for (let run = 0; run < runs; run++) {
    seconds.push(await measureEnqueue());
    log(`enqueue run ${run + 1}/${runs}: ${seconds.at(-1)!.toFixed(3)} s`);
  }
  const enqueueSeconds = stats(seconds);
  return {
    slots: 16384,
    seconds: enqueueSeconds,
    target: `< ${ENQUEUE_TARGET_SECONDS} s`,
    targetMet: enqueueSeconds.median !== null && enqueueSeconds.median < ENQUEUE_TARGET_SECONDS,
  };
}

async function measureEnqueue(): Promise<number> {
  const cluster = await SandboxCluster.start({ masters: 3, replicasPerMaster: 0 });
  const control = await startControlRedis();
  try {
    const added = await cluster.addEmptyMaster();
    const config = loadConfig({
      SLOTFLEET_CLUSTER_URL: cluster.seedUrl,
      SLOTFLEET_CONTROL_URL: control.url,
      SLOTFLEET_API_PORT: '0',
      SLOTFLEET_LOG_LEVEL: 'warn',
    });
    const api = await startApi(config, createLogger({ level: 'warn', name: 'bench-api' }));
    await untilReady(api.url);
    try {
      const started = performance.now();
      const response = await fetch(`${api.url}/v1/clusters/default/migrations`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ moves: [{ slots: '0-16383', target: added.id }] }),
      });
      const seconds = (performance.now() - started) / 1000;
      const created = (await response.json()) as { slots: number; message?: string };
      if (response.status !== 202 || created.slots !== 16384)
        throw new Error(`enqueue: ${response.status} ${created.message}`);
      return seconds;
    } finally {
      await api.close();
    }
  } finally {
    await control.stop();
    await control.removeDir();
    await cluster.stop();
  }
}

/** The queue floor at the concurrency the defaults row's workers run with. */
async function runQueueFloorCase(options: BenchOptions) {
  const { concurrency } = loadConfig({ ...WORKER_PLUMBING, ...options.workerEnv }).worker;
  const floors: QueueFloorResult[] = [];
  for (let run = 0; run < options.runs; run++) {
    floors.push(await measureQueueFloor(REBALANCE_SLOTS, concurrency));
    const last = floors.at(-1)!;
    log(
      `queuefloor run ${run + 1}/${options.runs}: ${last.jobs} empty jobs in ${last.seconds.toFixed(2)} s, cpu s ${JSON.stringify(last.cpuSeconds)}`,
    );
  }
  return {
    jobs: REBALANCE_SLOTS,
    concurrency,
    seconds: stats(floors.map((floor) => floor.seconds)),
    cpuSecondsPerRun: floors.map((floor) => floor.cpuSeconds),
  };
}

/** A slotfleet run's log directory: its workers' logs and its API's. */
async function logDirOf(tool: SlotfleetVariant, options: BenchOptions): Promise<string> {
  const logDir = join(options.workerLogDir, `${tool.name}-${new Date().toISOString()}`);
  await mkdir(logDir, { recursive: true });
  return logDir;
}

async function startWorkers(
  tool: SlotfleetVariant,
  options: BenchOptions,
  logDir: string,
  run: { SLOTFLEET_CLUSTER_URL: string; SLOTFLEET_CONTROL_URL: string; SLOTFLEET_QUEUE_PREFIX: string },
  config: Config,
): Promise<ChildProcess[]> {
  const workers = spawnWorkerProcesses({
    count: WORKERS,
    nodeArgs: options.workerNodeArgs,
    logDir,
    env: { ...run, ...WORKER_PLUMBING, ...tool.workerEnv },
  });
  try {
    await untilWorkersConnected(config, workers);
  } catch (error) {
    await stopProcesses(workers);
    throw error;
  }
  return workers;
}

/**
 * A worker process is ready when its BullMQ workers connected, which it does last (untimed): until
 * both queues count one blocking connection per process.
 */
async function untilWorkersConnected(config: Config, workers: readonly ChildProcess[]): Promise<void> {
  const queues = [QueueName.MigrateSlot, QueueName.FinalizeSlot].map(
    (name) =>
      new Queue(name, {
        connection: controlConnectionOptions(config.control, ConnectionRole.Worker),
        prefix: config.queuePrefix,
      }),
  );
  try {
    const deadline = Date.now() + 30_000;
    for (;;) {
      const counts = await Promise.all(queues.map((queue) => queue.getWorkersCount()));
      if (counts.every((count) => count >= workers.length)) return;
      const exited = workers.find((worker) => worker.exitCode !== null || worker.signalCode !== null);
      if (exited)
        throw new Error(
          `a worker process exited (${exited.exitCode ?? exited.signalCode}) before it connected`,
        );
      if (Date.now() > deadline)
        throw new Error(`the workers did not connect within 30 s: ${counts.join(', ')} of ${workers.length}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  } finally {
    await Promise.all(queues.map((queue) => queue.close()));
  }
}

function parseWorkerEnv(text: string): Record<string, string> {
  const pairs = text.split(',').filter(Boolean);
  return Object.fromEntries(
    pairs.map((pair) => {
      const [name, value] = pair.split('=');
      if (!name?.startsWith('SLOTFLEET_') || value === undefined)
        throw new Error(`--worker-env: expected SLOTFLEET_NAME=value[,...], got "${pair}"`);
      return [name, value];
    }),
  );
}

/**
 * Moves up to the variant's warm-up count of slots of the first master to the second and back, with
 * its engine, untimed: the worker processes are then as warm (JIT-compiled) as a standing fleet's,
 * and the cluster's slot map is as before.
 */
async function warmUp(apiUrl: string, stage: Stage, tool: SlotfleetVariant): Promise<void> {
  const count = tool.warmupSlots;
  const [from, to] = [stage.masters[0]!, stage.masters[1]!];
  const client = stage.cluster.process(from.port).client();
  const slots: number[] = [];
  try {
    const view = parseClusterNodes(String(await client.call('CLUSTER', 'NODES')));
    const owned: number[] = [];
    for (let slot = 0; slot < 16384; slot++) {
      if (ownerOf(view, slot) === from.id && slot !== HOT_SLOT) owned.push(slot);
    }
    // One slot stays: a master that gives away its last one becomes a replica (Redis 7.0 replica
    // migration), and could not take the slots back (the wide case's masters own 1365 each).
    slots.push(...owned.slice(0, Math.min(count, owned.length - 1)));
  } finally {
    client.disconnect();
  }
  for (const target of [to, from]) {
    const created = await postMigration(apiUrl, 'migrations', {
      moves: [{ slots: slots.join(','), target: target.id }],
      engine: tool.engine,
    });
    const final = await waitForMigration(apiUrl, created.id);
    if (final.state !== 'done') throw new Error(`warm-up migration ${final.state}`);
  }
  await stage.cluster.waitForConsensus(CONSENSUS_TIMEOUT_MS);
}

/** POST /v1/clusters/default/<path>; anything but 202 fails the run with the API's message. */
async function postMigration(
  apiUrl: string,
  path: string,
  payload: object,
): Promise<{ id: string; slots: number }> {
  const response = await fetch(`${apiUrl}/v1/clusters/default/${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(payload),
  });
  const created = (await response.json()) as { id: string; slots: number; message?: string };
  if (response.status !== 202) throw new Error(`POST ${path}: ${response.status} ${created.message}`);
  return created;
}

/** Until GET /readyz says the API reaches the control Redis and the cluster (untimed). */
async function untilReady(apiUrl: string): Promise<void> {
  const deadline = Date.now() + 30_000;
  while ((await fetch(`${apiUrl}/readyz`)).status !== 200) {
    if (Date.now() > deadline) throw new Error('the API did not become ready within 30 s');
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function waitForMigration(apiUrl: string, id: string) {
  const deadline = Date.now() + MOVE_DEADLINE_MS;
  for (;;) {
    const view = (await (await fetch(`${apiUrl}/v1/migrations/${id}`)).json()) as {
      state: string;
      updatedAt: string;
      keysMoved: number;
      engine: MigrationEngine;
      errors: unknown[];
    };
    if (['done', 'failed', 'cancelled'].includes(view.state)) return view;
    if (Date.now() > deadline)
      throw new Error(`migration ${id} still ${view.state} after ${MOVE_DEADLINE_MS / 60_000} minutes`);
    // The time is taken from the record, so polling faster would only take CPU from the run.
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}

async function dbSize(cluster: SandboxCluster, port: number): Promise<number> {
  const client = cluster.process(port).client();
  try {
    return await client.dbsize();
  } finally {
    client.disconnect();
  }
}

async function ownerOfSlot(cluster: SandboxCluster, slot: number): Promise<string> {
  const client = cluster.nodes[0]!.client();
  try {
    const owner = ownerOf(parseClusterNodes(String(await client.call('CLUSTER', 'NODES'))), slot);
    if (!owner) throw new Error(`slot ${slot} has no owner`);
    return owner;
  } finally {
    client.disconnect();
  }
}

/** A hash tag whose keys all land in `slot` (so redis-cli reshard --cluster-slots 1 takes it). */
function hotTagForSlot(slot: number): string {
  for (let i = 0; i < 1_000_000; i++) {
    const tag = `{hot${i}}`;
    if (calculateSlot(tag) === slot) return tag;
  }
  throw new Error(`no tag found for slot ${slot}`);
}

/** The pace each source node ended at (src/shared/domain/pacing.ts), when the run was paced. */
async function logPaces(control: RedisProcess, prefix: string, stage: Stage): Promise<void> {
  const client = control.client();
  try {
    const keys = await client.keys(`${prefix}:pace:*`);
    const paces = await Promise.all(
      keys.map(async (key) => {
        const [slots, batches, batchKeys, latencyMs] = await client.hmget(
          key,
          'slots',
          'batches',
          'batchKeys',
          'latencyMs',
        );
        const node = stage.masters.find((each) => key.endsWith(`:${each.id}`));
        return `${node?.port ?? key}: ${slots} slots x ${batches} batches x ${batchKeys} keys (last wait ${latencyMs} ms)`;
      }),
    );
    if (paces.length > 0) log(`  paces at the end: ${paces.sort().join('; ')}`);
  } finally {
    client.disconnect();
  }
}

async function logCommandStats(group: string, servers: readonly RedisProcess[]): Promise<void> {
  const totals = new Map<string, { calls: number; usec: number }>();
  for (const server of servers) {
    const client = server.client();
    try {
      const text = String(await client.info('commandstats'));
      for (const match of text.matchAll(/cmdstat_([^:]+):calls=(\d+),usec=(\d+)/g)) {
        const total = totals.get(match[1]!) ?? { calls: 0, usec: 0 };
        total.calls += Number(match[2]);
        total.usec += Number(match[3]);
        totals.set(match[1]!, total);
      }
    } finally {
      client.disconnect();
    }
  }
  const top = [...totals].sort((a, b) => b[1].usec - a[1].usec).slice(0, 12);
  log(
    `  ${group} commandstats: ${top.map(([name, t]) => `${name} ${t.calls} calls ${Math.round(t.usec / 1000)} ms`).join('; ')}`,
  );
}

/** The cluster scripts' SHA1s, to name them in the slowlog. */
const NODE_SCRIPT_NAMES = scriptNamesBySha(NODE_SCRIPTS);

/** Entries kept per node: enough for every batch of a run above a few milliseconds. */
const SLOWLOG_ENTRIES = 10_000;

async function resetSlowlogs(servers: readonly RedisProcess[], thresholdMs: number): Promise<void> {
  await Promise.all(
    servers.map(async (server) => {
      const client = server.client();
      try {
        await client.config('SET', 'slowlog-log-slower-than', String(Math.round(thresholdMs * 1000)));
        await client.config('SET', 'slowlog-max-len', String(SLOWLOG_ENTRIES));
        await client.call('SLOWLOG', 'RESET');
      } finally {
        client.disconnect();
      }
    }),
  );
}

/**
 * What the masters ran for the threshold or longer, by role and command (the cluster scripts by
 * their names, see slowlog.ts; a command a script ran is an entry of its own too): count, median
 * and longest. A client that arrived as such a command began waited for all of it. The time is the
 * command's wall time, so a node that waited for a core meanwhile shows it; work outside commands
 * (the cluster-config save in beforeSleep, a fork) is not in it.
 */
async function logSlowlogs(
  servers: readonly RedisProcess[],
  roles: Readonly<Record<number, NodeRole>>,
  thresholdMs: number,
): Promise<void> {
  const byKind = new Map<string, number[]>();
  for (const server of servers) {
    const client = server.client();
    try {
      const entries = (await client.call('SLOWLOG', 'GET', String(SLOWLOG_ENTRIES))) as [
        number,
        number,
        number,
        Buffer[] | string[],
      ][];
      for (const [, , micros, args] of entries) {
        const kind = `${roles[server.port] ?? 'other'} ${slowlogCommand(args.map(String), NODE_SCRIPT_NAMES)}`;
        const durations = byKind.get(kind) ?? [];
        durations.push(micros / 1000);
        byKind.set(kind, durations);
      }
    } finally {
      client.disconnect();
    }
  }
  const lines = [...byKind]
    .sort((a, b) => b[1].length - a[1].length)
    .map(([kind, durations]) => {
      const sorted = durations.sort((a, b) => a - b);
      const median = sorted[Math.floor(sorted.length / 2)]!;
      return `${kind}: ${sorted.length} x, median ${median.toFixed(1)} ms, longest ${sorted.at(-1)!.toFixed(1)} ms`;
    });
  log(`  commands of ${thresholdMs} ms or longer: ${lines.length > 0 ? lines.join('; ') : 'none'}`);
}

function log(line: string): void {
  process.stdout.write(`${line}\n`);
}

main().catch((error: unknown) => {
  process.stderr.write(`bench: ${(error as Error).stack ?? error}\n`);
  process.exitCode = 1;
});
