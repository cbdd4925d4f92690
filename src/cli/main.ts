#!/usr/bin/env node
/**
 * The slotfleet command line. Each command reads the configuration once (loadConfig) and hands it
 * down; `demo` starts its own local servers and needs no configuration at all.
 */
import { parseArgs } from 'node:util';
import { ENVIRONMENT, loadConfig } from '../shared/config.js';
import { SlotfleetError } from '../shared/errors.js';
import { createLogger } from '../shared/logger.js';

const USAGE = `slotfleet: move Redis Cluster slots with a fleet of workers

Usage:
  slotfleet demo [--keys N] [--workers N] [--keep]  local servers, data, a new master, rebalance, verify
  slotfleet rebalance|reshard|drain|fix ...  plan a migration through the API (--dry-run, --wait, --json)
  slotfleet status [ID] | pause|resume|cancel ID
  slotfleet limit ID [--keys-per-second N] [--bytes-per-second N] [--batch-keys N]   (none clears one)
  slotfleet api                             run the HTTP API
  slotfleet worker                          run a worker (any number, on any host)
  slotfleet <command> --help

Configuration (environment):
${Object.entries(ENVIRONMENT)
  .map(([name, meaning]) => `  ${name.padEnd(30)} ${meaning}`)
  .join('\n')}
`;

type Command = (args: string[]) => Promise<number>;

const operatorCommands = [
  'rebalance',
  'reshard',
  'drain',
  'fix',
  'status',
  'pause',
  'resume',
  'cancel',
  'limit',
];

const commands: Record<string, Command> = {
  ...Object.fromEntries(
    operatorCommands.map((name) => [
      name,
      async (args: string[]) => {
        const { runOperatorCommand } = await import('./operator.js');
        return runOperatorCommand(name, args, loadConfig(process.env));
      },
    ]),
  ),
  api: async (args) => {
    if (wantsHelp(args))
      return help('slotfleet api: run the HTTP API (see the configuration list in slotfleet --help)');
    const config = loadConfig(process.env);
    const log = createLogger({ level: config.logLevel, name: 'slotfleet-api' });
    const { startApi } = await import('../producer/server.js');
    const api = await startApi(config, log);
    if (Object.keys(config.clusters).length === 0) {
      log.warn('no cluster configured: set SLOTFLEET_CLUSTER_URL (or SLOTFLEET_CLUSTERS)');
    }
    await untilSignal(log, config.shutdownTimeoutMs, () => api.close());
    return 0;
  },
  worker: async (args) => {
    if (wantsHelp(args))
      return help('slotfleet worker: run a slot worker (see slotfleet --help for configuration)');
    const config = loadConfig(process.env);
    const log = createLogger({ level: config.logLevel, name: 'slotfleet-worker' });
    const { startWorker } = await import('../workers/worker.js');
    const worker = await startWorker(config, log);
    await untilSignal(log, config.shutdownTimeoutMs, () => worker.close());
    return 0;
  },
  demo: async (args) => {
    const { values } = parseArgs({
      args,
      options: {
        keys: { type: 'string', default: '200000' },
        workers: { type: 'string', default: '2' },
        keep: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h' },
      },
    });
    if (values.help) {
      return help(
        'slotfleet demo [--keys N] [--workers N] [--keep]\n' +
          '  Starts a control Redis and a 3-master x 1-replica Redis Cluster on loopback, loads N keys of\n' +
          '  mixed types, adds an empty master, moves a quarter of the slots onto it through the API and\n' +
          '  the workers, verifies every key, and stops everything it started.',
      );
    }
    const keys = positiveInteger(values.keys, '--keys');
    const workers = positiveInteger(values.workers, '--workers');
    const { runDemo } = await import('./demo.js');
    return runDemo({ keys, workers, keep: values.keep });
  },
};

function wantsHelp(args: string[]): boolean {
  return args.includes('--help') || args.includes('-h');
}

function help(text: string): number {
  process.stdout.write(`${text}\n`);
  return 0;
}

function positiveInteger(text: string | undefined, flag: string): number {
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value < 1)
    throw new SlotfleetError('INVALID_REQUEST', `${flag} must be a whole number above 0`);
  return value;
}

/**
 * Runs until SIGINT or SIGTERM, then closes with a deadline (SLOTFLEET_SHUTDOWN_TIMEOUT_MS): a
 * worker's slot jobs in flight finish their batch and hand their slot back. Past the deadline, or on
 * a second signal, the process exits at once, non-zero: its jobs keep their lock until it runs out
 * (SLOTFLEET_JOB_LOCK_MS), then the stalled-job check gives them to another worker, their slots
 * open but safe meanwhile.
 */
async function untilSignal(
  log: { info: (o: object, m: string) => void; error: (o: object, m: string) => void },
  deadlineMs: number,
  close: () => Promise<void>,
): Promise<void> {
  await new Promise<void>((resolve) => {
    const stop = (signal: NodeJS.Signals) => {
      log.info({ signal, deadlineMs }, 'shutting down');
      const timer = setTimeout(() => {
        log.error(
          { deadlineMs },
          'shutdown deadline passed: exiting; jobs in flight go to other workers when their lock expires',
        );
        process.exit(1);
      }, deadlineMs);
      timer.unref();
      process.once('SIGINT', () => process.exit(130));
      process.once('SIGTERM', () => process.exit(143));
      close().then(resolve, resolve);
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
}

async function main(): Promise<number> {
  const [name, ...args] = process.argv.slice(2);
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(USAGE);
    return name ? 0 : 2;
  }
  const command = commands[name];
  if (!command) {
    process.stderr.write(`slotfleet: unknown command "${name}"\n\n${USAGE}`);
    return 2;
  }
  return command(args);
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    const message =
      error instanceof SlotfleetError
        ? `${error.code}: ${error.message}`
        : String((error as Error)?.stack ?? error);
    process.stderr.write(`slotfleet: ${message}\n`);
    process.exitCode = 1;
  },
);
