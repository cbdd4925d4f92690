/**
 * An atomic migration's server tasks in GET /v1/migrations/:id and `slotfleet status ID`, on a real
 * Valkey 9 cluster (3 masters, no replicas, one worker). 12,000 keys in 100 slots of one source,
 * whose snapshot is slowed (rdb-key-save-delay, µs per key: about 3.6 s) so that its task is seen
 * running: the view lists it with the plan's source and target and a state that has not ended, the
 * CLI prints it on a line of its own; once the migration is done the view lists none and the source's
 * own log says the task succeeded. A keys-engine migration, created and followed with the CLI
 * (--engine keys --wait), shows its engine and serverTasks: [].
 *
 * Runs in project valkey9 only (vitest.config.ts: it needs CLUSTER MIGRATESLOTS).
 */
import calculateSlot from 'cluster-key-slot';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { MigrationView } from '../../src/cli/migration-view.js';
import { parseServerMigrations, ServerMigrationOutcome } from '../../src/shared/domain/server-migrations.js';
import { runSlotfleet, type SlotfleetRun } from './support/run-slotfleet.js';
import { slotsOf } from './support/slots.js';
import { countKeysInSlots, type Stack, startStack, waitForMigration } from './support/stack.js';

const SLOTS = 100;
const KEYS_PER_SLOT = 120;

