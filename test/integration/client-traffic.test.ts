/**
 * Client traffic during a migration: while two `slotfleet worker` processes rebalance a real
 * 3-master x 1-replica cluster with data onto an added empty master, an ioredis Cluster client
 * writes and reads 2000 keys whose slots are moving, without pause. It must see no error (ioredis
 * follows ASK and MOVED by itself), read back every write it just made, and afterwards every
 * acknowledged write must be there with its last acknowledged value (and TTL); the seeded data too,
 * and no slot may be left open.
 *
 * Only single-key commands: a multi-key command on a slot whose keys are split between source and
 * target gets TRYAGAIN (documented Redis behaviour during resharding), which is the client's to
 * retry, not a lost write. Each key has one writer, so "last acknowledged" is well defined.
 * The traffic keys sit ten to a slot and move five per MIGRATE, so their slots are split between
 * source and target for a while: the client meets ASK (keys already moved) and MOVED (slots
 * already assigned), counted by the servers' errorstats.
 */

import type { ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import calculateSlot from 'cluster-key-slot';
import { Cluster } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type DatasetManifest,
  seedDataset,
  spawnWorkerProcesses,
  stopProcesses,
  verifyDataset,
} from '../../src/sandbox/index.js';
import { parseSlotRanges } from '../../src/shared/domain/slots.js';
import { expectOwnersEverywhere, type Stack, startStack, waitForMigration } from './support/stack.js';

const TRAFFIC_KEYS = 2_000;
const KEYS_PER_SLOT = 10;
/** Concurrent client loops; each owns every LOOPS-th key, so each key has one writer. */
const LOOPS = 8;
/** The traffic stops when the migration ends, or after this. */
const TRAFFIC_CAP_MS = 240_000;
const MAX_OPERATIONS = 2_000_000;
const TTL_MS = 3_600_000;

const KeyKind = { String: 'string', Counter: 'counter', List: 'list' } as const;
type KeyKind = (typeof KeyKind)[keyof typeof KeyKind];

interface TrafficKey {
  readonly name: string;
  readonly kind: KeyKind;
  /** Strings only: written with PX TTL_MS every time. */
  readonly withTtl: boolean;
  /** Writes acknowledged so far (the counter's value, the list's last element). */
  acknowledged: number;
  /** True once a write to it failed: its outcome is unknown. */
  uncertain: boolean;
}

const stringValue = (key: TrafficKey, write: number) => `${key.name}:${write}`;

