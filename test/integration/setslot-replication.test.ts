/**
 * What a server does with a SETSLOT IMPORTING that reaches a target while its SETSLOT NODE waits for
 * the target's replica: the race that slots opened ahead of their own jobs could lose
 * (SLOTFLEET_OPEN_SLOTS_TOGETHER, docs/how-it-works.md, blocks).
 *
 * Valkey 8 and 9 replicate a SETSLOT to the primary's replicas before executing it. The IMPORTING
 * arrives while the NODE waits for the replica, so it passes the primary's check (the slot is not
 * the target's yet) and is replicated after the NODE. What this test sees on both versions: the
 * primary answers the IMPORTING with OK and ends up owning the slot, not importing it (it executed
 * the two in the other order), while the replica applied them in the order they were replicated, and
 * a replica checks an IMPORTING against its own slots, not its primary's: it stays IMPORTING a slot
 * its primary owns, for good. Redis 7.0 replicates no SETSLOT and refuses the IMPORTING.
 */
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { SandboxCluster } from '../../src/sandbox/index.js';
import { ownerOf, parseClusterNodes } from '../../src/shared/domain/topology.js';

describe('SETSLOT IMPORTING racing SETSLOT NODE on a target with a replica', () => {
  let cluster: SandboxCluster;
  const clients: Redis[] = [];

  beforeAll(async () => {
    cluster = await SandboxCluster.start({ masters: 3, replicasPerMaster: 1 });
  });

  afterAll(async () => {
    for (const client of clients) client.disconnect();
    await cluster?.stop();
  });

  function clientOf(port: number): Redis {
    const client = cluster.process(port).client();
    clients.push(client);
    return client;
  }

  /** The slot as a node sees it: its owner, and whether that node itself imports it. */
  async function viewOf(port: number, slot: number) {
    const text = String(await clientOf(port).call('CLUSTER', 'NODES'));
    const view = parseClusterNodes(text);
    return { owner: ownerOf(view, slot), importing: view.importing.has(slot) };
  }

  /** The replica's view once it names the owner (Redis 7.0's replica learns it by gossip). */
  async function replicaSees(port: number, slot: number, owner: string) {
    const deadline = Date.now() + 10_000;
    for (;;) {
      const view = await viewOf(port, slot);
      if (view.owner === owner || Date.now() > deadline) return view;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  it('leaves the replica importing on Valkey, and nothing open on Redis 7.0', async () => {
    const [source, target] = await cluster.masters();
    const [replica] = await cluster.replicasOf(target!.id);
    const view = parseClusterNodes(String(await clientOf(source!.port).call('CLUSTER', 'NODES')));
    // An empty slot of the source (the cluster holds no key).
    const slot = view.myself.slots[0]!.start;
    expect((await viewOf(target!.port, slot)).owner).toBe(source!.id);

    // The replica is stopped, so a SETSLOT the target replicates waits for its acknowledgement.
    cluster.pauseNode(replica!.port);
    let assigned: Promise<unknown>;
    let opened: Promise<unknown>;
    try {
      assigned = clientOf(target!.port).call('CLUSTER', 'SETSLOT', slot, 'NODE', target!.id);
      // Sent once the NODE has reached the target: it is then waiting for the replica, or done.
      await new Promise((resolve) => setTimeout(resolve, 100));
      opened = clientOf(target!.port)
        .call('CLUSTER', 'SETSLOT', slot, 'IMPORTING', source!.id)
        .then(
          () => 'accepted',
          (error: Error) => error.message,
        );
      await new Promise((resolve) => setTimeout(resolve, 100));
    } finally {
      cluster.resumeNode(replica!.port);
    }
    await assigned;
    const importingReply = await opened;
    const valkey = inject('sandboxServer') !== 'redis7';
    // Valkey answers OK: the IMPORTING passed the first check, and the primary ends up not importing.
    expect(importingReply).toMatch(valkey ? /^accepted$/ : /already the owner/);
    // The source gives the slot up too, as a finalizer would, before the replica is looked at.
    await clientOf(source!.port).call('CLUSTER', 'SETSLOT', slot, 'NODE', target!.id);

    expect(await viewOf(target!.port, slot)).toEqual({ owner: target!.id, importing: false });
    const replicaView = await replicaSees(replica!.port, slot, target!.id);
    expect(replicaView).toEqual({ owner: target!.id, importing: valkey });

    // What the finalizer's guard does for a primary, SETSLOT NODE on the owner again, also closes
    // its replica: the NODE is replicated, and a replica clears the import of its primary's slot.
    await clientOf(target!.port).call('CLUSTER', 'SETSLOT', slot, 'NODE', target!.id);
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(await replicaSees(replica!.port, slot, target!.id)).toEqual({
      owner: target!.id,
      importing: false,
    });
  }, 60_000);
});
