#!/usr/bin/env node
/**
 * The slotfleet command line. Each command reads the configuration once (loadConfig) and hands it
 * down; `demo` starts its own local servers and needs no configuration at all.
 */
import { ENVIRONMENT, loadConfig } from '../shared/config.js';
import { createLogger } from '../shared/logger.js';
import { lowerCpuPriority } from '../shared/process-priority.js';
import {
  ExitCode,
  failureReport,
  packageVersion,
  parseCommandLine,
  positiveInteger,
} from './command-line.js';
import { OPERATOR_COMMANDS, runOperatorCommand } from './operator.js';

const USAGE = `slotfleet: move Redis Cluster slots with a fleet of workers

Usage:
  slotfleet demo [--keys N] [--workers N] [--keep]  local servers, data, a new master, rebalance, verify
  slotfleet rebalance|reshard|drain|fix ...  plan a migration through the API (--dry-run, --wait, --json)
  slotfleet status [ID] | pause|resume|cancel ID
  slotfleet limit ID [--keys-per-second N] [--bytes-per-second N] [--batch-keys N]   (none clears one)
  slotfleet api                             run the HTTP API
  slotfleet worker                          run a worker (any number, on any host)
  slotfleet <command> --help
  slotfleet --version

Configuration (environment):
${Object.entries(ENVIRONMENT)
  .map(([name, meaning]) => `  ${name.padEnd(30)} ${meaning}`)
  .join('\n')}
`;

type Command = (args: string[]) => Promise<ExitCode>;

const commands: Record<string, Command> = {
  ...Object.fromEntries(
    OPERATOR_COMMANDS.map((name) => [
      name,
      (args: string[]) => runOperatorCommand(name, args, loadConfig(process.env)),
    ]),
  ),
  api: async (args) => {
    if (wantsHelp(args))
      return help('slotfleet api: run the HTTP API (see the configuration list in slotfleet --help)');
    const config = loadConfig(process.env);
    const log = createLogger({ level: config.logLevel, name: 'slotfleet-api' });
    lowerCpuPriority(config.nice, log);
    const { startApi } = await import('../producer/server.js');
    const api = await startApi(config, log);
    if (Object.keys(config.clusters).length === 0) {
      log.warn('no cluster configured: set SLOTFLEET_CLUSTER_URL (or SLOTFLEET_CLUSTERS)');
    }
    await untilSignal(log, config.shutdownTimeoutMs, () => api.close());
    return ExitCode.Ok;
  },
  worker: async (args) => {
    if (wantsHelp(args))
      return help('slotfleet worker: run a slot worker (see slotfleet --help for configuration)');
    const config = loadConfig(process.env);
    const log = createLogger({ level: config.logLevel, name: 'slotfleet-worker' });
    lowerCpuPriority(config.nice, log);
    const { startWorker } = await import('../workers/worker.js');
    const worker = await startWorker(config, log);
    await untilSignal(log, config.shutdownTimeoutMs, () => worker.close());
    return ExitCode.Ok;
  },
  demo: async (args) => {
    const { values } = parseCommandLine({
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
          '  the workers, verifies every key, and stops everything it started. It runs redis-server, else\n' +
          '  valkey-server; SLOTFLEET_SERVER_BIN names another (a name or a path; SLOTFLEET_CLI_BIN its CLI).',
      );
    }
    const keys = positiveInteger(values.keys, '--keys');
    const workers = positiveInteger(values.workers, '--workers');
    const [{ runDemo }, { serverChoiceFromEnvironment }] = await Promise.all([
      import('./demo.js'),
      import('../sandbox/index.js'),
    ]);
    return runDemo({ keys, workers, keep: values.keep, server: serverChoiceFromEnvironment(process.env) });
  },
};

/** `api` and `worker` take no flags but --help: anything else is refused, not ignored. */
function wantsHelp(args: string[]): boolean {
  const { values } = parseCommandLine({ args, options: { help: { type: 'boolean', short: 'h' } } });
  return values.help === true;
}

function help(text: string): ExitCode {
  process.stdout.write(`${text}\n`);
  return ExitCode.Ok;
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

async function main(): Promise<ExitCode> {
  const [name, ...args] = process.argv.slice(2);
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(USAGE);
    return name ? ExitCode.Ok : ExitCode.Usage;
  }
  if (name === '--version' || name === '-v') {
    process.stdout.write(`${packageVersion()}\n`);
    return ExitCode.Ok;
  }
  const command = Object.hasOwn(commands, name) ? commands[name] : undefined;
  if (!command) {
    process.stderr.write(`slotfleet: unknown command "${name}" (slotfleet --help lists them)\n`);
    return ExitCode.Usage;
  }
  try {
    return await command(args);
  } catch (error) {
    const report = failureReport(error, name);
    process.stderr.write(report.text);
    return report.exitCode;
  }
}

main().then((code) => {
  process.exitCode = code;
});
