/**
 * The error policy on real nodes: BUSYKEY with the same value (replaced), with another value (the
 * slot fails naming the key, nothing overwritten, nothing lost; replace: true overwrites), and a
 * target SIGSTOPped for longer than the MIGRATE timeout (timeouts counted, the keys the target
 * restored meanwhile are recognised as identical, the slot completes).
 */
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DatasetManifest, verifyDataset } from '../../src/sandbox/index.js';
import { SlotPhase } from '../../src/shared/domain/slot-migration.js';
import { ErrorCode, type SlotfleetError } from '../../src/shared/errors.js';
import { createMetrics } from '../../src/shared/metrics.js';
import { MigrationStore } from '../../src/shared/queue/migration-store.js';
import type { SlotJobData } from '../../src/shared/queue/names.js';
import { driveSlot, type SlotRunDeps } from '../../src/workers/slot-run.js';
import { HookedAdapter, seedOneSlot } from './support/one-slot.js';
import { expectNoOpenSlots, expectOwnersEverywhere, type Stack, startStack } from './support/stack.js';

describe('the error policy on real nodes', () => {
  let stack: Stack;
  let adapter: HookedAdapter;
  let controlClient: ReturnType<Stack['control']['client']>;
  let metrics: ReturnType<typeof createMetrics>;

  beforeAll(async () => {
    stack = await startStack({ workers: 0 });
    adapter = new HookedAdapter('default', stack.config.clusters.default!, { commandTimeoutMs: 10_000 });
    controlClient = stack.control.client();
    metrics = createMetrics({ defaultMetrics: false });
  });

  afterAll(async () => {
    await adapter?.close();
    controlClient?.disconnect();
    await stack?.stop();
  });

  function deps(migrateTimeoutMs = 5_000): SlotRunDeps {
    return {
      cluster: adapter,
      store: new MigrationStore(controlClient, stack.config.queuePrefix),
      metrics,
      settings: { batchKeys: 10, batchesInFlight: 1, batchBytes: 0, migrateTimeoutMs },
      log: stack.log,
    };
  }

  function prepareSlot(tag: string, keys: number) {
    return seedOneSlot(stack, { tag, keys, migrationId: `policy-${tag}` });
  }

  /** Puts `value` (or the source's own value) at `key` on the target, as a half-done MIGRATE would. */
  async function plantOnTarget(data: SlotJobData, key: string, value?: string) {
    const source = new Redis({ host: data.source.host, port: data.source.port, lazyConnect: true });
    const target = new Redis({ host: data.target.host, port: data.target.port, lazyConnect: true });
    try {
      await target.call('CLUSTER', 'SETSLOT', data.slot, 'IMPORTING', data.source.id);
      let payload = await source.dumpBuffer(key);
      if (value !== undefined) {
        // The DUMP of another value: written under a scratch key of the same slot, dumped, removed.
        const scratch = `${key}:scratch`;
        await source.set(scratch, value);
        payload = await source.dumpBuffer(scratch);
        await source.del(scratch);
      }
      await target.call('ASKING');
      await target.call('RESTORE', key, 0, payload!);
    } finally {
      source.disconnect();
      target.disconnect();
    }
  }

  async function runToEnd(data: SlotJobData, engine: SlotRunDeps) {
    await driveSlot(data, SlotPhase.Migrate, engine);
    await driveSlot(data, SlotPhase.Finalize, engine);
  }

  async function expectIntactAndClosed(manifest: DatasetManifest, data: SlotJobData) {
    const result = await verifyDataset(stack.cluster.seedUrl, manifest);
    expect(result).toMatchObject({ missingCount: 0, wrongValueCount: 0, wrongTtlCount: 0 });
    await expectOwnersEverywhere(stack.cluster, new Map([[data.slot, data.target.id]]));
    await expectNoOpenSlots(stack.cluster);
  }

  it('BUSYKEY with the same value: replaced, the slot completes', async () => {
    const { data, manifest } = await prepareSlot('busy-same', 30);
    const key = `busy-same:${'0'.padStart(8, '0')}`;
    const source = stack.cluster.process(data.source.port).client();
    const firstKey = String((await source.call('CLUSTER', 'GETKEYSINSLOT', data.slot, 1)) as string[]);
    source.disconnect();
    await plantOnTarget(data, firstKey || key);
    await runToEnd(data, deps());
    await expectIntactAndClosed(manifest, data);
  });

  it('BUSYKEY with another value: the slot fails naming the key and nothing is overwritten; replace: true overwrites', async () => {
    const { data, manifest } = await prepareSlot('busy-diff', 30);
    const source = stack.cluster.process(data.source.port).client();
    const [firstKey] = (await source.call('CLUSTER', 'GETKEYSINSLOT', data.slot, 1)) as string[];
    await plantOnTarget(data, firstKey!, 'the target has its own idea');
    const failure = (await driveSlot(data, SlotPhase.Migrate, deps()).then(
      () => undefined,
      (error: unknown) => error,
    )) as SlotfleetError | undefined;
    expect(failure?.code).toBe(ErrorCode.BusyKey);
    expect(failure?.message).toContain(JSON.stringify(firstKey));
    expect(failure?.message).toContain('replace: true');
    // Nothing lost: the key is still on the source, and the target's copy was not overwritten.
    expect(await source.exists(firstKey!)).toBe(1);
    const target = new Redis({ host: data.target.host, port: data.target.port });
    await target.call('ASKING');
    expect(await target.type(firstKey!)).toBe('string');
    target.disconnect();
    source.disconnect();

    await runToEnd({ ...data, replace: true }, deps());
    await expectIntactAndClosed(manifest, data);
  });

  it('a target SIGSTOPped for longer than the MIGRATE timeout: timeouts counted, the slot completes', async () => {
    const { data, manifest } = await prepareSlot('stopped', 60);
    const timeoutsBefore = await timeoutCount();
    adapter.batches = 0;
    adapter.hook = {
      atBatch: 2,
      run: () => {
        stack.cluster.pauseNode(data.target.port);
        setTimeout(() => stack.cluster.resumeNode(data.target.port), 2_500);
      },
    };
    await runToEnd(data, deps(1_000));
    expect(await timeoutCount()).toBeGreaterThan(timeoutsBefore);
    await expectIntactAndClosed(manifest, data);
  }, 60_000);

  async function timeoutCount(): Promise<number> {
    const metric = await metrics.migrateTimeouts.get();
    return metric.values.reduce((sum, value) => sum + value.value, 0);
  }
});
