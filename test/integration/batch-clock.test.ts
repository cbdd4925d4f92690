/**
 * How long the source ran a MIGRATE batch, by its own clock: what pacing reads (src/workers/pacer.ts).
 * Redis 7.0 answers TIME inside a script with the time of the call; Valkey 8 and 9 answer the time
 * the script began, so the script's own end reads as its start. SlotCommands notices on the first
 * batch that moves keys and times the node's later batches with a TIME sent right after them. Without
 * it, every batch on Valkey read as taking no time, and the client-latency budget held nothing there.
 */
import calculateSlot from 'cluster-key-slot';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SandboxCluster } from '../../src/sandbox/index.js';
import { ClusterAdapter } from '../../src/shared/cluster/adapter.js';
import type { MigrateBatchResult } from '../../src/shared/cluster/port.js';

describe('a MIGRATE batch, timed by the source', () => {
  let cluster: SandboxCluster;
  let adapter: ClusterAdapter;

  beforeAll(async () => {
    cluster = await SandboxCluster.start({ masters: 3, replicasPerMaster: 0 });
    adapter = new ClusterAdapter('default', cluster.seedTarget, { commandTimeoutMs: 10_000 });
  });

  afterAll(async () => {
    await adapter?.close();
    await cluster?.stop();
  });

  /** A slot of `tag`, 3,000 keys in it on its owner, and that slot opened towards another master. */
  async function openedSlotOf(tag: string) {
    const slot = calculateSlot(`{${tag}}`);
    const masters = await cluster.masters();
    const owners = await Promise.all(
      masters.map(async (master) => ({ master, view: await adapter.readSlotView(master, slot) })),
    );
    const source = owners.find(({ master, view }) => view.owner === master.id)!.master;
    const target = masters.find((master) => master.id !== source.id)!;
    const client = cluster.process(source.port).client();
    try {
      const writes = client.pipeline();
      for (let index = 0; index < 3_000; index++) writes.set(`{${tag}}:${index}`, 'x'.repeat(64));
      await writes.exec();
    } finally {
      client.disconnect();
    }
    await adapter.setSlotImporting(target, slot, source.id);
    await adapter.setSlotMigrating(source, slot, target.id);
    return { slot, source, target };
  }

  /** Three batches of 1,000 keys of the slot, through this adapter. */
  async function threeBatches(
    through: ClusterAdapter,
    { slot, source, target }: Awaited<ReturnType<typeof openedSlotOf>>,
  ): Promise<MigrateBatchResult[]> {
    const batches: MigrateBatchResult[] = [];
    for (let index = 0; index < 3; index++) {
      batches.push(
        await through.migrateNextBatch(
          source,
          target,
          slot,
          { maxKeys: 1_000, maxBytes: 0 },
          { timeoutMs: 5_000 },
        ),
      );
    }
    return batches;
  }

  it('runs for as long as the source was busy, on every server', async () => {
    const opened = await openedSlotOf('clock');
    const client = cluster.process(opened.source.port).client();
    try {
      const batches = await threeBatches(adapter, opened);
      const [seconds, micros] = (await client.call('TIME')) as [string, string];
      const nowUs = Number(seconds) * 1e6 + Number(micros);
      expect(batches.map((batch) => batch.moved)).toEqual([1_000, 1_000, 1_000]);
      // The first batch may go untimed (Valkey: that is how the frozen clock is noticed); never later ones.
      for (const batch of batches.slice(1)) {
        expect(batch.ranUs, JSON.stringify(batch)).toBeDefined();
        const { start, end } = batch.ranUs!;
        // 1,000 keys restored on the target: far more than a microsecond, far less than a second.
        expect(end - start).toBeGreaterThan(50);
        expect(end - start).toBeLessThan(1_000_000);
        expect(end).toBeLessThanOrEqual(nowUs);
      }
      expect(batches[2]!.ranUs!.start).toBeGreaterThanOrEqual(batches[1]!.ranUs!.end);
    } finally {
      client.disconnect();
    }
  });

  it('goes untimed, never timed at 0 µs, for a user refused TIME', async () => {
    const opened = await openedSlotOf('untimed');
    // MIGRATE authenticates on the target as the same user: it exists on every master.
    for (const master of await cluster.masters()) {
      const client = cluster.process(master.port).client();
      try {
        await client.call('ACL', 'SETUSER', 'untimed', 'on', '>untimed-pass', '~*', '+@all', '-time');
      } finally {
        client.disconnect();
      }
    }
    const untimed = new ClusterAdapter(
      'default',
      { ...cluster.seedTarget, username: 'untimed', password: 'untimed-pass' },
      { commandTimeoutMs: 10_000 },
    );
    try {
      const batches = await threeBatches(untimed, opened);
      expect(batches.map((batch) => batch.moved)).toEqual([1_000, 1_000, 1_000]);
      expect(batches.map((batch) => batch.ranUs)).toEqual([undefined, undefined, undefined]);
    } finally {
      await untimed.close();
    }
  });
});
