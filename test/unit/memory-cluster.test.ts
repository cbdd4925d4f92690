/**
 * The in-memory cluster of test/support/memory-cluster.ts against the Redis 7.0 rules it claims to
 * keep: the replies (and so the SlotfleetError codes) of SETSLOT, MIGRATE and reads, the epoch bump
 * of an import's SETSLOT NODE, gossip (claims, UPDATE, dirty slots, collisions, importing nodes
 * ignoring claims), failover, and the batch script's reply. The slot engine's unit tests are only as
 * good as these rules.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parseClusterNodes } from '../../src/shared/domain/topology.js';
import { ErrorCode, type SlotfleetError } from '../../src/shared/errors.js';
import {
  FaultReply,
  keySlot,
  MemoryCluster,
  type MemoryNode,
  type StoredKey,
} from '../support/memory-cluster.js';
import { tagServedBy } from '../support/slot-harness.js';

let cluster: MemoryCluster;
let a: MemoryNode;
let b: MemoryNode;
let c: MemoryNode;

beforeEach(() => {
  cluster = new MemoryCluster({ masters: 3, replicasPerMaster: 1, gossipEveryMs: 0 });
  [a, b, c] = [cluster.node(7000), cluster.node(7001), cluster.node(7002)];
});

afterEach(() => cluster.close());

function codeOf(promise: Promise<unknown>): Promise<string> {
  return promise.then(
    () => 'no error',
    (error: SlotfleetError) => error.code ?? String(error),
  );
}

/** A slot of node a, with `keys` string keys in it. */
function slotOfA(keys = 3): { slot: number; keys: StoredKey[] } {
  const tag = tagServedBy(cluster, 7000, 'fidelity');
  const stored = Array.from({ length: keys }, (_, index) =>
    cluster.set(`{${tag}}:${index}`, { type: 'string', content: `v${index}` }, { ttlMs: 60_000 }),
  );
  return { slot: keySlot(`{${tag}}`), keys: stored };
}

