/**
 * Key counts asked of a node in the same turn leave together: one script call per COUNTS_PER_SCRIPT
 * slots instead of one COUNTKEYSINSLOT each (a finalize batch counts every slot twice, the API's
 * progress reads count every open slot). Each slot still gets its own count, on every server.
 */
import calculateSlot from 'cluster-key-slot';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SandboxCluster } from '../../src/sandbox/index.js';
import { ClusterAdapter } from '../../src/shared/cluster/adapter.js';
import { COUNTS_PER_SCRIPT } from '../../src/shared/cluster/slot-commands.js';
import type { ClusterNode } from '../../src/shared/domain/topology.js';

/** More slots than one script counts: the counts leave in two calls. */
const SLOTS = COUNTS_PER_SCRIPT + 44;

describe('key counts of many slots of a node', () => {
  let cluster: SandboxCluster;
  let adapter: ClusterAdapter;
  let master: ClusterNode;
  /** The master's first SLOTS slots, and how many keys each holds. */
  const expected = new Map<number, number>();

  beforeAll(async () => {
    cluster = await SandboxCluster.start({ masters: 3, replicasPerMaster: 0 });
    adapter = new ClusterAdapter('default', cluster.seedTarget, { commandTimeoutMs: 10_000 });
    master = (await adapter.masters())[0]!;
    const view = await adapter.readView(master);
    const owned = view.nodes.find((node) => node.id === master.id)!.slots;
    const slots = owned.flatMap((range) =>
      Array.from({ length: range.end - range.start + 1 }, (_, index) => range.start + index),
    );
    for (const slot of slots.slice(0, SLOTS)) expected.set(slot, 0);
    // Key names bucketed by slot, up to 7 keys per slot, different counts from slot to slot.
    const client = cluster.process(master.port).client();
    try {
      const writes = client.pipeline();
      for (let index = 0; index < 400_000; index++) {
        const key = `count:${index}`;
        const slot = calculateSlot(key);
        const held = expected.get(slot);
        if (held === undefined || held >= slot % 8) continue;
        expected.set(slot, held + 1);
        writes.set(key, 'x');
      }
      await writes.exec();
    } finally {
      client.disconnect();
    }
  });

  afterAll(async () => {
    await adapter?.close();
    await cluster?.stop();
  });

  /** Calls of the count command and of scripts on the master so far (INFO commandstats). */
  async function callsOnMaster(): Promise<{ counts: number; scripts: number }> {
    const client = cluster.process(master.port).client();
    try {
      const stats = String(await client.info('commandstats'));
      const calls = (name: string) =>
        Number(new RegExp(`cmdstat_${name}:calls=(\\d+)`).exec(stats)?.[1] ?? 0);
      return {
        counts: calls('cluster\\|countkeysinslot'),
        scripts: calls('evalsha') + calls('eval'),
      };
    } finally {
      client.disconnect();
    }
  }

  it('counts each slot, with one script call per COUNTS_PER_SCRIPT slots', async () => {
    const slots = [...expected.keys()];
    expect(slots).toHaveLength(SLOTS);
    expect(new Set(expected.values()).size).toBeGreaterThan(4);
    const before = await callsOnMaster();
    const counts = await adapter.countKeysInSlots(master, slots);
    const after = await callsOnMaster();
    expect(counts).toEqual(slots.map((slot) => expected.get(slot)));
    // Each slot counted once, inside scripts; a script's first call may be answered NOSCRIPT and sent
    // again whole (ioredis), so at most two calls per chunk.
    expect(after.counts - before.counts).toBe(SLOTS);
    expect(after.scripts - before.scripts).toBeGreaterThanOrEqual(2);
    expect(after.scripts - before.scripts).toBeLessThanOrEqual(4);
  });

  it('counts slots asked one after another, each alone, with the plain command', async () => {
    const [first, second] = [...expected.keys()].filter((slot) => expected.get(slot)! > 0);
    const before = await callsOnMaster();
    expect(await adapter.countKeysInSlot(master, first!)).toBe(expected.get(first!));
    expect(await adapter.countKeysInSlot(master, second!)).toBe(expected.get(second!));
    const after = await callsOnMaster();
    expect(after).toEqual({ counts: before.counts + 2, scripts: before.scripts });
  });
});
