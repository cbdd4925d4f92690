/**
 * SETSLOTs asked of a node in the same turn leave together: on Redis, one script call per
 * SETSLOTS_PER_SCRIPT of them instead of one command each (a block's opening, a finalize batch's
 * assignments on every master). Each caller still gets its own SETSLOT's outcome, a refused one
 * mapped as a command of its own would be. Valkey refuses the script (its SETSLOT may wait for
 * replicas, which a script cannot), and there every SETSLOT is a command of its own.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SandboxCluster } from '../../src/sandbox/index.js';
import { ClusterAdapter } from '../../src/shared/cluster/adapter.js';
import { NODE_SCRIPTS, SETSLOTS_PER_SCRIPT } from '../../src/shared/cluster/slot-commands.js';
import type { ClusterNode } from '../../src/shared/domain/topology.js';
import { ErrorCode, SlotfleetError } from '../../src/shared/errors.js';

/** More slots than one script sets: the SETSLOTs leave in two calls. */
const SLOTS = SETSLOTS_PER_SCRIPT + 20;
const UNKNOWN_NODE = 'f'.repeat(40);

describe('SETSLOT of many slots of a node', () => {
  let cluster: SandboxCluster;
  let adapter: ClusterAdapter;
  let source: ClusterNode;
  let target: ClusterNode;
  /** SLOTS slots the source owns. */
  let slots: number[];
  let server: 'redis' | 'valkey';

  beforeAll(async () => {
    cluster = await SandboxCluster.start({ masters: 3, replicasPerMaster: 0 });
    adapter = new ClusterAdapter('default', cluster.seedTarget, { commandTimeoutMs: 10_000 });
    const masters = await adapter.masters();
    source = masters[0]!;
    target = masters[1]!;
    const view = await adapter.readView(source);
    slots = view.myself.slots
      .flatMap((range) =>
        Array.from({ length: range.end - range.start + 1 }, (_, index) => range.start + index),
      )
      .slice(0, SLOTS);
    const client = cluster.process(source.port).client();
    try {
      server = /valkey_version:/.test(String(await client.info('server'))) ? 'valkey' : 'redis';
    } finally {
      client.disconnect();
    }
  });

  afterAll(async () => {
    await adapter?.close();
    await cluster?.stop();
  });

  /** Calls of SETSLOT and of scripts on a node so far (INFO commandstats). */
  async function callsOn(node: ClusterNode): Promise<{ setSlots: number; scripts: number }> {
    const client = cluster.process(node.port).client();
    try {
      const stats = String(await client.info('commandstats'));
      const calls = (name: string) =>
        Number(new RegExp(`cmdstat_${name}:calls=(\\d+)`).exec(stats)?.[1] ?? 0);
      return { setSlots: calls('cluster\\|setslot'), scripts: calls('evalsha') + calls('eval') };
    } finally {
      client.disconnect();
    }
  }

  it('sets each slot, in one script call per SETSLOTS_PER_SCRIPT on Redis; a refused one fails alone', async () => {
    expect(slots).toHaveLength(SLOTS);
    const before = await callsOn(target);
    // The target owns none of them: IMPORTING is accepted for each. The last one names a node the
    // cluster does not know, which every server refuses, and only that one may fail.
    const outcomes = await Promise.allSettled([
      ...slots.slice(0, -1).map((slot) => adapter.setSlotImporting(target, slot, source.id)),
      adapter.setSlotImporting(target, slots.at(-1)!, UNKNOWN_NODE),
    ]);
    const after = await callsOn(target);
    expect(outcomes.slice(0, -1).every((outcome) => outcome.status === 'fulfilled')).toBe(true);
    const refused = outcomes.at(-1)!;
    expect(refused.status).toBe('rejected');
    const error = (refused as PromiseRejectedResult).reason;
    expect(error).toBeInstanceOf(SlotfleetError);
    expect((error as SlotfleetError).message).toContain(`SETSLOT ${slots.at(-1)} IMPORTING ${UNKNOWN_NODE}`);

    const view = await adapter.readView(target);
    expect([...view.importing.keys()].sort((a, b) => a - b)).toEqual(slots.slice(0, -1));
    expect(after.setSlots - before.setSlots).toBe(SLOTS);
    if (server === 'redis') {
      // Inside two scripts; a script's first call may be answered NOSCRIPT and sent again whole.
      expect(after.scripts - before.scripts).toBeGreaterThanOrEqual(2);
      expect(after.scripts - before.scripts).toBeLessThanOrEqual(4);
    } else {
      // Valkey: the script refused at once, then one command per SETSLOT.
      expect(after.scripts - before.scripts).toBeLessThanOrEqual(2);
    }

    // Undone one by one (STABLE is never batched), leaving the node as it was.
    await Promise.all(slots.map((slot) => adapter.setSlotStable(target, slot)));
    expect((await adapter.readView(target)).importing.size).toBe(0);
  });

  it('maps a refused SETSLOT of a script as the command alone would be', async () => {
    // MIGRATING on a node that does not own the slot, twice in one turn: both refused, NotOwner.
    const outcomes = await Promise.allSettled(
      slots.slice(0, 2).map((slot) => adapter.setSlotMigrating(target, slot, source.id)),
    );
    for (const outcome of outcomes) {
      expect(outcome.status).toBe('rejected');
      expect(((outcome as PromiseRejectedResult).reason as SlotfleetError).code).toBe(ErrorCode.NotOwner);
    }
    const alone = await adapter.setSlotMigrating(target, slots[2]!, source.id).catch((error) => error);
    expect((alone as SlotfleetError).code).toBe(ErrorCode.NotOwner);
  });

  it('the script refuses on Valkey, whose SETSLOT may wait for replicas, and sets the slot on Redis', async () => {
    const client = cluster.process(target.port).client();
    try {
      const reply = await client.eval(
        NODE_SCRIPTS.slotfleetSetSlots.lua,
        0,
        slots[0]!,
        'IMPORTING',
        source.id,
      );
      const importing = (await adapter.readView(target)).importing.get(slots[0]!);
      if (server === 'valkey') {
        expect(reply).toBeNull();
        expect(importing).toBeUndefined();
      } else {
        expect(reply).toEqual(['']);
        expect(importing).toBe(source.id);
      }
    } finally {
      client.disconnect();
      await adapter.setSlotStable(target, slots[0]!);
    }
  });

  it('assigns a slot asked alone with the plain command', async () => {
    const before = await callsOn(source);
    await adapter.setSlotNode(source, slots[0]!, source.id);
    const after = await callsOn(source);
    expect(after).toEqual({ setSlots: before.setSlots + 1, scripts: before.scripts });
  });
});
