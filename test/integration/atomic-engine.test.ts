/**
 * The atomic engine on a real Valkey 9 cluster (3 masters, no replicas): the servers move whole
 * slots (CLUSTER MIGRATESLOTS) and the fleet groups, watches and records them. A move through the
 * API ends done with every key's value and TTL, the keys moved counted, owners agreed everywhere and
 * a few server tasks for hundreds of slots; a cancel in the middle leaves each slot either moved
 * (done) or home (cancelled), never both, and nothing lost; a worker SIGKILLed while its task runs
 * leaves the task to the servers, and the next worker adopts it without starting a slot twice.
 *
 * Runs in project valkey9 only (vitest.config.ts: it needs CLUSTER MIGRATESLOTS); a missing
 * Valkey 9 fails the global setup, naming `.ci/valkey9`.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  type DatasetManifest,
  seedDataset,
  spawnWorkerProcesses,
  verifyDataset,
} from '../../src/sandbox/index.js';
import { coversSlot, parseServerMigrations } from '../../src/shared/domain/server-migrations.js';
import { parseSlotRanges } from '../../src/shared/domain/slots.js';
import { slotsOf } from './support/slots.js';
import {
  countKeysInSlots,
  expectNoOpenSlots,
  expectOwnersEverywhere,
  type Stack,
  startStack,
  waitForMigration,
} from './support/stack.js';

const SLOTS_PER_SOURCE = 400;

describe('the atomic engine on Valkey 9', () => {
  let stack: Stack;
  let manifests: DatasetManifest[];
  /** Masters by port: [target, sourceA, sourceB] once the first test chose them. */
  let masters: { id: string; port: number }[];

  beforeAll(async () => {
    // A short job lock: the killed worker's jobs come back to the next one within seconds.
    stack = await startStack({ workers: 0, replicasPerMaster: 0, env: { SLOTFLEET_JOB_LOCK_MS: '3000' } });
    manifests = [
      await seedDataset(stack.cluster.seedUrl, { keys: 30_000, types: 'mixed', ttlFraction: 0.3, seed: 17 }),
    ];
    masters = [...(await stack.cluster.masters())].sort((a, b) => a.port - b.port);
  });

  afterEach(async () => {
    await Promise.all(stack.workers.splice(0).map((worker) => worker.close()));
  });

  afterAll(async () => {
    await stack?.stop();
  });

  async function movesTo(target: { id: string }, count: number) {
    const sources = masters.filter((master) => master.id !== target.id);
    const moves = [];
    const slots: number[] = [];
    for (const source of sources) {
      const owned = (await slotsOf(stack.cluster, source.id)).slice(0, count);
      moves.push({ slots: owned.join(','), target: target.id });
      slots.push(...owned);
    }
    return { moves, slots };
  }

  async function post(moves: unknown[]): Promise<{ id: string; engine: string }> {
    const response = await stack.api.app.inject({
      method: 'POST',
      url: '/v1/clusters/default/migrations',
      payload: { moves, engine: 'atomic' },
    });
    expect(response.statusCode, response.body).toBe(202);
    return response.json();
  }

  async function expectEveryKey(): Promise<void> {
    for (const manifest of manifests) {
      const result = await verifyDataset(stack.cluster.seedUrl, manifest);
      expect(result).toMatchObject({ missingCount: 0, wrongValueCount: 0, wrongTtlCount: 0 });
    }
  }

  /** The workers' last warnings and errors, and every master's CLUSTER GETSLOTMIGRATIONS. */
  async function diagnostics(): Promise<string> {
    const warnings = stack.logLines.filter((line) => /"level":(4|5|6)0/.test(line)).slice(-30);
    const listed = await Promise.all(
      masters.map(async (master) => {
        const client = stack.cluster.process(master.port).client();
        try {
          return `${master.port}: ${JSON.stringify(await client.call('CLUSTER', 'GETSLOTMIGRATIONS'))}`;
        } finally {
          client.disconnect();
        }
      }),
    );
    return ['last warnings:', ...warnings, 'server tasks:', ...listed].join('\n');
  }

  /** The slots of each server task the in-process workers started (from their logs). */
  function tasksStarted(lines: readonly string[] = stack.logLines): number[][] {
    return lines
      .filter((line) => line.includes('"server task started"'))
      .map((line) => parseSlotRanges((JSON.parse(line) as { slots: string }).slots));
  }

  it('moves hundreds of slots in a few server tasks, keys counted, nothing lost', async () => {
    await stack.startWorker();
    await stack.startWorker();
    const target = masters[0]!;
    const { moves, slots } = await movesTo(target, SLOTS_PER_SOURCE);
    const keys = await countKeysInSlots(stack.cluster, slots);
    const before = tasksStarted().length;

    const created = await post(moves);
    const final = await waitForMigration(stack, created.id);
    expect(final.errors).toEqual([]);
    expect(final.state).toBe('done');
    expect(final.engine).toBe('atomic');
    expect(final.slots.done).toBe(slots.length);
    expect(final.keysMoved).toBe(keys);
    await expectOwnersEverywhere(stack.cluster, new Map(slots.map((slot) => [slot, target.id])));
    await expectNoOpenSlots(stack.cluster);
    await expectEveryKey();
    // About one task per source (two workers racing for a source may split one): never one per slot.
    const tasks = tasksStarted().slice(before);
    expect(tasks.length).toBeGreaterThanOrEqual(2);
    expect(tasks.length).toBeLessThanOrEqual(slots.length / 20);
    expect(Math.max(...tasks.map((task) => task.length))).toBeGreaterThanOrEqual(SLOTS_PER_SOURCE / 2);
    expect(tasks.flat().sort((a, b) => a - b)).toEqual([...slots].sort((a, b) => a - b));
  });

  it('cancelled mid-way: every slot either moved and done, or home and cancelled; nothing lost', async () => {
    await stack.startWorker();
    const target = masters[1]!;
    const { moves, slots } = await movesTo(target, SLOTS_PER_SOURCE);
    const created = await post(moves);
    const cancel = await stack.api.app.inject({
      method: 'POST',
      url: `/v1/migrations/${created.id}/cancel`,
      payload: {},
    });
    expect(cancel.statusCode, cancel.body).toBe(200);
    // A clean-clone CI run once saw this migration never end (not reproduced since): a timeout
    // says what the workers warned about and what tasks the servers listed.
    const final = await waitForMigration(stack, created.id).catch(async (error: Error) => {
      throw new Error(`${error.message}\n${await diagnostics()}`);
    });
    expect(final.errors).toEqual([]);
    expect(['cancelled', 'done']).toContain(final.state);
    const owners = new Map<number, string>();
    for (const source of masters) {
      for (const slot of await slotsOf(stack.cluster, source.id)) owners.set(slot, source.id);
    }
    const moved = slots.filter((slot) => owners.get(slot) === target.id);
    expect(final.slots.done).toBe(moved.length);
    expect(final.slots.cancelled).toBe(slots.length - moved.length);
    await expectNoOpenSlots(stack.cluster);
    await expectEveryKey();
  });

  it('paused before any task: none starts while paused; resumed, it ends done', async () => {
    const target = masters[0]!;
    const { moves, slots } = await movesTo(target, 100);
    const created = await post(moves);
    const pause = await stack.api.app.inject({
      method: 'POST',
      url: `/v1/migrations/${created.id}/pause`,
      payload: {},
    });
    expect(pause.statusCode, pause.body).toBe(200);
    const linesBefore = stack.logLines.length;
    await stack.startWorker();
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    expect(tasksStarted(stack.logLines.slice(linesBefore))).toEqual([]);
    for (const master of masters) {
      const client = stack.cluster.process(master.port).client();
      try {
        const listed = await client.call('CLUSTER', 'GETSLOTMIGRATIONS');
        expect(JSON.stringify(listed)).not.toMatch(/snapshotting|replicating|waiting|connecting/);
      } finally {
        client.disconnect();
      }
    }
    const paused = await waitForMigration(stack, created.id, 1_000).catch(() => undefined);
    expect(paused).toBeUndefined();
    const resume = await stack.api.app.inject({
      method: 'POST',
      url: `/v1/migrations/${created.id}/resume`,
      payload: {},
    });
    expect(resume.statusCode, resume.body).toBe(200);
    const final = await waitForMigration(stack, created.id);
    expect(final.state).toBe('done');
    expect(final.slots.done).toBe(slots.length);
    await expectEveryKey();
  });

  it('a server task cancelled behind its back is started again, and the slots end done', async () => {
    const target = masters[1]!;
    const { moves, slots } = await movesTo(target, 200);
    const sources = masters.filter((master) => master.id !== target.id);
    // rdb-key-save-delay slows the snapshot (µs per key): the task is still running when cancelled.
    const admin = sources.map((source) => stack.cluster.process(source.port).client());
    try {
      await Promise.all(admin.map((client) => client.call('CONFIG', 'SET', 'rdb-key-save-delay', '200')));
      await stack.startWorker();
      const created = await post(moves);
      const deadline = Date.now() + 20_000;
      let cancelled = false;
      while (!cancelled) {
        if (Date.now() > deadline) throw new Error('no server task ran on the first source');
        try {
          await admin[0]!.call('CLUSTER', 'CANCELSLOTMIGRATIONS');
          cancelled = true;
        } catch {
          await new Promise((resolve) => setTimeout(resolve, 5));
        }
      }
      await Promise.all(admin.map((client) => client.call('CONFIG', 'SET', 'rdb-key-save-delay', '0')));
      const final = await waitForMigration(stack, created.id);
      expect(final.state).toBe('done');
      expect(final.slots.done).toBe(slots.length);
      await expectOwnersEverywhere(stack.cluster, new Map(slots.map((slot) => [slot, target.id])));
      const listed = JSON.stringify(await admin[0]!.call('CLUSTER', 'GETSLOTMIGRATIONS'));
      expect(listed).toMatch(/cancelled/);
      expect(listed).toMatch(/success/);
      await expectEveryKey();
    } finally {
      await Promise.all(
        admin.map((client) => client.call('CONFIG', 'SET', 'rdb-key-save-delay', '0').catch(() => undefined)),
      );
      for (const client of admin) client.disconnect();
    }
  });

  it('a worker SIGKILLed while its task runs: the next adopts the task, no slot starts twice', async () => {
    const logDir = await mkdtemp(join(tmpdir(), 'slotfleet-atomic-'));
    try {
      const target = masters[2]!;
      const { moves, slots } = await movesTo(target, SLOTS_PER_SOURCE);
      const [first] = spawnWorkerProcesses({ count: 1, env: stack.env, logDir });
      const created = await post(moves);
      const firstLog = join(logDir, 'worker-1.log');
      const deadline = Date.now() + 30_000;
      while (!(await readFile(firstLog, 'utf8').catch(() => '')).includes('server task started')) {
        if (Date.now() > deadline) throw new Error('the first worker started no server task');
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
      first!.kill('SIGKILL');
      await new Promise((resolve) => first!.once('exit', resolve));
      await stack.startWorker();
      const final = await waitForMigration(stack, created.id, 120_000);
      expect(final.errors).toEqual([]);
      expect(final.state).toBe('done');
      expect(final.slots.done).toBe(slots.length);
      await expectOwnersEverywhere(stack.cluster, new Map(slots.map((slot) => [slot, target.id])));
      await expectNoOpenSlots(stack.cluster);
      await expectEveryKey();
      // No slot went into two tasks: the servers' own log of tasks (the sources list ended tasks
      // too) shows each slot in exactly one, and that one succeeded. (The killed worker's last log
      // lines may never have reached its file.)
      const firstLines = (await readFile(firstLog, 'utf8')).split('\n');
      expect(tasksStarted(firstLines).length).toBeGreaterThan(0);
      const covering = new Map<number, string[]>();
      for (const source of masters.filter((master) => master.id !== target.id)) {
        const client = stack.cluster.process(source.port).client();
        try {
          for (const task of parseServerMigrations(await client.call('CLUSTER', 'GETSLOTMIGRATIONS'))) {
            for (const slot of slots) {
              // Earlier tests of this file moved some of these slots elsewhere: only tasks towards
              // this test's target count.
              if (!coversSlot(task, slot) || task.operation !== 'export' || task.targetNodeId !== target.id)
                continue;
              covering.set(slot, [...(covering.get(slot) ?? []), task.state]);
            }
          }
        } finally {
          client.disconnect();
        }
      }
      for (const slot of slots) expect(covering.get(slot), `tasks of slot ${slot}`).toEqual(['success']);
    } finally {
      await rm(logDir, { recursive: true, force: true });
    }
  });
});