describe('replies, mapped to the codes the adapter gives', () => {
  it.each<[string, () => Promise<unknown>, ErrorCode]>([
    ['SETSLOT IMPORTING on the owner', () => cluster.setSlotImporting(a, 0, b.id), ErrorCode.AlreadyOwner],
    [
      'SETSLOT MIGRATING on a node that does not own it',
      () => cluster.setSlotMigrating(b, 0, c.id),
      ErrorCode.NotOwner,
    ],
    ['SETSLOT on a replica', () => cluster.setSlotStable(cluster.node(7003), 0), ErrorCode.ReadOnly],
    [
      'SETSLOT NODE naming an unknown node',
      () => cluster.setSlotNode(a, 0, 'f'.repeat(40)),
      ErrorCode.NodeUnknownToPeer,
    ],
    [
      'SETSLOT IMPORTING from an unknown node',
      () => cluster.setSlotImporting(b, 0, 'f'.repeat(40)),
      ErrorCode.NodeUnknownToPeer,
    ],
    ['ADDSLOTS of a served slot', () => cluster.addSlot(b, 0), ErrorCode.AlreadyOwner],
    [
      'a node nobody listens at',
      () => cluster.countKeysInSlot({ host: '127.0.0.1', port: 1 }, 0),
      ErrorCode.Connection,
    ],
  ])('%s', async (_name, command, code) => {
    expect(await codeOf(command())).toBe(code);
  });

  it('SETSLOT NODE of its slot to another node, while it holds keys of it: refused', async () => {
    const { slot } = slotOfA();
    expect(await codeOf(cluster.setSlotNode(a, slot, b.id))).toBe(ErrorCode.StillHoldsKeys);
  });

  it('MIGRATE to a node that neither owns nor imports the slot: the target answers MOVED', async () => {
    const { keys } = slotOfA();
    const failure = await cluster.migrate(a, b, [keys[0]!.name], { timeoutMs: 100 }).catch((error) => error);
    expect(failure.code).toBe(ErrorCode.Moved);
    expect(failure.message).toMatch(
      /^MIGRATE 1 keys to 127\.0\.0\.1:7001 on 127\.0\.0\.1:7000: Target instance replied with error: MOVED \d+ 127\.0\.0\.1:7000$/,
    );
  });

  it('MIGRATE of a key the target holds: BUSYKEY, the other keys move; REPLACE overwrites', async () => {
    const { slot, keys } = slotOfA(3);
    b.setSlotImporting(slot, a.id);
    cluster.plant(b.id, { ...keys[1]!, value: { type: 'string', content: 'mine' } });
    const names = keys.map((key) => key.name);
    expect(await codeOf(cluster.migrate(a, b, names, { timeoutMs: 100 }))).toBe(ErrorCode.BusyKey);
    expect(a.countKeysInSlot(slot)).toBe(1);
    expect(b.lookup(keys[1]!.name)?.value.content).toBe('mine');
    expect(await cluster.migrate(a, b, names, { timeoutMs: 100, replace: true })).toBe(3);
    expect(b.lookup(keys[1]!.name)?.value.content).toBe('v1');
    expect(a.countKeysInSlot(slot)).toBe(0);
  });

  it('MIGRATE keeps each TTL, copies to the target replicas and deletes from the source replicas', async () => {
    const { slot, keys } = slotOfA(2);
    b.setSlotImporting(slot, a.id);
    expect(await cluster.migrate(a, b, [keys[0]!.name], { timeoutMs: 100 })).toBe(1);
    expect(b.lookup(keys[0]!.name)).toEqual(keys[0]);
    expect(cluster.replicasOf(b.id)[0]!.lookup(keys[0]!.name)).toEqual(keys[0]);
    expect(cluster.replicasOf(a.id)[0]!.lookup(keys[0]!.name)).toBeUndefined();
    expect(cluster.replicasOf(a.id)[0]!.countKeysInSlot(slot)).toBe(1);
  });

  it('MIGRATE of keys that no longer exist: +NOKEY, nothing sent', async () => {
    const { slot } = slotOfA(0);
    const expired = cluster.set(
      `{${tagServedBy(cluster, 7000, 'fidelity')}}:gone`,
      { type: 'string', content: 'x' },
      { ttlMs: -1 },
    );
    b.setSlotImporting(slot, a.id);
    expect(await cluster.migrate(a, b, [expired.name], { timeoutMs: 100 })).toBe(0);
    // GETKEYSINSLOT still lists it (it expires lazily); the batch script reports it sent nothing.
    expect(await cluster.getKeysInSlot(a, slot, 10)).toEqual([expired.name]);
    expect(
      await cluster.migrateNextBatch(a, b, slot, { maxKeys: 10, maxBytes: 0 }, { timeoutMs: 100 }),
    ).toMatchObject({
      keys: 1,
      moved: 0,
      more: false,
    });
  });

  it('reads follow the slot: ASK from a MIGRATING owner lacking the key, ASKING served by the importer, MOVED elsewhere', async () => {
    const { slot, keys } = slotOfA(1);
    b.setSlotImporting(slot, a.id);
    a.setSlotMigrating(slot, b.id);
    const missing = Buffer.from(`${keys[0]!.name.toString()}-missing`);
    expect(await codeOf(cluster.dumpKeys(a, [missing], { asking: false }))).toBe(ErrorCode.Ask);
    expect(await cluster.dumpKeys(a, [keys[0]!.name], { asking: false })).toHaveLength(1);
    expect(await cluster.dumpKeys(b, [keys[0]!.name], { asking: true })).toEqual([null]);
    expect(await codeOf(cluster.dumpKeys(b, [keys[0]!.name], { asking: false }))).toBe(ErrorCode.Moved);
    expect(await codeOf(cluster.dumpKeys(c, [keys[0]!.name], { asking: true }))).toBe(ErrorCode.Moved);
  });

  it.each<[FaultReply, ErrorCode]>([
    [FaultReply.BusyKey, ErrorCode.BusyKey],
    [FaultReply.IoError, ErrorCode.IoError],
    [FaultReply.TryAgain, ErrorCode.TryAgain],
    [FaultReply.ClusterDown, ErrorCode.ClusterDown],
    [FaultReply.ReadOnly, ErrorCode.ReadOnly],
    [FaultReply.Connection, ErrorCode.Connection],
  ])('a %s fault on demand, for the next call only', async (reply, code) => {
    const { slot } = slotOfA(1);
    b.setSlotImporting(slot, a.id);
    cluster.failNext('migrateNextBatch', reply);
    const batch = () =>
      cluster.migrateNextBatch(a, b, slot, { maxKeys: 10, maxBytes: 0 }, { timeoutMs: 100 });
    expect(await codeOf(batch())).toBe(code);
    expect(await batch()).toMatchObject({ keys: 1, moved: 1 });
  });
});

