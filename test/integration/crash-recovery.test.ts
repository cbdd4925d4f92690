/**
 * Worker processes that die or are stopped in the middle of a slot, on a real 3-master x 1-replica
 * cluster with data: `slotfleet worker` killed with SIGKILL while it drains a slot (twice, the second
 * time a replacement or the survivor), stopped with SIGTERM (exit 0 within the deadline, its slot
 * handed back and finished by another worker), and stopped past its shutdown deadline (exit 1, its
 * slot recovered by another worker). Every time the migration ends done, every key keeps its value
 * and TTL, and no slot is left open. The migrations ask for the keys engine, on every server.
 *
 * Some slots hold thousands of keys and move 50 keys per MIGRATE, one batch at a time, so a slot is
 * being drained for a while; a worker is stopped only once it logged that it drains a slot (its
 * second batch) and the migration record shows slots done but not all, never after a fixed sleep.
 */
import type { ChildProcess } from 'node:child_process';
import { closeSync, fstatSync, mkdirSync, openSync, readSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Queue } from 'bullmq';
import calculateSlot from 'cluster-key-slot';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { MigrationView } from '../../src/cli/migration-view.js';
import {
  type DatasetManifest,
  seedDataset,
  spawnWorkerProcesses,
  stopProcesses,
  verifyDataset,
} from '../../src/sandbox/index.js';
import { parseSlotRanges } from '../../src/shared/domain/slots.js';
import { migrateJobId, QueueName } from '../../src/shared/queue/names.js';
import { slotsOf } from './support/slots.js';
import { expectOwnersEverywhere, type Stack, startStack, waitForMigration } from './support/stack.js';

/** Short, so a killed worker's slot is running again within 1.5 x this. */
const JOB_LOCK_MS = 3_000;
const SHUTDOWN_TIMEOUT_MS = 15_000;
/** Keys in each hot slot: 60 batches of 50. */
const HOT_KEYS = 3_000;
const HOT_SLOTS_PER_MASTER = 3;
/**
 * Slots draining per source and per target, whole fleet, with no pacing below that (a client-latency
 * budget of 0): more than all the workers here can hold at once, dead ones included (two processes
 * of 4 jobs each, plus two killed ones). A killed worker's node leases lapse only LEASE_TTL_MS (30 s)
 * after its last renewal (node-leases.test.ts shows that); under the default caps, or the pace a
 * source starts at, they would hold a node full until then, and each migration here would wait them
 * out. What this file is about, jobs coming back to other workers, does not depend on the caps.
 */
const SLOTS_PER_NODE = 16;

/** A worker's log lines about a slot after which that slot is no longer draining in that worker. */
const ENDS_A_DRAIN =
  /^(slot drained|slot done|slot failed|slot attempt failed|slot cancelled|migration paused: slot job postponed)/;

interface LogEvent {
  readonly msg: string;
  readonly migrationId?: string;
  readonly slot?: number;
  readonly to?: string;
  readonly [field: string]: unknown;
}

/** The events of a log file the worker writes itself: each call parses what was added since the last. */
function followLog(path: string): () => readonly LogEvent[] {
  const events: LogEvent[] = [];
  let offset = 0;
  let partial = '';
  return () => {
    const fd = openSync(path, 'r');
    try {
      const size = fstatSync(fd).size;
      if (size <= offset) return events;
      const chunk = Buffer.alloc(size - offset);
      readSync(fd, chunk, 0, chunk.length, offset);
      offset = size;
      const parts = (partial + chunk.toString()).split('\n');
      partial = parts.pop() ?? '';
      for (const line of parts) {
        try {
          events.push(JSON.parse(line) as LogEvent);
        } catch {
          events.push({ msg: line });
        }
      }
      return events;
    } finally {
      closeSync(fd);
    }
  };
}

