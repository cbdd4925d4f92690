/**
 * planRebalance against redis-cli itself: on a real cluster, `redis-cli --cluster rebalance
 * --cluster-simulate` prints "Moving N slots from A to B" for every batch it would move
 * (clusterManagerCommandRebalance); for the same cluster, our plan must have the same senders and
 * receivers, each within one slot of redis-cli's net change.
 */
import { execFile } from 'node:child_process';
import { promisify, stripVTControlCharacters } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type RedisProcess,
  requireRedisBinaries,
  SandboxCluster,
  withAdminConnection,
} from '../../src/sandbox/index.js';
import { type ClusterSnapshot, type SlotMove, snapshotFromViews } from '../../src/shared/domain/plan.js';
import { planRebalance, type RebalanceOptions } from '../../src/shared/domain/planners/index.js';
import { NodeRole, nodeAddress, parseClusterNodes } from '../../src/shared/domain/topology.js';

const execFileAsync = promisify(execFile);
const HOOK_TIMEOUT_MS = 120_000;

interface Case {
  readonly name: string;
  /** Extra redis-cli arguments after `--cluster rebalance host:port --cluster-simulate`. */
  readonly cliArgs: (ids: Ids) => string[];
  readonly options: (ids: Ids) => RebalanceOptions;
}

/** The three masters of redis-cli's split, by port (A lowest), and the empty master added after. */
interface Ids {
  readonly A: string;
  readonly B: string;
  readonly C: string;
  readonly D: string;
}

