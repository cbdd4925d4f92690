import { spawn } from 'node:child_process';
import { createWriteStream, existsSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startApi } from '../producer/server.js';
import {
  chooseServer,
  describeServer,
  type RedisBinariesOptions,
  type RedisProcess,
  requireRedisBinaries,
  SandboxCluster,
  seedDataset,
  spawnWorkerProcesses,
  startControlRedis,
  stopProcesses,
  verifyDataset,
} from '../sandbox/index.js';
import { loadConfig } from '../shared/config.js';
import { MigrationState } from '../shared/domain/migration.js';
import { formatSlotRanges } from '../shared/domain/slots.js';
import { parseClusterNodes, slotOwners } from '../shared/domain/topology.js';
import { createLogger } from '../shared/logger.js';
import { ApiClient, refusalMessage } from './api-client.js';
import { ExitCode } from './command-line.js';
import type { MigrationCreatedView } from './migration-view.js';
import { pollMigration, printProgress } from './progress.js';

export interface DemoOptions {
  readonly keys: number;
  readonly workers: number;
  /** Leave everything running until Ctrl-C instead of stopping at the end. @defaultValue false */
  readonly keep?: boolean;
  /** The server to run (SLOTFLEET_SERVER_BIN, SLOTFLEET_CLI_BIN). @defaultValue redis-server, else valkey-server */
  readonly server?: RedisBinariesOptions;
}

const say = (text: string) => process.stdout.write(`${text}\n`);

/** The repository's machine setup, beside dist/ in a clone; an installed package has none. */
const SETUP_SCRIPT = fileURLToPath(new URL('../../scripts/setup', import.meta.url));

/**
 * Installs a server when the machine has none (`scripts/setup demo`: apt-get as root or through
 * `sudo -n`, after saying what and why; where it cannot, it prints the command and fails). Skipped
 * when the user named a server, and where the script is absent (an installed package): there a
 * missing server still fails, in requireRedisBinaries, naming the command that installs it.
 * False when the setup failed: it has said why.
 */
async function setUpMachine(server: RedisBinariesOptions): Promise<boolean> {
  const named = server.serverPath !== undefined || server.cliPath !== undefined;
  if (named || !existsSync(SETUP_SCRIPT)) return true;
  // No stdin: nothing the setup runs may wait for an answer.
  const child = spawn('bash', [SETUP_SCRIPT, 'demo'], { stdio: ['ignore', 'inherit', 'inherit'] });
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', resolve);
  });
  return code === 0;
}