interface WatchedWorker {
  readonly name: string;
  readonly child: ChildProcess;
  /** Every JSON log line so far, parsed (read from its log file at each access). */
  readonly events: readonly LogEvent[];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

describe('workers killed or stopped in the middle of a slot', () => {
  let stack: Stack;
  let logDir: string;
  let migrateQueue: Queue;
  let finalizeQueue: Queue;
  const manifests: DatasetManifest[] = [];
  /** Hot slots by the master that owned them at the start. */
  const hotSlotsBy = new Map<string, number[]>();
  let originalMasters: string[] = [];
  let addedId: string;
  const workers: WatchedWorker[] = [];
  let spawned = 0;

  function spawnWorker(env: Record<string, string> = {}): WatchedWorker {
    const name = `worker-${++spawned}`;
    // spawnWorkerProcesses names its log worker-1.log: one directory per process.
    mkdirSync(join(logDir, name));
    const [child] = spawnWorkerProcesses({
      count: 1,
      // Debug: this file follows each slot's steps and drains, which are debug lines.
      env: { ...stack.env, SLOTFLEET_LOG_LEVEL: 'debug', ...env },
      logDir: join(logDir, name),
    });
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
      child!.once('exit', (code, signal) => resolve({ code, signal })),
    );
    const follow = followLog(join(logDir, name, 'worker-1.log'));
    const worker = {
      name,
      child: child!,
      get events() {
        return follow();
      },
      exited,
    };
    workers.push(worker);
    return worker;
  }

  const isRunning = (worker: WatchedWorker) =>
    worker.child.exitCode === null && worker.child.signalCode === null;

  async function until<T>(
    what: string,
    probe: () => T | undefined | Promise<T | undefined>,
    timeoutMs = 60_000,
  ) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = await probe();
      if (found !== undefined) return found;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }

  async function ready(worker: WatchedWorker): Promise<void> {
    await until(`${worker.name} to be ready`, () =>
      worker.events.some((event) => event.msg === 'slotfleet worker ready') ? true : undefined,
    );
  }

  async function readMigration(id: string): Promise<MigrationView> {
    const response = await stack.api.app.inject({ method: 'GET', url: `/v1/migrations/${id}` });
    expect(response.statusCode, response.body).toBe(200);
    return response.json();
  }

  /**
   * Waits until the record shows slots done but not all, then until a running worker is draining a
   * slot of migration `id`: it logged the slot's step to draining (its second batch) and nothing
   * since that ends the drain. Returns that worker and slot. (Not only drains that start after the
   * wait began: by the second kill every hot slot may have started, and the killed worker's slot
   * come back to another worker, while the wait for the replacement worker went on.)
   */
  async function drainingNow(id: string): Promise<{ worker: WatchedWorker; slot: number }> {
    await until(`some slots of ${id} done`, async () => {
      const view = await readMigration(id);
      return (view.slots.done ?? 0) > 0 ? view : undefined;
    });
    const found = await until(`a worker draining a slot of ${id}`, () => {
      for (const worker of workers.filter(isRunning)) {
        const draining = new Set<number>();
        for (const event of worker.events) {
          if (event.migrationId !== id || event.slot === undefined) continue;
          if (event.msg === 'slot step' && event.to === 'draining') draining.add(event.slot);
          else if (ENDS_A_DRAIN.test(event.msg) || event.msg === 'slot step') draining.delete(event.slot);
        }
        const [slot] = draining;
        if (slot !== undefined) return { worker, slot };
      }
      return undefined;
    });
    const view = await readMigration(id);
    expect(view.slots.done).toBeGreaterThan(0);
    expect(view.slots.done).toBeLessThan(view.slotsTotal);
    return found;
  }

  async function keysInSlot(nodeId: string, slot: number): Promise<number> {
    const client = stack.cluster.process(nodeId).client();
    try {
      return Number(await client.call('CLUSTER', 'COUNTKEYSINSLOT', slot));
    } finally {
      client.disconnect();
    }
  }

