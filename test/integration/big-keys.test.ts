/**
 * Batches are bounded in bytes as well as in keys: a key bigger than the byte budget moves alone,
 * with a timeout scaled to its size, and arrives intact (every field of a 50 MB hash, its TTL, and
 * a binary key name byte for byte).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClusterAdapter, type MigrateOptions } from '../../src/shared/cluster/adapter.js';
import type { NodeRef } from '../../src/shared/domain/plan.js';
import { SlotPhase } from '../../src/shared/domain/slot-migration.js';
import { createMetrics } from '../../src/shared/metrics.js';
import { MigrationStore } from '../../src/shared/queue/migration-store.js';
import { driveSlot, type SlotRunDeps } from '../../src/workers/slot-run.js';
import { moveToNextMaster } from './support/one-slot.js';
import { expectOwnersEverywhere, type Stack, startStack } from './support/stack.js';

/** Real adapter that records every plain MIGRATE (the big-key path). */
class RecordingAdapter extends ClusterAdapter {
  readonly plainMigrates: { keys: Buffer[]; timeoutMs: number }[] = [];
  override async migrate(source: NodeRef, target: NodeRef, keys: readonly Buffer[], options: MigrateOptions) {
    this.plainMigrates.push({ keys: [...keys], timeoutMs: options.timeoutMs });
    return super.migrate(source, target, keys, options);
  }
}

const TAG = '{big}';
const FIELDS = 50_000;
const FIELD_BYTES = 1_000;
const SMALL_KEYS = 40;
const BUDGET_BYTES = 64 * 1024;
const BASE_TIMEOUT_MS = 5_000;

function fieldValue(index: number): string {
  return `${index}:`.padEnd(FIELD_BYTES, String.fromCharCode(97 + (index % 26)));
}

describe('keys bigger than the batch byte budget', () => {
  let stack: Stack;
  let adapter: RecordingAdapter;
  let controlClient: ReturnType<Stack['control']['client']>;

  beforeAll(async () => {
    stack = await startStack({ workers: 0 });
    adapter = new RecordingAdapter('default', stack.config.clusters.default!, { commandTimeoutMs: 10_000 });
    controlClient = stack.control.client();
  });

  afterAll(async () => {
    await adapter?.close();
    controlClient?.disconnect();
    await stack?.stop();
  });

  it('move alone, intact, between batches of small keys that respect the budget', async () => {
    const { data, slot } = await moveToNextMaster(stack, TAG, 'big-keys');
    const source = stack.cluster.process(data.source.port).client();
    const hashKey = `${TAG}:hash`;
    // A binary name (invalid UTF-8) for a second big key: it must reach MIGRATE byte for byte.
    const binaryKey = Buffer.concat([Buffer.from(`${TAG}:bin:`), Buffer.from([0xff, 0xfe, 0x00, 0x80])]);
    try {
      for (let start = 0; start < FIELDS; start += 1_000) {
        const fields: string[] = [];
        for (let index = start; index < start + 1_000; index++) fields.push(`f${index}`, fieldValue(index));
        await source.hset(hashKey, ...fields);
      }
      await source.pexpire(hashKey, 3_600_000);
      await source.set(binaryKey, Buffer.alloc(200 * 1024, 7));
      for (let index = 0; index < SMALL_KEYS; index++) {
        await source.set(`${TAG}:small:${index}`, `v${index}`.padEnd(5_000, '.'));
      }
      expect(Number(await source.call('MEMORY', 'USAGE', hashKey))).toBeGreaterThan(50_000_000);

      const deps: SlotRunDeps = {
        cluster: adapter,
        store: new MigrationStore(controlClient, stack.config.queuePrefix),
        metrics: createMetrics({ defaultMetrics: false }),
        settings: {
          batchKeys: 1_000,
          batchesInFlight: 2,
          batchBytes: BUDGET_BYTES,
          migrateTimeoutMs: BASE_TIMEOUT_MS,
        },
        log: stack.log,
      };
      const migrated = await driveSlot(data, SlotPhase.Migrate, deps);
      await driveSlot(data, SlotPhase.Finalize, deps);

      expect(migrated.keysMoved).toBe(SMALL_KEYS + 2);
      // Exactly the two big keys went by plain MIGRATE, one each, with a stretched timeout.
      expect(adapter.plainMigrates.map((call) => call.keys.length)).toEqual([1, 1]);
      const names = adapter.plainMigrates.map((call) => call.keys[0]!);
      expect(names.some((name) => name.equals(Buffer.from(hashKey)))).toBe(true);
      expect(names.some((name) => name.equals(binaryKey))).toBe(true);
      const hashCall = adapter.plainMigrates.find((call) => call.keys[0]!.equals(Buffer.from(hashKey)))!;
      expect(hashCall.timeoutMs).toBeGreaterThan(BASE_TIMEOUT_MS);

      await expectOwnersEverywhere(stack.cluster, new Map([[slot, data.target.id]]));
      const moved = stack.cluster.process(data.target.port).client();
      try {
        expect(await moved.hlen(hashKey)).toBe(FIELDS);
        const all = await moved.hgetall(hashKey);
        for (let index = 0; index < FIELDS; index++) {
          if (all[`f${index}`] !== fieldValue(index)) throw new Error(`field f${index} differs`);
        }
        const ttl = await moved.pttl(hashKey);
        expect(ttl).toBeGreaterThan(3_000_000);
        expect(ttl).toBeLessThanOrEqual(3_600_000);
        expect((await moved.getBuffer(binaryKey))?.equals(Buffer.alloc(200 * 1024, 7))).toBe(true);
        for (let index = 0; index < SMALL_KEYS; index++) {
          expect(await moved.get(`${TAG}:small:${index}`)).toBe(`v${index}`.padEnd(5_000, '.'));
        }
      } finally {
        moved.disconnect();
      }
      expect(Number(await source.call('CLUSTER', 'COUNTKEYSINSLOT', slot))).toBe(0);
    } finally {
      source.disconnect();
    }
  }, 120_000);
});