describe('planRebalance vs redis-cli --cluster rebalance --cluster-simulate', () => {
  let cluster: SandboxCluster;
  let cliPath: string;
  let ids: Ids;
  let seed: RedisProcess;
  /** Every comparison, for the report printed at the end. */
  const figures: string[] = [];

  beforeAll(async () => {
    ({ cliPath } = await requireRedisBinaries());
    cluster = await SandboxCluster.start({ masters: 3, replicasPerMaster: 0 });
    const [a, b, c] = await cluster.masters();
    const empty = await cluster.addEmptyMaster();
    ids = { A: a!.id, B: b!.id, C: c!.id, D: empty.id };
    seed = cluster.process(ids.A);
  }, HOOK_TIMEOUT_MS);

  afterAll(async () => {
    if (figures.length > 0) console.log(`planners vs redis-cli, net slots per node:\n${figures.join('\n')}`);
    await cluster?.stop();
  }, HOOK_TIMEOUT_MS);

  async function readSnapshot(): Promise<ClusterSnapshot> {
    const read = (node: RedisProcess) =>
      withAdminConnection(node, async (connection) =>
        parseClusterNodes(String(await connection.cluster('NODES'))),
      );
    const seedView = await read(seed);
    const masters = seedView.nodes.filter((node) => node.role === NodeRole.Master);
    const masterViews = await Promise.all(masters.map((node) => read(cluster.process(node.id))));
    return snapshotFromViews(seedView, masterViews);
  }

  /** Net slot change per "host:port" that redis-cli would make, from its "Moving N slots" lines. */
  async function redisCliNet(args: string[]): Promise<Map<string, number>> {
    const { stdout } = await execFileAsync(
      cliPath,
      ['--cluster', 'rebalance', `${seed.host}:${seed.port}`, '--cluster-simulate', ...args],
      { timeout: 60_000, maxBuffer: 16 * 1024 * 1024 },
    );
    // redis-cli colours its log lines (clusterManagerLog) and the reset code starts the next line.
    const text = stripVTControlCharacters(stdout);
    const net = new Map<string, number>();
    let batches = 0;
    for (const match of text.matchAll(/^Moving (\d+) slots from (\S+) to (\S+)$/gm)) {
      const [, count, from, to] = match as unknown as [string, string, string, string];
      net.set(from, (net.get(from) ?? 0) - Number(count));
      net.set(to, (net.get(to) ?? 0) + Number(count));
      batches++;
    }
    if (batches === 0 && !/No rebalancing needed/.test(text)) {
      throw new Error(`redis-cli printed neither moves nor "No rebalancing needed":\n${text}`);
    }
    return net;
  }

  function ourNet(moves: readonly SlotMove[]): Map<string, number> {
    const net = new Map<string, number>();
    for (const move of moves) {
      const from = nodeAddress(move.source);
      const to = nodeAddress(move.target);
      net.set(from, (net.get(from) ?? 0) - 1);
      net.set(to, (net.get(to) ?? 0) + 1);
    }
    return net;
  }

  async function compare(testCase: Case): Promise<void> {
    const snapshot = await readSnapshot();
    const expected = await redisCliNet(testCase.cliArgs(ids));
    const moves = planRebalance(snapshot, testCase.options(ids));
    const actual = ourNet(moves);
    const label = (address: string): string => {
      const node = snapshot.nodes.find((candidate) => nodeAddress(candidate) === address);
      const name = (Object.keys(ids) as (keyof Ids)[]).find((key) => ids[key] === node?.id);
      return name ?? address;
    };
    const addresses = [...new Set([...expected.keys(), ...actual.keys()])].sort();
    const row = addresses
      .map((address) => `${label(address)} ${expected.get(address) ?? 0}/${actual.get(address) ?? 0}`)
      .join(', ');
    figures.push(`  ${testCase.name}: ${row || 'nothing moves (both)'}  [redis-cli/ours]`);

    const senders = (net: Map<string, number>) => [...net].filter(([, change]) => change < 0).map(([a]) => a);
    const receivers = (net: Map<string, number>) =>
      [...net].filter(([, change]) => change > 0).map(([a]) => a);
    expect(senders(actual).sort(), 'senders').toEqual(senders(expected).sort());
    expect(receivers(actual).sort(), 'receivers').toEqual(receivers(expected).sort());
    for (const address of addresses) {
      const difference = Math.abs((actual.get(address) ?? 0) - (expected.get(address) ?? 0));
      expect(difference, `net change of ${label(address)}`).toBeLessThanOrEqual(1);
    }
  }

  /** Moves `count` of `from`'s lowest slots to `to` with CLUSTER SETSLOT NODE on every master (they hold no keys). */
  async function moveEmptySlots(fromId: string, toId: string, count: number): Promise<void> {
    const snapshot = await readSnapshot();
    const slots = snapshot.owners.flatMap((owner, slot) => (owner === fromId ? [slot] : [])).slice(0, count);
    expect(slots).toHaveLength(count);
    const masters = snapshot.nodes.filter((node) => node.role === NodeRole.Master);
    // The new owner first, then the old one, then the rest: nobody ever sees two owners claim a slot.
    const order = [
      ...masters.filter((node) => node.id === toId),
      ...masters.filter((node) => node.id === fromId),
      ...masters.filter((node) => node.id !== toId && node.id !== fromId),
    ];
    for (const master of order) {
      await withAdminConnection(
        cluster.process(master.id),
        async (connection) => {
          const pipeline = connection.pipeline();
          for (const slot of slots) pipeline.cluster('SETSLOT', slot, 'NODE', toId);
          const results = (await pipeline.exec()) ?? [];
          const failure = results.find(([error]) => error !== null);
          if (failure) throw failure[0];
        },
        10_000,
      );
    }
    // SETSLOT NODE on a node that was not importing does not bump its config epoch, so a ping the
    // old owner sent just before its own SETSLOT could still win at a third node. Lifting the new
    // owner's epoch above everyone's makes its claim win everywhere.
    await withAdminConnection(
      cluster.process(toId),
      (connection) => connection.call('CLUSTER', 'BUMPEPOCH'),
      10_000,
    );
    await cluster.waitForConsensus();
  }

  const balanced: Case[] = [
    {
      name: '3 masters + 1 empty, --cluster-use-empty-masters',
      cliArgs: () => ['--cluster-use-empty-masters'],
      options: () => ({ useEmptyMasters: true }),
    },
    {
      name: '3 balanced masters + 1 empty, without use-empty-masters',
      cliArgs: () => [],
      options: () => ({}),
    },
    {
      name: 'weight A=2',
      cliArgs: ({ A }) => ['--cluster-weight', `${A}=2`],
      options: ({ A }) => ({ weights: { [A]: 2 } }),
    },
    {
      name: 'weight A=0 with the empty master taking part',
      cliArgs: ({ A }) => ['--cluster-weight', `${A}=0`, '--cluster-use-empty-masters'],
      options: ({ A }) => ({ weights: { [A]: 0 }, useEmptyMasters: true }),
    },
    {
      name: 'fractional weights B=0.5 D=1.5, use-empty-masters',
      cliArgs: ({ B, D }) => ['--cluster-weight', `${B}=0.5`, `${D}=1.5`, '--cluster-use-empty-masters'],
      options: ({ B, D }) => ({ weights: { [B]: 0.5, [D]: 1.5 }, useEmptyMasters: true }),
    },
  ];

  const slightlyUneven: Case[] = [
    {
      name: 'A gave 60 slots to B, default threshold (2%)',
      cliArgs: () => [],
      options: () => ({}),
    },
    {
      name: 'A gave 60 slots to B, --cluster-threshold 1',
      cliArgs: () => ['--cluster-threshold', '1'],
      options: () => ({ threshold: 1 }),
    },
  ];

  const uneven: Case[] = [
    { name: 'A gave 3060 slots to B', cliArgs: () => [], options: () => ({}) },
    {
      name: 'A gave 3060 slots to B, use-empty-masters',
      cliArgs: () => ['--cluster-use-empty-masters'],
      options: () => ({ useEmptyMasters: true }),
    },
    {
      name: 'A gave 3060 slots to B, weight C=3 and the empty master D=2',
      cliArgs: ({ C, D }) => ['--cluster-weight', `${C}=3`, `${D}=2`, '--cluster-use-empty-masters'],
      options: ({ C, D }) => ({ weights: { [C]: 3, [D]: 2 }, useEmptyMasters: true }),
    },
    {
      name: 'A gave 3060 slots to B, --cluster-threshold 130',
      cliArgs: () => ['--cluster-threshold', '130'],
      options: () => ({ threshold: 130 }),
    },
  ];

  it('matches redis-cli on the balanced split redis-cli --cluster create makes', async () => {
    for (const testCase of balanced) await compare(testCase);
  });

  it('matches redis-cli around the threshold', async () => {
    await moveEmptySlots(ids.A, ids.B, 60);
    for (const testCase of slightlyUneven) await compare(testCase);
  });

  it('matches redis-cli on an uneven split', async () => {
    await moveEmptySlots(ids.A, ids.B, 3000);
    for (const testCase of uneven) await compare(testCase);
  });
});