describe('SETSLOT NODE', () => {
  it('on the importing target: a config epoch above every one it knows, IMPORTING closed, every node told at once', async () => {
    const { slot } = slotOfA(0);
    b.setSlotImporting(slot, a.id);
    a.setSlotMigrating(slot, b.id);
    await cluster.setSlotNode(b, slot, b.id);
    expect(b.configEpoch).toBe(4);
    expect(b.importing.size).toBe(0);
    for (const node of cluster.nodes) expect(node.owners[slot]).toBe(b.id);
    // The source lost the slot by gossip but keeps MIGRATING until told (Redis 7.0).
    expect(a.slotView(slot)).toMatchObject({ owner: b.id, migratingTo: b.id });
  });

  it('on an importing target that holds the highest epoch already: no bump', async () => {
    const { slot } = slotOfA(0);
    c.setSlotImporting(slot, a.id);
    await cluster.setSlotNode(c, slot, c.id);
    expect(c.configEpoch).toBe(3);
  });

  it('on a node not importing the slot: no bump, nobody else told', async () => {
    const { slot } = slotOfA(0);
    await cluster.setSlotNode(c, slot, b.id);
    expect(cluster.nodes.map((node) => node.configEpoch)).toEqual([1, 2, 3, 0, 0, 0]);
    expect(b.owners[slot]).toBe(a.id);
    expect(c.owners[slot]).toBe(b.id);
  });

  it('of the last slot of a master to another: the master becomes its replica', async () => {
    const small = new MemoryCluster({ masters: 2, replicasPerMaster: 0, gossipEveryMs: 0 });
    try {
      const [first, second] = [small.node(7000), small.node(7001)];
      for (let slot = 0; slot < 8191; slot++) first.setOwner(slot, second.id);
      await small.setSlotNode(first, 8191, second.id);
      expect(first).toMatchObject({ role: 'replica', masterId: second.id });
    } finally {
      small.close();
    }
  });
});

describe('gossip', () => {
  /**
   * What rule 2 of the state machine prevents: b claims a slot of a with an epoch below a's. b is cut
   * off while c fails over (epoch 4) and a bumps to 5; b knows 3 at most, so its claim gets 4.
   */
  function claimBelowTheOwner(): { slot: number } {
    const { slot, keys } = slotOfA(2);
    cluster.isolate(b.id);
    cluster.failover(cluster.replicasOf(c.id)[0]!.id);
    cluster.settle();
    cluster.bumpEpoch(a.id);
    cluster.settle();
    b.setSlotImporting(slot, a.id);
    for (const key of keys) cluster.plant(b.id, key);
    b.setSlotNode(slot, b.id);
    expect([a.configEpoch, b.configEpoch]).toEqual([5, 4]);
    return { slot };
  }

  it('a claim below the owner s epoch loses to the owner s PING: the claimant drops the slot and its keys', () => {
    const { slot } = claimBelowTheOwner();
    cluster.heal(b.id);
    cluster.settle();
    for (const node of cluster.nodes) expect(node.owners[slot]).toBe(a.id);
    expect(b.countKeysInSlot(slot)).toBe(0);
    expect(a.countKeysInSlot(slot)).toBe(2);
  });

  it('a node mapping the slot to a higher epoch answers such a claim with UPDATE, to the same effect', () => {
    const { slot } = claimBelowTheOwner();
    // a itself is cut off: b hears of a's epoch only from the nodes that map the slot to a, by UPDATE.
    cluster.isolate(a.id);
    cluster.heal(b.id);
    cluster.gossip();
    expect(b.epochOf(a.id)).toBe(5);
    expect(b.owners[slot]).toBe(a.id);
    expect(b.countKeysInSlot(slot)).toBe(0);
  });

  it('a node importing a slot ignores claims for it (clusterUpdateSlotsConfigWith)', async () => {
    const { slot } = slotOfA(0);
    b.setSlotImporting(slot, a.id);
    cluster.isolate(b.id);
    c.setSlotImporting(slot, a.id);
    await cluster.setSlotNode(c, slot, c.id);
    cluster.heal(b.id);
    cluster.settle();
    expect(b.owners[slot]).toBe(a.id);
    expect(a.owners[slot]).toBe(c.id);
  });

  it('two masters on one config epoch: the one with the smaller id takes a new epoch', () => {
    cluster.isolate(b.id);
    cluster.bumpEpoch(a.id);
    cluster.bumpEpoch(b.id);
    expect([a.configEpoch, b.configEpoch]).toEqual([4, 4]);
    cluster.heal(b.id);
    cluster.settle();
    const [smaller, larger] = a.id < b.id ? [a, b] : [b, a];
    expect(smaller.configEpoch).toBe(5);
    expect(larger.configEpoch).toBe(4);
    for (const node of cluster.nodes) expect(node.epochOf(smaller.id)).toBe(5);
  });
});