  /** The slots of `from` that move: some of its hot slots and its lowest `normal` other slots. */
  async function movesFrom(from: string, hot: readonly number[], normal: number) {
    const hotSet = new Set(hot);
    const owned = (await slotsOf(stack.cluster, from)).filter((slot) => !hotSet.has(slot));
    return [...owned.slice(0, normal), ...hot].sort((left, right) => left - right);
  }

  async function migrate(moves: { slots: number[]; target: string }[]): Promise<string> {
    const response = await stack.api.app.inject({
      method: 'POST',
      url: '/v1/clusters/default/migrations',
      // The keys engine on every server: this file kills workers in the middle of a key-by-key drain
      // (on Valkey 9, auto would pick the servers' own slot migration, which has no such middle).
      payload: {
        moves: moves.map((move) => ({ slots: move.slots.join(','), target: move.target })),
        engine: 'keys',
      },
    });
    expect(response.statusCode, response.body).toBe(202);
    return response.json().id;
  }

  /** Every key with its value and TTL, every slot with the expected owner everywhere, none open. */
  async function expectIntact(owners: ReadonlyMap<number, string>): Promise<void> {
    for (const manifest of manifests) {
      const result = await verifyDataset(stack.cluster.seedUrl, manifest);
      expect(result, manifest.prefix).toMatchObject({
        checked: manifest.count,
        missingCount: 0,
        wrongValueCount: 0,
        wrongTtlCount: 0,
      });
    }
    await expectOwnersEverywhere(stack.cluster, owners);
    for (const queue of [migrateQueue, finalizeQueue]) {
      const counts = await queue.getJobCounts('active', 'waiting', 'delayed', 'failed');
      expect(counts, queue.name).toMatchObject({ active: 0, waiting: 0, delayed: 0, failed: 0 });
    }
  }

  const drainedBy = (id: string, slot: number) =>
    workers
      .filter((worker) =>
        worker.events.some(
          (event) => event.msg === 'slot drained' && event.migrationId === id && event.slot === slot,
        ),
      )
      .map((worker) => worker.name);

  /**
   * The worker moved the slot's keys as the opener of its block (keys-mover.ts: its lines carry the
   * block), not in the slot's own job: when it dies, the slot comes back to its own job once the
   * claim lapses, not through BullMQ's stalled-job check.
   */
  const openedBy = (worker: WatchedWorker, id: string, slot: number) =>
    worker.events.some(
      (event) => event.migrationId === id && event.slot === slot && event.block !== undefined,
    );

  /** Some worker drained the slot in its own job (not as a block's opener). */
  const drainedByOwnJob = (id: string, slot: number) =>
    workers.some((worker) =>
      worker.events.some(
        (event) =>
          event.msg === 'slot drained' &&
          event.migrationId === id &&
          event.slot === slot &&
          event.block === undefined,
      ),
    );

  /** The worker handed the slot back on stopping: its own job postponed, or its block's opener gave it back. */
  const handedBack = (worker: WatchedWorker, slot: number) =>
    worker.events.some(
      (event) =>
        (event.msg === 'migration paused: slot job postponed' && event.slot === slot) ||
        (event.msg === 'slots of the block given back to their own jobs' &&
          parseSlotRanges(String(event.slots)).includes(slot)),
    );