export async function runDemo(options: DemoOptions): Promise<ExitCode> {
  if (!(await setUpMachine(options.server ?? {}))) return ExitCode.Failed;
  chooseServer(options.server ?? {});
  const binaries = await requireRedisBinaries();
  const workDir = await mkdtemp(join(tmpdir(), 'slotfleet-demo-'));
  say(`slotfleet demo: ${describeServer(binaries)} (${binaries.serverPath}); logs in ${workDir}`);
  const cleanups: (() => Promise<unknown>)[] = [];
  const cleanup = async () => {
    for (const step of cleanups.reverse()) await step().catch(() => undefined);
    cleanups.length = 0;
  };
  const onSignal = () => {
    say('\ninterrupted: stopping everything the demo started');
    cleanup().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    let started = Date.now();
    const control: RedisProcess = await startControlRedis();
    cleanups.push(async () => {
      await control.stop();
      await control.removeDir();
    });
    const cluster = await SandboxCluster.start({ masters: 3, replicasPerMaster: 1 });
    cleanups.push(() => cluster.stop());
    say(
      `started a control Redis and a 3 x 1 Redis Cluster of ${describeServer(cluster.server)} in ${seconds(started)} (seed ${cluster.seedUrl})`,
    );
    say(`server ports: ${[control.port, ...cluster.nodes.map((node) => node.port)].join(' ')}`);

    started = Date.now();
    const manifest = await seedDataset(cluster.seedUrl, {
      keys: options.keys,
      types: 'mixed',
      ttlFraction: 0.2,
    });
    say(
      `loaded ${options.keys.toLocaleString()} keys (string, hash, list, set, zset, stream; 20% with TTL) in ${seconds(started)}`,
    );

    const added = await cluster.addEmptyMaster();
    say(`added an empty master 127.0.0.1:${added.process.port}`);

    const config = loadConfig({
      SLOTFLEET_CLUSTER_URL: cluster.seedUrl,
      SLOTFLEET_CONTROL_URL: control.url,
      SLOTFLEET_API_PORT: '0',
      SLOTFLEET_METRICS_PORT: '0',
      SLOTFLEET_QUEUE_PREFIX: 'demo',
      SLOTFLEET_LOG_LEVEL: 'info',
    });
    const apiLog = createWriteStream(join(workDir, 'api.log'));
    const api = await startApi(config, createLogger({ level: 'info', name: 'slotfleet-api' }, apiLog));
    cleanups.push(() => api.close());
    const workers = spawnWorkerProcesses({
      count: options.workers,
      env: {
        SLOTFLEET_CLUSTER_URL: cluster.seedUrl,
        SLOTFLEET_CONTROL_URL: control.url,
        SLOTFLEET_QUEUE_PREFIX: config.queuePrefix,
        SLOTFLEET_LOG_LEVEL: 'info',
      },
      logDir: workDir,
    });
    cleanups.push(() => stopProcesses(workers));
    say(
      `API on ${api.url}, ${options.workers} worker processes (pids ${workers.map((w) => w.pid).join(', ')})`,
    );

    const client = new ApiClient(api.url, undefined);
    const moves = await quarterOntoNewMaster(cluster, added.id);
    const response = await client.request('POST', '/v1/clusters/default/migrations', { moves });
    if (response.status !== 202)
      throw new Error(`POST /v1/clusters/default/migrations: ${refusalMessage(response)}`);
    const created = response.body as MigrationCreatedView;
    say(`migration ${created.id}: ${created.slots} slots to 127.0.0.1:${added.process.port}`);

    started = Date.now();
    const final = await pollMigration(() => client.migration(created.id), {
      intervalMs: 200,
      onView: printProgress(process.stdout, 1_000),
    });
    const elapsedSeconds = (Date.now() - started) / 1000;

    const verifyStarted = Date.now();
    const verification = await verifyDataset(cluster.seedUrl, manifest);
    say(
      verification.ok
        ? `verified all ${verification.checked.toLocaleString()} keys (value and TTL) in ${seconds(verifyStarted)}: nothing lost`
        : `VERIFICATION FAILED: ${verification.missingCount} missing, ${verification.wrongValueCount} wrong values, ${verification.wrongTtlCount} wrong TTLs`,
    );
    say('');
    say('summary');
    say(`  server      ${describeServer(cluster.server)}`);
    say(`  migration   ${created.id}: ${final.state}`);
    say(
      `  slots       ${final.slots.done} done, ${final.slots.failed} failed, ${final.slots.cancelled} cancelled of ${final.slotsTotal}`,
    );
    say(
      `  keys moved  ${final.keysMoved.toLocaleString()} in ${elapsedSeconds.toFixed(1)} s (${Math.round(final.keysMoved / Math.max(elapsedSeconds, 0.001)).toLocaleString()} keys/s)`,
    );
    say(
      `  errors      ${
        final.errors.length === 0
          ? 'none'
          : final.errors
              .slice(0, 5)
              .map((e) => `slot ${e.slot}: ${e.code}`)
              .join('; ')
      }`,
    );
    say(`  verified    ${verification.ok ? 'yes' : 'NO'}`);
    say(`  API         ${api.url}/v1/migrations/${created.id}`);
    say(`  API docs    ${api.url}/docs`);
    say(`  queue UI    ${api.url}/queues`);
    say(`  metrics     ${api.url}/metrics (API), worker /metrics on their own ports (see ${workDir})`);
    const ok = final.state === MigrationState.Done && verification.ok;
    if (options.keep) {
      say(`\n--keep: everything stays up (cluster seed ${cluster.seedUrl}); Ctrl-C stops it all`);
      await new Promise<void>(() => undefined);
    }
    return ok ? ExitCode.Ok : ExitCode.Failed;
  } finally {
    say('stopping everything the demo started');
    await cleanup();
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
  }
}

/** A quarter of every master's slots (its last ones), so four masters end up even. */
async function quarterOntoNewMaster(cluster: SandboxCluster, newMasterId: string) {
  const client = cluster.nodes[0]!.client();
  const owners = slotOwners(parseClusterNodes(String(await client.call('CLUSTER', 'NODES'))));
  client.disconnect();
  const byOwner = new Map<string, number[]>();
  owners.forEach((owner, slot) => {
    if (owner && owner !== newMasterId) byOwner.set(owner, [...(byOwner.get(owner) ?? []), slot]);
  });
  const slots = [...byOwner.values()].flatMap((owned) =>
    owned.slice(owned.length - Math.floor(owned.length / 4)),
  );
  return [{ slots: formatSlotRanges(slots), target: newMasterId }];
}

function seconds(since: number): string {
  return `${((Date.now() - since) / 1000).toFixed(1)} s`;
}