describe('failover', () => {
  it('the replica takes the slots with a new epoch and its keys; the old master follows it, its slots closed', () => {
    const { slot, keys } = slotOfA(2);
    c.setSlotImporting(slot, a.id);
    a.setSlotMigrating(slot, c.id);
    const replica = cluster.replicasOf(a.id)[0]!;
    cluster.failover(replica.id);
    expect(replica).toMatchObject({ role: 'master', configEpoch: 4 });
    expect(replica.lookup(keys[0]!.name)).toEqual(keys[0]);
    expect(a).toMatchObject({ role: 'replica', masterId: replica.id });
    expect(a.migrating.size).toBe(0);
    expect(b.owners[slot]).toBe(replica.id);
    // c imports the slot from a: it ignores the new owner's claim for it...
    expect(c.owners[slot]).toBe(a.id);
    cluster.settle();
    // ...and once it hears a is a replica, the slot has no owner in its view: its cluster is down.
    expect(c.owners[slot]).toBeNull();
    expect(c.slotView(slot)).toMatchObject({ owner: null, importingFrom: a.id });
    expect(c.stateOk).toBe(false);
  });
});

describe('CLUSTER NODES and the batch script', () => {
  it('each node renders its own view: myself, masters with ranges, replicas, its open slots', () => {
    const { slot } = slotOfA(0);
    b.setSlotImporting(slot, a.id);
    const view = parseClusterNodes(b.clusterNodes());
    expect(view.myself).toMatchObject({ id: b.id, port: 7001, role: 'master', configEpoch: 2 });
    expect(view.importing.get(slot)).toBe(a.id);
    expect(view.nodes.filter((node) => node.role === 'master').map((node) => node.slots)).toEqual([
      [{ start: 0, end: 5460 }],
      [{ start: 5461, end: 10922 }],
      [{ start: 10923, end: 16383 }],
    ]);
    expect(view.nodes.find((node) => node.port === 7003)).toMatchObject({
      role: 'replica',
      masterId: a.id,
      configEpoch: 1,
    });
    expect(parseClusterNodes(a.clusterNodes()).importing.size).toBe(0);
  });

  it('a batch says whether more keys may follow, and names a key bigger than the byte budget instead of sending it', async () => {
    const { slot } = slotOfA(5);
    const big = cluster.set(`{${tagServedBy(cluster, 7000, 'fidelity')}}:big`, {
      type: 'string',
      content: 'x'.repeat(500),
    });
    b.setSlotImporting(slot, a.id);
    const batch = (maxKeys: number, maxBytes: number) =>
      cluster.migrateNextBatch(a, b, slot, { maxKeys, maxBytes }, { timeoutMs: 100 });
    expect(await batch(2, 0)).toMatchObject({ keys: 2, moved: 2, more: true, bytes: 0 });
    expect(await batch(2, 200)).toMatchObject({ keys: 2, moved: 2, more: true });
    expect(await batch(5, 200)).toMatchObject({ keys: 1, moved: 1, more: true });
    expect(await batch(5, 200)).toMatchObject({ keys: 0, moved: 0, more: true, bigKey: { name: big.name } });
    expect(await cluster.migrate(a, b, [big.name], { timeoutMs: 100 })).toBe(1);
    expect(await batch(5, 200)).toEqual({ keys: 0, moved: 0, bytes: 0, more: false });
  });
});
