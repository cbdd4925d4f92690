/**
 * The vertical slice on real servers: POST a migration, let a real BullMQ worker move the slots of
 * a real 3-master x 1-replica cluster, and check every key (value and TTL) and every node's view.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DatasetManifest, seedDataset, verifyDataset } from '../../src/sandbox/index.js';
import { slotsOf } from './support/slots.js';
import {
  countKeysInSlots,
  expectOwnersEverywhere,
  type Stack,
  startStack,
  waitForMigration,
} from './support/stack.js';

describe('moving slots through the fleet', () => {
  let stack: Stack;
  let manifests: DatasetManifest[];

  beforeAll(async () => {
    stack = await startStack({ workers: 1 });
    manifests = [
      await seedDataset(stack.cluster.seedUrl, { keys: 20_000, types: 'mixed', ttlFraction: 0.3, seed: 7 }),
      await seedDataset(stack.cluster.seedUrl, {
        keys: 3_000,
        types: 'mixed',
        ttlFraction: 0.3,
        hashTag: '{hot}',
        prefix: 'hot',
        seed: 8,
      }),
    ];
  });

  afterAll(async () => {
    await stack?.stop();
  });

  it('moves slots holding keys of every type, with and without TTL, and loses nothing', async () => {
    const masters = await stack.cluster.masters();
    const [first, second, third] = [...masters].sort((a, b) => a.port - b.port) as [
      (typeof masters)[0],
      (typeof masters)[0],
      (typeof masters)[0],
    ];
    const client = stack.cluster.process(first.port).client();
    const hotSlot = Number(await client.call('CLUSTER', 'KEYSLOT', '{hot}'));
    client.disconnect();
    const ownerRanges = new Map(
      await Promise.all(
        [first, second, third].map(
          async (master) => [master.id, await slotsOf(stack.cluster, master.id)] as const,
        ),
      ),
    );
    // One target, two sources (a node may not give and receive in one migration), and the hot slot
    // from whichever of them holds it.
    const hotOwner = [...ownerRanges.entries()].find(([, slots]) => slots.includes(hotSlot))![0];
    const target = hotOwner === second.id ? first : second;
    const [sourceA, sourceB] = [first, second, third].filter((master) => master.id !== target.id) as [
      typeof first,
      typeof first,
    ];
    const fromA = ownerRanges.get(sourceA.id)!.slice(0, 300);
    const fromB = ownerRanges.get(sourceB.id)!.slice(-100);
    const moves = [
      { slots: ranges(fromA.filter((slot) => slot !== hotSlot)), target: `127.0.0.1:${target.port}` },
      { slots: ranges(fromB.filter((slot) => slot !== hotSlot)), target: target.id },
      { slots: String(hotSlot), target: target.id.slice(0, 12) },
    ];
    const movedSlots = [...fromA, ...fromB, hotSlot].filter((slot, i, all) => all.indexOf(slot) === i);
    const keysInMovedSlots = await countKeysInSlots(stack.cluster, movedSlots);
    expect(keysInMovedSlots).toBeGreaterThan(3_000);

    const response = await stack.api.app.inject({
      method: 'POST',
      url: '/v1/clusters/default/migrations',
      payload: { moves },
    });
    expect(response.statusCode, response.body).toBe(202);
    const created = response.json();
    expect(created.slots).toBe(movedSlots.length);
    expect(created.id).toMatch(/^mig-/);

    const final = await waitForMigration(stack, created.id);
    expect(final.errors).toEqual([]);
    expect(final.state).toBe('done');
    expect(final.slots.done).toBe(movedSlots.length);
    expect(final.keysMoved).toBe(keysInMovedSlots);

    for (const manifest of manifests) {
      const result = await verifyDataset(stack.cluster.seedUrl, manifest);
      expect(result).toMatchObject({ missingCount: 0, wrongValueCount: 0, wrongTtlCount: 0 });
      expect(result.checked).toBe(manifest.count);
    }

    const expectedOwners = new Map<number, string>();
    for (const slot of movedSlots) expectedOwners.set(slot, target.id);
    await expectOwnersEverywhere(stack.cluster, expectedOwners);
  });
});

function ranges(slots: number[]): string {
  return slots.join(',');
}