describe('client traffic during a rebalance', () => {
  let stack: Stack;
  let manifest: DatasetManifest;
  let logDir: string;
  let workers: ChildProcess[] = [];
  let client: Cluster | undefined;

  beforeAll(async () => {
    stack = await startStack({
      workers: 0,
      env: { SLOTFLEET_BATCH_KEYS: '5', SLOTFLEET_WORKER_CONCURRENCY: '8' },
    });
    manifest = await seedDataset(stack.cluster.seedUrl, { keys: 30_000, types: 'mixed', ttlFraction: 0.2 });
    logDir = await mkdtemp(join(tmpdir(), 'slotfleet-traffic-'));
    workers = spawnWorkerProcesses({ count: 2, env: stack.env, logDir });
    const deadline = Date.now() + 30_000;
    for (let index = 0; index < workers.length; index++) {
      while (
        !(await readFile(join(logDir, `worker-${index + 1}.log`), 'utf8').catch(() => '')).includes(
          'slotfleet worker ready',
        )
      ) {
        if (Date.now() > deadline) throw new Error(`worker ${index + 1} not ready within 30 s`);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }
  });

  afterAll(async () => {
    client?.disconnect();
    await stopProcesses(workers);
    await stack?.stop();
    if (logDir) await rm(logDir, { recursive: true, force: true });
  });

  /** errorstat_<CODE> counts summed over every master (replicas serve no traffic here). */
  async function errorStats(): Promise<Record<string, number>> {
    const totals: Record<string, number> = {};
    for (const master of await stack.cluster.masters()) {
      const connection = stack.cluster.process(master.id).client();
      try {
        for (const match of String(await connection.info('errorstats')).matchAll(
          /^errorstat_([A-Z]+):count=(\d+)/gm,
        )) {
          totals[match[1]!] = (totals[match[1]!] ?? 0) + Number(match[2]);
        }
      } finally {
        connection.disconnect();
      }
    }
    return totals;
  }

  it('sees only redirections it follows, and loses no acknowledged write', async () => {
    const added = await stack.cluster.addEmptyMaster();
    // The new master weighs 0.25 (the others 1): about 1260 slots move rather than 4096. What the
    // client meets does not depend on how many: its keys sit in 200 of the moving slots either way.
    const rebalance = { useEmptyMasters: true, weights: { [added.id]: 0.25 } };
    const preview = await stack.api.app.inject({
      method: 'POST',
      url: '/v1/clusters/default/rebalance',
      payload: { ...rebalance, dryRun: true },
    });
    expect(preview.statusCode, preview.body).toBe(200);
    const moving = (preview.json().plan as { slots: string }[]).flatMap((group) =>
      parseSlotRanges(group.slots),
    );
    // 16384 / 3.25 * 0.25, give or take redis-cli's rounding.
    expect(moving.length).toBeGreaterThanOrEqual(1255);

    // TRAFFIC_KEYS / KEYS_PER_SLOT moving slots, spread over the whole plan.
    const step = Math.floor(moving.length / (TRAFFIC_KEYS / KEYS_PER_SLOT));
    const trafficSlots = new Map<number, number>();
    for (let index = 0; trafficSlots.size < TRAFFIC_KEYS / KEYS_PER_SLOT; index += step) {
      trafficSlots.set(moving[index]!, 0);
    }
    const keys: TrafficKey[] = [];
    for (let n = 0; keys.length < TRAFFIC_KEYS; n++) {
      const name = `traffic:${n}`;
      const slot = calculateSlot(name);
      const inSlot = trafficSlots.get(slot);
      if (inSlot === undefined || inSlot >= KEYS_PER_SLOT) continue;
      trafficSlots.set(slot, inSlot + 1);
      const kinds = [KeyKind.String, KeyKind.Counter, KeyKind.List] as const;
      const kind = kinds[keys.length % kinds.length]!;
      keys.push({
        name,
        kind,
        withTtl: kind === KeyKind.String && keys.length % 2 === 0,
        acknowledged: 0,
        uncertain: false,
      });
    }

    client = new Cluster(stack.cluster.startupNodes());
    const cluster = client;
    const errors: string[] = [];
    const staleReads: string[] = [];
    let operations = 0;
    let ended = false;

    /** One write and its read-back; the write counts once its reply arrived. */
    async function touch(key: TrafficKey): Promise<void> {
      const write = key.acknowledged + 1;
      let read: string | null;
      let expected: string;
      try {
        switch (key.kind) {
          case KeyKind.String: {
            const value = stringValue(key, write);
            if (key.withTtl) await cluster.set(key.name, value, 'PX', TTL_MS);
            else await cluster.set(key.name, value);
            key.acknowledged = write;
            expected = value;
            read = await cluster.get(key.name);
            break;
          }
          case KeyKind.Counter: {
            const reply = await cluster.incr(key.name);
            // INCR answers the new value: anything else is a lost or doubled increment.
            if (reply !== write) staleReads.push(`${key.name}: INCR answered ${reply}, expected ${write}`);
            key.acknowledged = write;
            expected = String(write);
            read = await cluster.get(key.name);
            break;
          }
          case KeyKind.List: {
            const length = await cluster.rpush(key.name, String(write));
            if (length !== write) staleReads.push(`${key.name}: RPUSH answered ${length}, expected ${write}`);
            key.acknowledged = write;
            expected = String(write);
            read = await cluster.lindex(key.name, -1);
            break;
          }
          default: {
            const never: never = key.kind;
            throw new Error(`unhandled key kind: ${never}`);
          }
        }
      } catch (error) {
        if (key.acknowledged < write) key.uncertain = true;
        errors.push(`${key.name}: ${(error as Error).message}`);
        return;
      } finally {
        operations++;
      }
      if (read !== expected) staleReads.push(`${key.name}: read ${read}, expected ${expected}`);
    }

    const started = Date.now();
    const traffic = Array.from({ length: LOOPS }, async (_, loop) => {
      const mine = keys.filter((_, index) => index % LOOPS === loop);
      for (let round = 0; !ended; round++) {
        if (Date.now() - started > TRAFFIC_CAP_MS || operations > MAX_OPERATIONS) break;
        await touch(mine[round % mine.length]!);
        // A breath between operations: steady traffic, not a benchmark on a shared machine.
        await new Promise((resolve) => setTimeout(resolve, 1));
      }
    });
    // Every key written once, before any slot moves.
    while (keys.some((key) => key.acknowledged === 0) && errors.length === 0) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const statsBefore = await errorStats();

    const created = await stack.api.app.inject({
      method: 'POST',
      url: '/v1/clusters/default/rebalance',
      payload: rebalance,
    });
    expect(created.statusCode, created.body).toBe(202);
    const { id, plan } = created.json() as { id: string; plan: { slots: string; targetId: string }[] };
    expect(plan.flatMap((group) => parseSlotRanges(group.slots))).toEqual(moving);
    expect(plan.every((group) => group.targetId === added.id)).toBe(true);
    const operationsBefore = operations;

    // Past the traffic cap, undefined: the assertion below says so, after the traffic has stopped.
    const final = await waitForMigration(
      stack,
      id,
      Math.max(0, TRAFFIC_CAP_MS - (Date.now() - started)),
    ).catch(() => undefined);
    ended = true;
    await Promise.all(traffic);
    const statsAfter = await errorStats();
    const redirections = (code: string) => (statsAfter[code] ?? 0) - (statsBefore[code] ?? 0);

    expect(final, 'the migration ended within the traffic cap').toBeDefined();
    expect(final).toMatchObject({ state: 'done', errors: [] });
    expect(final!.slots.done).toBe(moving.length);
    expect(errors.slice(0, 10)).toEqual([]);
    expect(staleReads.slice(0, 10)).toEqual([]);
    // The traffic really crossed the migration, and met keys already moved and slots reassigned.
    expect(operations - operationsBefore).toBeGreaterThan(TRAFFIC_KEYS);
    // Keys engine: a key already moved out of an open slot is reached by ASK. Atomic engine (auto on
    // Valkey 9): the source serves every key until the hand-over, so clients only ever see MOVED.
    if (final!.engine === 'atomic') expect(redirections('ASK')).toBe(0);
    else expect(redirections('ASK')).toBeGreaterThan(0);
    expect(redirections('MOVED')).toBeGreaterThan(0);
    expect(redirections('TRYAGAIN')).toBe(0);

    // Every acknowledged write, read afresh from the new owners.
    const lost: string[] = [];
    for (const key of keys) {
      expect(key.uncertain).toBe(false);
      switch (key.kind) {
        case KeyKind.String: {
          const [value, ttl] = await Promise.all([cluster.get(key.name), cluster.pttl(key.name)]);
          if (value !== stringValue(key, key.acknowledged)) lost.push(`${key.name}=${value}`);
          if (key.withTtl ? !(ttl > 0 && ttl <= TTL_MS) : ttl !== -1) lost.push(`${key.name} TTL ${ttl}`);
          break;
        }
        case KeyKind.Counter: {
          const value = await cluster.get(key.name);
          if (value !== String(key.acknowledged)) lost.push(`${key.name}=${value}`);
          break;
        }
        case KeyKind.List: {
          const value = await cluster.lrange(key.name, 0, -1);
          const expected = Array.from({ length: key.acknowledged }, (_, index) => String(index + 1));
          if (value.join(',') !== expected.join(',')) lost.push(`${key.name} has ${value.length} elements`);
          break;
        }
        default: {
          const never: never = key.kind;
          throw new Error(`unhandled key kind: ${never}`);
        }
      }
    }
    expect(lost.slice(0, 10)).toEqual([]);

    const result = await verifyDataset(stack.cluster.seedUrl, manifest);
    expect(result).toMatchObject({ missingCount: 0, wrongValueCount: 0, wrongTtlCount: 0 });
    await expectOwnersEverywhere(stack.cluster, new Map(moving.map((slot) => [slot, added.id])));

    const exits = workers.map((child) => new Promise((resolve) => child.once('exit', resolve)));
    await stopProcesses(workers);
    expect(await Promise.all(exits)).toEqual([0, 0]);
  }, 360_000);
});
