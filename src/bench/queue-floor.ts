/**
 * The queue's own cost, for the bench's "where the time goes": as many BullMQ jobs as the rebalance
 * has slots, with the slot jobs' payload and options, through 2 worker processes at the bench's
 * concurrency whose processor does nothing. What this costs in CPU, slotfleet pays before it moves
 * a single key; on a machine whose cores the cluster also needs, it sets a floor under the run.
 *
 * Run as a child (`node queue-floor.js worker <control url> <prefix> <concurrency>`), it is one of
 * those worker processes.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { Queue, Worker } from 'bullmq';
import { startControlRedis } from '../sandbox/index.js';
import { migrateJob, slotJobData } from '../shared/queue/jobs.js';

const QUEUE = 'queue-floor';
const PREFIX = 'floor';

export interface QueueFloorResult {
  readonly jobs: number;
  /** From the first addBulk to the last job completed. */
  readonly seconds: number;
  readonly cpuSeconds: { readonly workers: number; readonly control: number; readonly producer: number };
}

export async function measureQueueFloor(jobs: number, concurrency: number): Promise<QueueFloorResult> {
  const control = await startControlRedis();
  const children: ChildProcess[] = [];
  const queue = new Queue(QUEUE, { connection: { host: control.host, port: control.port }, prefix: PREFIX });
  try {
    for (let index = 0; index < 2; index++) {
      const child = fork(fileURLToPath(import.meta.url), ['worker', control.url, String(concurrency)]);
      children.push(child);
      await new Promise<void>((resolve, reject) => {
        child.once('message', () => resolve());
        child.once('exit', (code) => reject(new Error(`queue-floor worker exited with ${code}`)));
      });
    }
    const pids = children.map((child) => child.pid!);
    const before = { workers: await cpuSeconds(pids), control: await cpuSeconds([control.pid]) };
    const ownBefore = process.cpuUsage();
    const started = performance.now();
    const node = (port: number) => ({ id: 'a'.repeat(40), host: '127.0.0.1', port });
    const all = Array.from({ length: jobs }, (_, slot) =>
      migrateJob(slotJobData('mig-floor', 'default', { slot, source: node(7000), target: node(7001) }), {
        attempts: 5,
        backoffMs: 1_000,
      }),
    );
    for (let start = 0; start < all.length; start += 2_000)
      await queue.addBulk(all.slice(start, start + 2_000));
    while (((await queue.getJobCounts('completed')).completed ?? 0) < jobs) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    const seconds = (performance.now() - started) / 1000;
    const own = process.cpuUsage(ownBefore);
    return {
      jobs,
      seconds,
      cpuSeconds: {
        workers: round((await cpuSeconds(pids)) - before.workers),
        control: round((await cpuSeconds([control.pid])) - before.control),
        producer: round((own.user + own.system) / 1e6),
      },
    };
  } finally {
    for (const child of children) child.kill('SIGKILL');
    await queue.close();
    await control.stop();
    await control.removeDir();
  }
}

async function cpuSeconds(pids: readonly number[]): Promise<number> {
  let total = 0;
  for (const pid of pids) {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    total += (Number(fields[11]) + Number(fields[12])) / 100;
  }
  return total;
}

function round(value: number): number {
  return Math.round(value * 100) / 100;
}

async function runWorker(url: string, concurrency: number): Promise<void> {
  const { hostname, port } = new URL(url);
  // The slotfleet worker's options: an auto-pipelined connection, the same concurrency.
  const worker = new Worker(QUEUE, async () => ({ keysMoved: 0 }), {
    connection: {
      host: hostname,
      port: Number(port),
      enableAutoPipelining: true,
      maxRetriesPerRequest: null,
    },
    prefix: PREFIX,
    concurrency,
  });
  await worker.waitUntilReady();
  process.send?.('ready');
}

if (process.argv[1] === fileURLToPath(import.meta.url) && process.argv[2] === 'worker') {
  runWorker(process.argv[3]!, Number(process.argv[4])).catch((error: unknown) => {
    process.stderr.write(`queue-floor worker: ${(error as Error).stack ?? error}\n`);
    process.exit(1);
  });
}