  beforeAll(async () => {
    stack = await startStack({
      workers: 0,
      env: {
        SLOTFLEET_WORKER_CONCURRENCY: '4',
        SLOTFLEET_BATCH_KEYS: '50',
        SLOTFLEET_BATCHES_IN_FLIGHT: '1',
        SLOTFLEET_JOB_LOCK_MS: String(JOB_LOCK_MS),
        SLOTFLEET_SHUTDOWN_TIMEOUT_MS: String(SHUTDOWN_TIMEOUT_MS),
        SLOTFLEET_MAX_SLOTS_PER_SOURCE: String(SLOTS_PER_NODE),
        SLOTFLEET_MAX_SLOTS_PER_TARGET: String(SLOTS_PER_NODE),
        SLOTFLEET_MAX_CLIENT_LATENCY_MS: '0',
      },
    });
    logDir = await mkdtemp(join(tmpdir(), 'slotfleet-crash-'));
    const queueOptions = {
      connection: { host: stack.control.host, port: stack.control.port },
      prefix: stack.config.queuePrefix,
    };
    migrateQueue = new Queue(QueueName.MigrateSlot, queueOptions);
    finalizeQueue = new Queue(QueueName.FinalizeSlot, queueOptions);
    // Keys of every type in the other slots too (about one in two slots holds one); the hot slots
    // below are what keeps a slot draining long enough to be interrupted.
    manifests.push(
      await seedDataset(stack.cluster.seedUrl, { keys: 10_000, types: 'mixed', ttlFraction: 0.2 }),
    );
    originalMasters = (await stack.cluster.masters()).map((master) => master.id);
    // Hash tags whose slot each master owns: HOT_SLOTS_PER_MASTER hot slots per master.
    for (const master of originalMasters) {
      const owned = new Set(await slotsOf(stack.cluster, master));
      const hot: number[] = [];
      for (let tag = 0; hot.length < HOT_SLOTS_PER_MASTER; tag++) {
        const slot = calculateSlot(`hot-${tag}`);
        if (!owned.has(slot) || hot.includes(slot)) continue;
        hot.push(slot);
        manifests.push(
          await seedDataset(stack.cluster.seedUrl, {
            keys: HOT_KEYS,
            types: 'string',
            prefix: `hot${slot}`,
            hashTag: `{hot-${tag}}`,
            ttlFraction: 0.2,
          }),
        );
      }
      hotSlotsBy.set(master, hot);
    }
    addedId = (await stack.cluster.addEmptyMaster()).id;
  });

  afterAll(async () => {
    for (const worker of workers) if (isRunning(worker)) worker.child.kill('SIGKILL');
    await Promise.all(workers.map((worker) => worker.exited));
    await migrateQueue?.close();
    await finalizeQueue?.close();
    await stack?.stop();
    if (logDir) await rm(logDir, { recursive: true, force: true });
  });

  it('finishes a migration whose workers are SIGKILLed mid-slot, twice, losing nothing', async () => {
    const first = [spawnWorker(), spawnWorker()];
    await Promise.all(first.map(ready));
    const moves = await Promise.all(
      originalMasters.map(async (master) => ({
        slots: await movesFrom(master, hotSlotsBy.get(master)!.slice(0, 2), 150),
        target: addedId,
      })),
    );
    const sourceOf = new Map(
      moves.flatMap((move, index) => move.slots.map((slot) => [slot, originalMasters[index]!] as const)),
    );
    const id = await migrate(moves);

    const killed: { worker: WatchedWorker; slot: number }[] = [];
    for (let round = 0; round < 2; round++) {
      const victim = await drainingNow(id);
      victim.worker.child.kill('SIGKILL');
      expect(await victim.worker.exited).toEqual({ code: null, signal: 'SIGKILL' });
      // Killed mid-slot: its keys are split between source and target, and stay so until the
      // job's lock, or its block opener's claim, runs out (nobody else may take it before).
      expect(await keysInSlot(sourceOf.get(victim.slot)!, victim.slot)).toBeGreaterThan(0);
      expect(await keysInSlot(addedId, victim.slot)).toBeGreaterThan(0);
      killed.push(victim);
      await ready(spawnWorker());
    }

    const final = await waitForMigration(stack, id, 180_000);
    expect(final).toMatchObject({ state: 'done', errors: [] });
    expect(final.slots.done).toBe(sourceOf.size);
    for (const { worker, slot } of killed) {
      if (openedBy(worker, id, slot)) {
        // Its block's opener died: the claim lapsed and the slot's own job drained it.
        expect(drainedByOwnJob(id, slot), `slot ${slot}`).toBe(true);
      } else {
        // Back in the queue through BullMQ's stalled-job check, and drained by another process.
        const job = await migrateQueue.getJob(migrateJobId(id, slot));
        expect(job?.stalledCounter, `slot ${slot}`).toBeGreaterThanOrEqual(1);
      }
      const finishers = drainedBy(id, slot);
      expect(finishers.length, `slot ${slot} drained by ${finishers}`).toBeGreaterThan(0);
      expect(finishers).not.toContain(worker.name);
    }
    await expectIntact(new Map([...sourceOf.keys()].map((slot) => [slot, addedId])));
  }, 300_000);