describe('the atomic engine on Valkey 9, a failover in the middle of a server task', () => {
  let stack: Stack;
  let manifest: DatasetManifest;

  beforeAll(async () => {
    stack = await startStack({ workers: 1, replicasPerMaster: 1 });
    manifest = await seedDataset(stack.cluster.seedUrl, {
      keys: 20_000,
      types: 'mixed',
      ttlFraction: 0.3,
      seed: 23,
    });
  });

  afterAll(async () => {
    await stack?.stop();
  });

  it.each(['target', 'source'] as const)(
    'of the %s: the task fails, the promoted replica takes its place, the slots end done',
    async (role) => {
      const masters = [...(await stack.cluster.masters())].sort((a, b) => a.port - b.port);
      const [source, target] = role === 'target' ? [masters[0]!, masters[1]!] : [masters[2]!, masters[0]!];
      const slots = (await slotsOf(stack.cluster, source.id)).slice(0, 300);
      const admin = stack.cluster.process(source.port).client();
      try {
        // A slow snapshot (µs per key): the failover lands while the task runs.
        await admin.call('CONFIG', 'SET', 'rdb-key-save-delay', '300');
        const response = await stack.api.app.inject({
          method: 'POST',
          url: '/v1/clusters/default/migrations',
          payload: { moves: [{ slots: slots.join(','), target: target.id }], engine: 'atomic' },
        });
        expect(response.statusCode, response.body).toBe(202);
        const deadline = Date.now() + 20_000;
        while (!JSON.stringify(await admin.call('CLUSTER', 'GETSLOTMIGRATIONS')).includes('snapshotting')) {
          if (Date.now() > deadline) throw new Error('no server task is snapshotting on the source');
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
        const failedOver = role === 'target' ? target : source;
        const promoted = await stack.cluster.failover(failedOver.id);
        await admin.call('CONFIG', 'SET', 'rdb-key-save-delay', '0').catch(() => undefined);
        const final = await waitForMigration(stack, response.json<{ id: string }>().id, 120_000);
        expect(final.errors).toEqual([]);
        expect(final.state).toBe('done');
        expect(final.slots.done).toBe(slots.length);
        const owner = role === 'target' ? promoted : target.id;
        await expectOwnersEverywhere(stack.cluster, new Map(slots.map((slot) => [slot, owner])));
        await expectNoOpenSlots(stack.cluster);
        const result = await verifyDataset(stack.cluster.seedUrl, manifest);
        expect(result).toMatchObject({ missingCount: 0, wrongValueCount: 0, wrongTtlCount: 0 });
      } finally {
        admin.disconnect();
      }
    },
    180_000,
  );
});