describe('server tasks in the migration view (Valkey 9)', () => {
  let stack: Stack;
  let apiUrl: string;
  let masters: { id: string; port: number }[];

  beforeAll(async () => {
    stack = await startStack({ workers: 1, replicasPerMaster: 0 });
    apiUrl = await stack.api.app.listen({ host: '127.0.0.1', port: 0 });
    masters = [...(await stack.cluster.masters())].sort((a, b) => a.port - b.port);
  });

  afterAll(async () => {
    await stack?.stop();
  });

  function cli(args: string[]): Promise<SlotfleetRun> {
    return runSlotfleet(
      args,
      { ...process.env, SLOTFLEET_API_URL: apiUrl, SLOTFLEET_LOG_LEVEL: 'warn' },
      60_000,
    );
  }

  async function view(id: string): Promise<MigrationView> {
    const response = await stack.api.app.inject({ method: 'GET', url: `/v1/migrations/${id}` });
    expect(response.statusCode, response.body).toBe(200);
    return response.json<MigrationView>();
  }

  /** KEYS_PER_SLOT string keys in each slot, written to the node that owns them. */
  async function fill(port: number, slots: readonly number[]): Promise<void> {
    const tags = new Map<number, string>();
    const wanted = new Set(slots);
    for (let i = 0; tags.size < wanted.size; i++) {
      const slot = calculateSlot(`t${i}`);
      if (wanted.has(slot) && !tags.has(slot)) tags.set(slot, `t${i}`);
    }
    const client = stack.cluster.process(port).client();
    try {
      const pipeline = client.pipeline();
      for (const tag of tags.values()) {
        for (let n = 0; n < KEYS_PER_SLOT; n++) pipeline.set(`{${tag}}:${n}`, `value-${n}`);
      }
      const results = (await pipeline.exec()) ?? [];
      expect(results.filter(([error]) => error !== null)).toEqual([]);
    } finally {
      client.disconnect();
    }
  }

  it('keys engine: --engine keys is sent, --wait prints the engine, the view has no server tasks', async () => {
    const [source, target] = [masters[2]!, masters[1]!];
    const slots = (await slotsOf(stack.cluster, source.id)).slice(0, 5);
    const run = await cli([
      'reshard',
      '--from',
      source.id,
      '--to',
      target.id,
      '--ranges',
      slots.join(','),
      '--engine',
      'keys',
      '--wait',
    ]);
    expect(run.code, run.stderr).toBe(0);
    const id = /^(\S+) {2}done {2}engine keys {2}slots done 5\/5/m.exec(run.stdout)?.[1];
    expect(id, run.stdout).toBeDefined();
    expect(await view(id!)).toMatchObject({ state: 'done', engine: 'keys', serverTasks: [] });
    const status = await cli(['status', id!]);
    expect(status.code, status.stderr).toBe(0);
    expect(status.stdout).toMatch(/ engine keys /);
    expect(status.stdout).not.toMatch(/task/);
  });

  it('atomic: a task in progress is listed (view and CLI), and none once the migration is done', async () => {
    const [source, target] = [masters[0]!, masters[1]!];
    const slots = (await slotsOf(stack.cluster, source.id)).slice(0, SLOTS);
    await fill(source.port, slots);
    const keys = await countKeysInSlots(stack.cluster, slots);
    expect(keys).toBeGreaterThanOrEqual(SLOTS * KEYS_PER_SLOT);
    const admin = stack.cluster.process(source.port).client();
    try {
      await admin.call('CONFIG', 'SET', 'rdb-key-save-delay', '300');
      const created = await cli([
        'reshard',
        '--from',
        source.id,
        '--to',
        target.id,
        '--ranges',
        slots.join(','),
        '--engine',
        'atomic',
      ]);
      expect(created.code, created.stderr).toBe(0);
      const id = /^migration (\S+): \d+ slots enqueued, engine atomic$/m.exec(created.stdout)?.[1];
      expect(id, created.stdout).toBeDefined();

      // The source says its task runs; the view's first read (nothing has read it yet, so no cached
      // answer) must say so too.
      const deadline = Date.now() + 20_000;
      let running: string | undefined;
      while (running === undefined) {
        if (Date.now() > deadline) throw new Error('no server task ran on the source');
        const listed = parseServerMigrations(await admin.call('CLUSTER', 'GETSLOTMIGRATIONS'));
        running = listed.find(
          (task) => task.operation === 'export' && task.outcome === ServerMigrationOutcome.InProgress,
        )?.name;
        if (running === undefined) await new Promise((resolve) => setTimeout(resolve, 10));
      }
      const during = await view(id!);
      expect(during.engine).toBe('atomic');
      const [group] = during.plan;
      const task = during.serverTasks?.find((entry) => entry.name === running);
      expect(task, JSON.stringify(during.serverTasks)).toMatchObject({
        source: group!.source,
        target: group!.target,
        outcome: 'in-progress',
        message: '',
      });
      expect(['success', 'failed', 'cancelled']).not.toContain(task!.state);
      expect(task!.slots).toMatch(/^\d+(-\d+)?(,\d+(-\d+)?)*$/);

      const status = await cli(['status', id!]);
      expect(status.code, status.stderr).toBe(0);
      expect(status.stdout).toMatch(/ engine atomic /);
      expect(status.stdout).toMatch(
        new RegExp(`^ {2}task ${running} ${group!.source} -> ${group!.target} slots [0-9,-]+: [a-z-]+`, 'm'),
      );

      await admin.call('CONFIG', 'SET', 'rdb-key-save-delay', '0');
      const final = await waitForMigration(stack, id!, 60_000);
      expect(final.errors).toEqual([]);
      expect(final).toMatchObject({ state: 'done', engine: 'atomic', serverTasks: [] });
      expect(final.slots.done).toBe(SLOTS);
      expect(await countKeysInSlots(stack.cluster, slots)).toBe(keys);
      // The source's own log: the task the view showed running ended a success.
      const ended = parseServerMigrations(await admin.call('CLUSTER', 'GETSLOTMIGRATIONS'));
      expect(ended.find((entry) => entry.name === running)?.state).toBe('success');
      const status2 = await cli(['status', id!]);
      expect(status2.stdout).toMatch(/ done {2}engine atomic /);
      expect(status2.stdout).not.toMatch(/^ {2}task /m);
    } finally {
      await admin.call('CONFIG', 'SET', 'rdb-key-save-delay', '0').catch(() => undefined);
      admin.disconnect();
    }
  });
});
