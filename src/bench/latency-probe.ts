/**
 * What a client of the cluster sees while slots move: a PING every 20 ms on each master for the
 * timed part of a run, for every tool alike. MIGRATE blocks its source until the target has restored
 * the batch, so the more slots drain from one node at once, the longer a client's command can wait
 * behind them: the bench reports the worst wait and the 99th percentile next to the speed, over all
 * masters and per master (byPort), so a run shows whether its sources or its targets made clients wait.
 *
 * The probe is a child process (`node latency-probe.js <port>...`, stopped by an IPC message), so
 * the bench's own event loop (it also hosts slotfleet's API) adds nothing to what it measures. On
 * this machine the fleet and the cluster share two cores, so a wait also includes time a node (or
 * the probe) spent waiting for a core. (`redis-cli --latency` cannot serve: without a terminal it
 * samples one second and exits.)
 */
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { encodeCommand, RespPipeline } from '../sandbox/resp-pipeline.js';

export interface NodeLatency {
  /** The 99th percentile of this master's round trips, in ms. */
  readonly p99Ms: number;
  /** Its longest round trip, in ms. */
  readonly maxMs: number;
}

export interface ClientLatency {
  /** The longest PING round trip on any master, in ms. */
  readonly maxMs: number;
  /** The 99th percentile of all masters' round trips, in ms. */
  readonly p99Ms: number;
  readonly samples: number;
  /** Each master's own figures, by port. */
  readonly byPort: Readonly<Record<number, NodeLatency>>;
  /** CPU the probe itself spent from its first PING to its stop: its share of the cores the tools use. */
  readonly probeCpuSeconds: number;
}

/**
 * Often enough that a stall of a few ms is seen many times over a run. The probe's own CPU grows with
 * the masters it PINGs (at every 10 ms on 4 masters it cost about 6% of one core), so every run
 * reports it (probeCpuSeconds, `probe` in the bench's CPU seconds).
 */
const SAMPLE_EVERY_MS = 20;
const PING = encodeCommand(['PING']);

/**
 * Starts the probe on these ports; stop() ends it and returns what it saw. everyMs: the PING interval
 * (the tests' budget check samples more often than the bench).
 */
export function startLatencyProbes(
  ports: readonly number[],
  options: { readonly everyMs?: number } = {},
): { stop(): Promise<ClientLatency> } {
  // The built probe: this module in dist/, or the repo's dist/ when tests run src/ directly.
  const built = import.meta.url.endsWith('.ts') ? '../../dist/bench/latency-probe.js' : import.meta.url;
  const args = [...(options.everyMs ? [`--every=${options.everyMs}`] : []), ...ports.map(String)];
  const child = fork(fileURLToPath(new URL(built, import.meta.url)), args, { stdio: 'inherit' });
  const result = new Promise<ClientLatency>((resolve, reject) => {
    child.once('message', (message) => {
      const answer = message as ClientLatency | { error: string };
      if ('error' in answer) reject(new Error(answer.error));
      else resolve(answer);
    });
    child.once('exit', (code) => reject(new Error(`latency probe exited (${code}) before reporting`)));
  });
  // A rejection nobody waits for yet (the probe died mid-run) is reported by stop().
  result.catch(() => undefined);
  let stopped: Promise<ClientLatency> | undefined;
  return {
    stop() {
      stopped ??= (async () => {
        if (child.connected) child.send('stop');
        return result;
      })();
      return stopped;
    },
  };
}

/**
 * The child: one connection per port (the sandbox's bare RESP connection), a PING at once and then
 * every SAMPLE_EVERY_MS on each, never two in flight on one. A connection that fails fails the probe:
 * a node it could not reach must not pass for one that answered fast.
 */
function probe(ports: number[], everyMs: number): void {
  const roundTripsMs = new Map<number, number[]>(ports.map((port) => [port, []]));
  let failure: Error | undefined;
  // Closing the connections rejects their PING in flight: that is the stop, not a failure.
  let stopping = false;
  const opened = Promise.all(
    ports.map(async (port) => {
      const connection = await RespPipeline.open({ host: '127.0.0.1', port });
      const mine = roundTripsMs.get(port)!;
      let sentAt: number | undefined;
      const ping = () => {
        if (sentAt !== undefined || failure !== undefined) return;
        const started = performance.now();
        sentAt = started;
        connection.send(PING, 1).then(
          () => {
            mine.push(performance.now() - started);
            sentAt = undefined;
          },
          (error: Error) => {
            if (!stopping) failure ??= error;
          },
        );
      };
      ping();
      const timer = setInterval(ping, everyMs);
      return {
        connection,
        timer,
        mine,
        pending: () => (sentAt === undefined ? undefined : performance.now() - sentAt),
      };
    }),
  );
  let cpuAtStart: NodeJS.CpuUsage | undefined;
  opened.then(
    () => {
      cpuAtStart = process.cpuUsage();
    },
    (error: Error) => {
      failure ??= error;
    },
  );
  process.on('message', async () => {
    const probes = await opened.catch(() => []);
    stopping = true;
    for (const { connection, timer, mine, pending } of probes) {
      clearInterval(timer);
      // A PING still unanswered has waited at least this long: it counts.
      const waitingMs = pending();
      if (waitingMs !== undefined) mine.push(waitingMs);
      connection.close();
    }
    if (failure !== undefined) {
      process.send?.({ error: `latency probe: ${failure.message}` }, () => process.exit(1));
      return;
    }
    const cpu = process.cpuUsage(cpuAtStart);
    const all = [...roundTripsMs.values()].flat();
    const byPort = Object.fromEntries(
      [...roundTripsMs].map(([port, samples]) => [
        port,
        { p99Ms: percentile(samples, 0.99), maxMs: percentile(samples, 1) },
      ]),
    );
    const report: ClientLatency = {
      maxMs: percentile(all, 1),
      p99Ms: percentile(all, 0.99),
      samples: all.length,
      byPort,
      probeCpuSeconds: Math.round((cpu.user + cpu.system) / 1e4) / 100,
    };
    process.send?.(report, () => process.exit(0));
  });
}

/** The sample at `fraction` of the sorted round trips (1: the longest), in ms to 0.1; 0 without samples. */
function percentile(roundTripsMs: readonly number[], fraction: number): number {
  const sorted = [...roundTripsMs].sort((a, b) => a - b);
  const ms = sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * fraction))] ?? 0;
  return Math.round(ms * 10) / 10;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  const every = args.find((arg) => arg.startsWith('--every='));
  probe(
    args.filter((arg) => arg !== every).map(Number),
    every ? Number(every.slice('--every='.length)) : SAMPLE_EVERY_MS,
  );
}