  it('stops on SIGTERM within the deadline with exit 0, its slot finished by another worker', async () => {
    const running = workers.filter(isRunning);
    expect(running).toHaveLength(2);
    const receiver = originalMasters[0]!;
    const hot = [...hotSlotsBy.values()].map((slots) => slots[0]!);
    const slots = await movesFrom(addedId, hot, 150);
    const id = await migrate([{ slots, target: receiver }]);

    const victim = await drainingNow(id);
    const signalledAt = Date.now();
    victim.worker.child.kill('SIGTERM');
    expect(await victim.worker.exited).toEqual({ code: 0, signal: null });
    expect(Date.now() - signalledAt).toBeLessThan(SHUTDOWN_TIMEOUT_MS);
    const said = (msg: string) =>
      victim.worker.events.some(
        (event) => event.msg === msg && (event.slot === undefined || event.slot === victim.slot),
      );
    expect(said('shutting down')).toBe(true);
    // Handed back after its batch in flight (as a pause does), not drained to the end.
    expect(handedBack(victim.worker, victim.slot)).toBe(true);
    expect(
      said('shutdown deadline passed: exiting; jobs in flight go to other workers when their lock expires'),
    ).toBe(false);

    const final = await waitForMigration(stack, id, 180_000);
    expect(final).toMatchObject({ state: 'done', errors: [] });
    expect(final.slots.done).toBe(slots.length);
    const finishers = drainedBy(id, victim.slot);
    expect(finishers.length).toBeGreaterThan(0);
    expect(finishers).not.toContain(victim.worker.name);
    await expectIntact(new Map(slots.map((slot) => [slot, receiver])));
  }, 300_000);

  it('exits 1 past its shutdown deadline, and another worker finishes its slot', async () => {
    await stopProcesses(workers.filter(isRunning).map((worker) => worker.child));
    // Alone, so the slot being drained is this worker's; a 1 ms deadline passes mid-batch.
    const hurried = spawnWorker({ SLOTFLEET_SHUTDOWN_TIMEOUT_MS: '1' });
    await ready(hurried);
    const receiver = originalMasters[1]!;
    const hot = [...hotSlotsBy.values()].map((slots) => slots[1]!);
    const slots = await movesFrom(addedId, hot, 150);
    const id = await migrate([{ slots, target: receiver }]);

    const victim = await drainingNow(id);
    expect(victim.worker).toBe(hurried);
    hurried.child.kill('SIGTERM');
    expect(await hurried.exited).toEqual({ code: 1, signal: null });
    expect(hurried.events.some((event) => event.msg.startsWith('shutdown deadline passed'))).toBe(true);
    await ready(spawnWorker());

    const final = await waitForMigration(stack, id, 180_000);
    expect(final).toMatchObject({ state: 'done', errors: [] });
    expect(final.slots.done).toBe(slots.length);
    expect(drainedBy(id, victim.slot)).toEqual([workers.at(-1)!.name]);
    // Usually the deadline passes before the batch in flight returns, and the slot comes back
    // through the stalled-job check; a batch that returned within the millisecond handed it back.
    // Or its block's opener was this worker, and the claim lapsed.
    const job = await migrateQueue.getJob(migrateJobId(id, victim.slot));
    expect({
      stalled: job?.stalledCounter ?? 0,
      handedBack: handedBack(hurried, victim.slot),
      opened: openedBy(hurried, id, victim.slot),
    }).not.toEqual({ stalled: 0, handedBack: false, opened: false });
    await expectIntact(new Map(slots.map((slot) => [slot, receiver])));
  }, 300_000);
});
