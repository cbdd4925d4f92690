import { describe, expect, it } from 'vitest';
import { type ClusterSnapshot, type SlotMove, snapshotFromViews } from '../../src/shared/domain/plan.js';
import {
  type FixInput,
  FixKind,
  type FixNodeView,
  planDrain,
  planFix,
  planRebalance,
  planReshard,
  proportionalShares,
  type RebalanceOptions,
} from '../../src/shared/domain/planners/index.js';
import { SLOT_COUNT } from '../../src/shared/domain/slots.js';
import { type ClusterNode, parseClusterNodes } from '../../src/shared/domain/topology.js';

const ID = {
  A: 'a'.repeat(40),
  B: 'b'.repeat(40),
  C: 'c'.repeat(40),
  D: 'd'.repeat(40),
  E: 'e'.repeat(40),
  R: 'f'.repeat(40),
} as const;
type Name = keyof typeof ID;
const PORT: Record<Name, number> = { A: 7000, B: 7001, C: 7002, D: 7003, E: 7004, R: 7005 };
const address = (name: Name): string => `127.0.0.1:${PORT[name]}`;

interface Shape {
  /** Master name -> its slot tokens as CLUSTER NODES prints them ("0-5460 6000"); '' for none. */
  readonly masters: Partial<Record<Name, string>>;
  readonly failed?: readonly Name[];
  /** Extra tokens on the seed master's line, e.g. open slots "[5->-bbbb]". */
  readonly seedExtra?: string;
  readonly epochs?: Partial<Record<Name, number>>;
}

function nodesText(shape: Shape): string {
  const names = Object.keys(shape.masters) as Name[];
  const lines = names.map((name, index) => {
    const flags = [index === 0 ? 'myself' : '', 'master', shape.failed?.includes(name) ? 'fail' : '']
      .filter(Boolean)
      .join(',');
    const epoch = shape.epochs?.[name] ?? index + 1;
    const slots = [shape.masters[name], index === 0 ? shape.seedExtra : ''].filter(Boolean).join(' ');
    return `${ID[name]} ${address(name)}@${PORT[name] + 10000} ${flags} - 0 0 ${epoch} connected ${slots}`.trim();
  });
  lines.push(`${ID.R} ${address('R')}@17005 slave ${ID.A} 0 0 1 connected`);
  return lines.join('\n');
}

function snapshotOf(shape: Shape): ClusterSnapshot {
  const view = parseClusterNodes(nodesText(shape));
  return snapshotFromViews(view, [view]);
}

const THREE = { A: '0-5460', B: '5461-10922', C: '10923-16383' } as const;
const threeMasters = (): ClusterSnapshot => snapshotOf({ masters: THREE });
const threePlusEmpty = (): ClusterSnapshot => snapshotOf({ masters: { ...THREE, D: '' } });

function nameOf(id: string): Name {
  const entry = Object.entries(ID).find(([, value]) => value === id);
  if (!entry) throw new Error(`unknown id ${id}`);
  return entry[0] as Name;
}

/** Net slots gained (+) or given (-) per node name, leaving out nodes that do neither. */
function netBySlots(moves: readonly SlotMove[]): Partial<Record<Name, number>> {
  const net: Partial<Record<Name, number>> = {};
  for (const move of moves) {
    const source = nameOf(move.source.id);
    const target = nameOf(move.target.id);
    net[source] = (net[source] ?? 0) - 1;
    net[target] = (net[target] ?? 0) + 1;
  }
  return net;
}

function expectOneWayAndSorted(moves: readonly SlotMove[]): void {
  const sources = new Set(moves.map((move) => move.source.id));
  const targets = new Set(moves.map((move) => move.target.id));
  expect([...sources].filter((id) => targets.has(id))).toEqual([]);
  const slots = moves.map((move) => move.slot);
  expect(slots).toEqual([...slots].sort((a, b) => a - b));
  expect(new Set(slots).size).toBe(slots.length);
}

function expectError(run: () => unknown, code: string, message: RegExp): void {
  let caught: unknown;
  try {
    run();
  } catch (error) {
    caught = error;
  }
  expect(caught, 'expected a SlotfleetError').toBeInstanceOf(Error);
  expect((caught as { code?: string }).code).toBe(code);
  expect((caught as Error).message).toMatch(message);
}

describe('planRebalance by slots (redis-cli clusterManagerCommandRebalance)', () => {
  it.each<[string, Shape, RebalanceOptions, Partial<Record<Name, number>>]>([
    [
      '3 masters + 1 empty with useEmptyMasters: 4096 each',
      { masters: { ...THREE, D: '' } },
      { useEmptyMasters: true },
      { A: -1365, B: -1366, C: -1365, D: 4096 },
    ],
    ['3 masters + 1 empty without useEmptyMasters: nothing', { masters: { ...THREE, D: '' } }, {}, {}],
    [
      'weight 0 empties a master',
      { masters: THREE },
      { weights: { [ID.A]: 0 } },
      { A: -5461, B: 2730, C: 2731 },
    ],
    [
      'weight 2 doubles a share (8192 / 4096 / 4096)',
      { masters: THREE },
      { weights: { '127.0.0.1:7000': 2 } },
      { A: 2731, B: -1366, C: -1365 },
    ],
    [
      'a weight on an empty master without useEmptyMasters is ignored, as redis-cli does',
      { masters: { ...THREE, D: '' } },
      { weights: { [ID.D]: 5 } },
      {},
    ],
    [
      'an empty master with weight 0 and useEmptyMasters stays empty',
      { masters: { ...THREE, D: '' } },
      { weights: { [ID.D]: 0 }, useEmptyMasters: true },
      {},
    ],
    [
      'uneven split: 2461 / 8462 / 5461',
      { masters: { A: '3000-5460', B: '0-2999 5461-10922', C: '10923-16383' } },
      {},
      { A: 3001, B: -3001 },
    ],
    [
      'small imbalance under the default 2% threshold: nothing',
      { masters: { A: '0-5400', B: '5401-10922', C: '10923-16383' } },
      {},
      {},
    ],
    [
      'the same imbalance over a 1% threshold moves',
      { masters: { A: '0-5400', B: '5401-10922', C: '10923-16383' } },
      { threshold: 1 },
      { A: 61, B: -61 },
    ],
    [
      'threshold 0 means any imbalance (redis-cli would never move)',
      { masters: { A: '0-5455', B: '5456-10922', C: '10923-16383' } },
      { threshold: 0 },
      { A: 6, B: -6 },
    ],
    [
      'a huge threshold suppresses a large imbalance',
      { masters: { A: '3000-5460', B: '0-2999 5461-10922', C: '10923-16383' } },
      { threshold: 200 },
      {},
    ],
  ])('%s', (_, shape, options, expected) => {
    const moves = planRebalance(snapshotOf(shape), options);
    expect(netBySlots(moves)).toEqual(expected);
    expectOneWayAndSorted(moves);
  });

  it('refuses weights whose total rounds to 0 in single precision (found by the API fuzz: it looped)', () => {
    expectError(
      () =>
        planRebalance(threeMasters(), {
          weights: { [ID.A]: 1e-50, [ID.B]: 1e-50, [ID.C]: 1e-50 },
          threshold: 0,
        }),
      'INVALID_REQUEST',
      /weights are too small/,
    );
  });

  it('takes each sender’s lowest slots first, like clusterManagerComputeReshardTable', () => {
    const moves = planRebalance(threePlusEmpty(), { useEmptyMasters: true });
    const fromB = moves.filter((move) => move.source.id === ID.B).map((move) => move.slot);
    expect(fromB[0]).toBe(5461);
    expect(fromB.at(-1)).toBe(5461 + 1366 - 1);
    expect(moves.every((move) => move.target.id === ID.D)).toBe(true);
    expect(moves[0]).toEqual({
      slot: 0,
      source: { id: ID.A, host: '127.0.0.1', port: 7000 },
      target: { id: ID.D, host: '127.0.0.1', port: 7003 },
    });
  });

  it('leaves every master within one slot of its weighted share', () => {
    const snapshot = snapshotOf({ masters: { A: '0-9999', B: '10000-16383', C: '', D: '', E: '' } });
    const weights = { [ID.A]: 1, [ID.B]: 2, [ID.C]: 3, [ID.D]: 0.5, [ID.E]: 1.5 };
    const moves = planRebalance(snapshot, { useEmptyMasters: true, weights });
    const held: Record<string, number> = { A: 10000, B: 6384, C: 0, D: 0, E: 0 };
    for (const [name, change] of Object.entries(netBySlots(moves))) held[name]! += change;
    expect(Object.values(held).reduce((a, b) => a + b, 0)).toBe(SLOT_COUNT);
    for (const name of ['A', 'B', 'C', 'D', 'E'] as const) {
      const share = (SLOT_COUNT * weights[ID[name]]!) / 8;
      expect(Math.abs(held[name]! - share)).toBeLessThanOrEqual(1);
    }
    expectOneWayAndSorted(moves);
  });

  it.each<[string, () => unknown, string, RegExp]>([
    [
      'unknown node in weights',
      () => planRebalance(threeMasters(), { weights: { nosuchnode: 1 } }),
      'UNKNOWN_NODE',
      /weights key "nosuchnode" is not a node of this cluster/,
    ],
    [
      'replica in weights',
      () => planRebalance(threeMasters(), { weights: { '127.0.0.1:7005': 1 } }),
      'NOT_MASTER',
      /weights key "127\.0\.0\.1:7005" .* is a replica/,
    ],
    [
      'negative weight',
      () => planRebalance(threeMasters(), { weights: { [ID.A]: -1 } }),
      'INVALID_REQUEST',
      /weights\["a{40}"\] is -1: a weight must be a finite number >= 0/,
    ],
    [
      'NaN weight',
      () => planRebalance(threeMasters(), { weights: { [ID.B]: Number.NaN } }),
      'INVALID_REQUEST',
      /weights\["b{40}"\] is NaN/,
    ],
    [
      'all weights 0',
      () => planRebalance(threeMasters(), { weights: { [ID.A]: 0, [ID.B]: 0, [ID.C]: 0 } }),
      'INVALID_REQUEST',
      /every master taking part \(127\.0\.0\.1:7000 .*\) has weight 0/,
    ],
    [
      'one node weighted twice, differently',
      () => planRebalance(threeMasters(), { weights: { [ID.A]: 1, '127.0.0.1:7000': 2 } }),
      'INVALID_REQUEST',
      /name the same node 127\.0\.0\.1:7000 \(aaaaaaaa\) with different weights/,
    ],
    [
      'negative threshold',
      () => planRebalance(threeMasters(), { threshold: -1 }),
      'INVALID_REQUEST',
      /threshold is -1/,
    ],
    [
      'unknown by',
      () => planRebalance(threeMasters(), { by: 'bytes' as never }),
      'INVALID_REQUEST',
      /by is "bytes"/,
    ],
    [
      'open slots',
      () => planRebalance(snapshotOf({ masters: THREE, seedExtra: `[7->-${ID.B}]` })),
      'SLOT_CONFLICT',
      /cannot rebalance: slots 7 are open/,
    ],
    [
      'uncovered slots',
      () => planRebalance(snapshotOf({ masters: { A: '0-5460', B: '5461-10922', C: '10923-16382' } })),
      'SLOT_CONFLICT',
      /cannot rebalance: slots 16383 have no owner/,
    ],
    [
      'slots on a failed master',
      () => planRebalance(snapshotOf({ masters: THREE, failed: ['C'] })),
      'SLOT_CONFLICT',
      /slots 10923-16383 belong to 127\.0\.0\.1:7002 \(cccccccc\), which is flagged master,fail/,
    ],
  ])('rejects %s', (_, run, code, message) => expectError(run, code, message));
});

describe('every planner on random topologies', () => {
  /** A small deterministic generator (LCG), so a failure names the seed that reproduces it. */
  function random(seed: number): () => number {
    let state = seed;
    return () => {
      state = (state * 1_103_515_245 + 12_345) % 2 ** 31;
      return state / 2 ** 31;
    };
  }

  function randomShape(next: () => number): { snapshot: ClusterSnapshot; names: Name[] } {
    const names = (['A', 'B', 'C', 'D', 'E'] as const).slice(0, 3 + Math.floor(next() * 3));
    const holders = names.filter((_, index) => index < 2 || next() < 0.7);
    const cuts = holders
      .slice(1)
      .map(() => 1 + Math.floor(next() * (SLOT_COUNT - 2)))
      .sort((a, b) => a - b);
    const bounds = [0, ...cuts, SLOT_COUNT];
    const masters: Partial<Record<Name, string>> = {};
    for (const name of names) masters[name] = '';
    holders.forEach((name, index) => {
      const start = bounds[index]!;
      const end = bounds[index + 1]! - 1;
      if (end >= start) masters[name] = `${start}-${end}`;
    });
    return { snapshot: snapshotOf({ masters }), names: [...names] };
  }

  it.each(Array.from({ length: 25 }, (_, index) => index + 1))('seed %i', (seed) => {
    const next = random(seed);
    const { snapshot, names } = randomShape(next);
    const weights: Record<string, number> = {};
    for (const name of names) weights[ID[name]] = [0, 0.5, 1, 1, 2, 3][Math.floor(next() * 6)]!;
    // A always holds slots: with a weight above 0 it can take part (all zero is tested above).
    weights[ID.A] ||= 1;
    const useEmptyMasters = next() < 0.5;

    const bySlots = planRebalance(snapshot, { weights, useEmptyMasters, threshold: 0 });
    expectOneWayAndSorted(bySlots);
    const held = new Map<string, number>();
    for (const owner of snapshot.owners) held.set(owner!, (held.get(owner!) ?? 0) + 1);
    for (const move of bySlots) {
      held.set(move.source.id, held.get(move.source.id)! - 1);
      held.set(move.target.id, (held.get(move.target.id) ?? 0) + 1);
    }
    const taking = names.filter((name) => useEmptyMasters || snapshot.owners.includes(ID[name]));
    const totalWeight = taking.reduce((sum, name) => sum + weights[ID[name]]!, 0);
    for (const name of taking) {
      const share = (SLOT_COUNT * weights[ID[name]]!) / totalWeight;
      expect(Math.abs((held.get(ID[name]) ?? 0) - share), `${name} after seed ${seed}`).toBeLessThan(2);
    }

    const keys = Array.from({ length: SLOT_COUNT }, () => (next() < 0.1 ? Math.floor(next() * 500) : 1));
    expectOneWayAndSorted(
      planRebalance(snapshot, { by: 'keys', keysPerSlot: keys, weights, useEmptyMasters }),
    );

    const drained = names.find((name) => snapshot.owners.includes(ID[name]))!;
    const drain = planDrain(snapshot, { node: ID[drained] });
    expectOneWayAndSorted(drain);
    expect(drain).toHaveLength(snapshot.owners.filter((owner) => owner === ID[drained]).length);

    const target = names.find((name) => name !== drained)!;
    const reshard = planReshard(snapshot, { from: ['all'], to: ID[target], slots: 100 });
    expectOneWayAndSorted(reshard);
    expect(reshard).toHaveLength(100);
  });
});

describe('planRebalance by keys', () => {
  /** 1 key per slot, plus 1000 keys in each of slots 0-99 (all on master A). */
  function skewedKeys(): number[] {
    const keys = new Array<number>(SLOT_COUNT).fill(1);
    for (let slot = 0; slot < 100; slot++) keys[slot] = 1000;
    return keys;
  }

  function keysAfter(snapshot: ClusterSnapshot, moves: readonly SlotMove[], keys: readonly number[]) {
    const owners = [...snapshot.owners];
    for (const move of moves) owners[move.slot] = move.target.id;
    const perNode = new Map<string, number>();
    owners.forEach((owner, slot) => {
      if (owner !== null) perNode.set(owner, (perNode.get(owner) ?? 0) + keys[slot]!);
    });
    return perNode;
  }

  it('evens out keys concentrated in a few slots of one master', () => {
    const snapshot = threeMasters();
    const keys = skewedKeys();
    const before = [...keysAfter(snapshot, [], keys).values()];
    const moves = planRebalance(snapshot, { by: 'keys', keysPerSlot: keys });
    const after = [...keysAfter(snapshot, moves, keys).values()];
    expect(Math.max(...before) / Math.min(...before)).toBeGreaterThan(19);
    expect(Math.max(...after) / Math.min(...after)).toBeLessThan(1.05);
    expect(moves.every((move) => move.source.id === ID.A)).toBe(true);
    // Only slots with keys move, and few of them: the heavy ones.
    expect(moves.length).toBeLessThan(100);
    expectOneWayAndSorted(moves);
  });

  it('follows weights: A gets half of the keys with weight 2', () => {
    const snapshot = threeMasters();
    const keys = skewedKeys();
    const moves = planRebalance(snapshot, { by: 'keys', keysPerSlot: keys, weights: { [ID.A]: 2 } });
    const after = keysAfter(snapshot, moves, keys);
    const total = keys.reduce((a, b) => a + b, 0);
    expect(Math.abs(after.get(ID.A)! / total - 0.5)).toBeLessThan(0.01);
    expect(Math.abs(after.get(ID.B)! / total - 0.25)).toBeLessThan(0.01);
    expectOneWayAndSorted(moves);
  });

  it('fills an empty master with useEmptyMasters', () => {
    const snapshot = threePlusEmpty();
    const keys = new Array<number>(SLOT_COUNT).fill(3);
    const moves = planRebalance(snapshot, { by: 'keys', keysPerSlot: keys, useEmptyMasters: true });
    const after = [...keysAfter(snapshot, moves, keys).values()];
    expect(after).toHaveLength(4);
    // Every master ends within the 2% threshold of its target.
    for (const keys of after) expect(Math.abs(keys - (3 * SLOT_COUNT) / 4)).toBeLessThanOrEqual(0.02 * 12288);
    expect(netBySlots(moves).D).toBeGreaterThan(4000);
    expectOneWayAndSorted(moves);
  });

  it('empties a weight-0 master, key-less slots included', () => {
    const snapshot = threeMasters();
    const keys = skewedKeys();
    for (let slot = 200; slot < 300; slot++) keys[slot] = 0;
    const moves = planRebalance(snapshot, { by: 'keys', keysPerSlot: keys, weights: { [ID.A]: 0 } });
    expect(netBySlots(moves).A).toBe(-5461);
    const after = keysAfter(snapshot, moves, keys);
    expect(after.get(ID.A)).toBeUndefined();
    expect(after.get(ID.B)! / after.get(ID.C)!).toBeGreaterThan(0.95);
    expect(after.get(ID.B)! / after.get(ID.C)!).toBeLessThan(1.05);
    expectOneWayAndSorted(moves);
  });

  it('moves nothing when keys are already within the threshold', () => {
    const keys = new Array<number>(SLOT_COUNT).fill(2);
    expect(planRebalance(threeMasters(), { by: 'keys', keysPerSlot: keys })).toEqual([]);
    expect(planRebalance(threeMasters(), { by: 'keys', keysPerSlot: new Array(SLOT_COUNT).fill(0) })).toEqual(
      [],
    );
  });

  it('stops when no whole slot can improve the balance', () => {
    // One slot holds almost everything: moving it would only shift the imbalance elsewhere.
    const keys = new Array<number>(SLOT_COUNT).fill(0);
    keys[5] = 1_000_000;
    keys[6000] = 10;
    expect(planRebalance(threeMasters(), { by: 'keys', keysPerSlot: keys })).toEqual([]);
  });

  it.each<[string, RebalanceOptions, RegExp]>([
    ['keysPerSlot missing', { by: 'keys' }, /keysPerSlot is required when by is "keys"/],
    ['keysPerSlot too short', { by: 'keys', keysPerSlot: [1, 2, 3] }, /keysPerSlot has 3 entries/],
    [
      'a negative key count',
      { by: 'keys', keysPerSlot: Object.assign(new Array(SLOT_COUNT).fill(0), { 9: -1 }) },
      /keysPerSlot\[9\] is -1/,
    ],
  ])('rejects %s', (_, options, message) =>
    expectError(() => planRebalance(threeMasters(), options), 'INVALID_REQUEST', message),
  );
});

describe('planReshard', () => {
  it('takes N slots from the sources in proportion to what they hold, lowest first', () => {
    const moves = planReshard(threeMasters(), { from: [ID.A, '127.0.0.1:7001'], to: ID.C, slots: 1000 });
    expect(netBySlots(moves)).toEqual({ A: -500, B: -500, C: 1000 });
    expect(moves.filter((move) => move.source.id === ID.A).map((move) => move.slot)).toEqual(
      Array.from({ length: 500 }, (_, index) => index),
    );
    expect(moves.find((move) => move.source.id === ID.B)?.slot).toBe(5461);
    expectOneWayAndSorted(moves);
  });

  it('moves exactly N even when proportional shares do not divide evenly', () => {
    const snapshot = snapshotOf({ masters: { A: '0-999', B: '1000-1299', C: '1300-16383', D: '' } });
    const moves = planReshard(snapshot, { from: ['all'], to: ID.D, slots: 10 });
    expect(moves).toHaveLength(10);
    expect(netBySlots(moves)).toEqual({ A: -1, C: -9, D: 10 });
    expectOneWayAndSorted(moves);
  });

  it('"all" means every other master holding slots', () => {
    const moves = planReshard(threePlusEmpty(), { from: ['all'], to: '127.0.0.1:7003', slots: 3 });
    expect(netBySlots(moves)).toEqual({ A: -1, B: -1, C: -1, D: 3 });
  });

  it('moves given ranges from their owners', () => {
    const moves = planReshard(threeMasters(), { from: [ID.A, ID.B], to: ID.C, ranges: '0-9,5461' });
    expect(moves.map((move) => [move.slot, nameOf(move.source.id), nameOf(move.target.id)])).toEqual([
      ...Array.from({ length: 10 }, (_, slot) => [slot, 'A', 'C']),
      [5461, 'B', 'C'],
    ]);
  });

  it('splits a total proportionally, handing the remainder to the largest fractions', () => {
    expect(proportionalShares([5461, 5462], 1000)).toEqual([500, 500]);
    expect(proportionalShares([1000, 300, 15084], 10)).toEqual([1, 0, 9]);
    expect(proportionalShares([3, 3, 3], 9)).toEqual([3, 3, 3]);
    expect(proportionalShares([0, 0], 0)).toEqual([0, 0]);
  });

  it.each<[string, Parameters<typeof planReshard>[1], string, RegExp]>([
    [
      'both slots and ranges',
      { from: [ID.A], to: ID.C, slots: 1, ranges: '0' },
      'INVALID_REQUEST',
      /exactly one of slots .* and ranges/,
    ],
    ['neither slots nor ranges', { from: [ID.A], to: ID.C }, 'INVALID_REQUEST', /exactly one of slots/],
    ['empty from', { from: [], to: ID.C, slots: 1 }, 'INVALID_REQUEST', /from is empty/],
    [
      '"all" mixed with nodes',
      { from: ['all', ID.A], to: ID.C, slots: 1 },
      'INVALID_REQUEST',
      /"all" cannot be combined/,
    ],
    [
      'zero slots',
      { from: [ID.A], to: ID.C, slots: 0 },
      'INVALID_REQUEST',
      /slots is 0: give a whole number/,
    ],
    ['fractional slots', { from: [ID.A], to: ID.C, slots: 1.5 }, 'INVALID_REQUEST', /slots is 1\.5/],
    [
      'unknown source',
      { from: ['127.0.0.1:9999'], to: ID.C, slots: 1 },
      'UNKNOWN_NODE',
      /source "127\.0\.0\.1:9999" is not a node/,
    ],
    ['unknown target', { from: [ID.A], to: 'nosuch', slots: 1 }, 'UNKNOWN_NODE', /target "nosuch"/],
    [
      'replica target',
      { from: [ID.A], to: '127.0.0.1:7005', slots: 1 },
      'NOT_MASTER',
      /target "127\.0\.0\.1:7005" .* is a replica/,
    ],
    ['replica source', { from: [ID.R], to: ID.C, slots: 1 }, 'NOT_MASTER', /source "f{40}" .* is a replica/],
    [
      'target among the sources',
      { from: [ID.A, ID.C], to: '127.0.0.1:7002', slots: 10 },
      'UNSAFE_PLAN',
      /to "127\.0\.0\.1:7002" \(127\.0\.0\.1:7002 \(cccccccc\)\) is also a source/,
    ],
    [
      'more slots than the sources hold',
      { from: [ID.A], to: ID.C, slots: 6000 },
      'UNSAFE_PLAN',
      /slots is 6000 but the sources hold 5461 slots in total \(127\.0\.0\.1:7000 \(aaaaaaaa\): 5461\)/,
    ],
    [
      'a range owned by another node',
      { from: [ID.A], to: ID.C, ranges: '5460-5462' },
      'UNSAFE_PLAN',
      /slots 5461-5462 are owned by 127\.0\.0\.1:7001 \(bbbbbbbb\), which is not a source/,
    ],
    [
      'a range already on the target',
      { from: [ID.A], to: ID.C, ranges: '16000' },
      'UNSAFE_PLAN',
      /slots 16000 are owned by 127\.0\.0\.1:7002 \(cccccccc\), the target/,
    ],
    [
      'a malformed range',
      { from: [ID.A], to: ID.C, ranges: '5-1' },
      'INVALID_REQUEST',
      /ranges: range "5-1"/,
    ],
  ])('rejects %s', (_, options, code, message) =>
    expectError(() => planReshard(threeMasters(), options), code, message),
  );

  it('rejects open slots among the ranges', () => {
    const snapshot = snapshotOf({ masters: THREE, seedExtra: `[3->-${ID.C}]` });
    expectError(
      () => planReshard(snapshot, { from: [ID.A], to: ID.C, ranges: '0-5' }),
      'SLOT_CONFLICT',
      /slots 3 are open/,
    );
  });
});

describe('planDrain', () => {
  it('fills the emptiest masters first, evening the result', () => {
    const moves = planDrain(threePlusEmpty(), { node: ID.A });
    expect(netBySlots(moves)).toEqual({ A: -5461, D: 5461 });
    expectOneWayAndSorted(moves);
  });

  it('spreads over equal masters, one contiguous run each', () => {
    const moves = planDrain(threeMasters(), { node: '127.0.0.1:7000' });
    expect(netBySlots(moves)).toEqual({ A: -5461, B: 2730, C: 2731 });
    const toB = moves.filter((move) => move.target.id === ID.B).map((move) => move.slot);
    expect(toB).toEqual(Array.from({ length: 2730 }, (_, index) => index));
    expectOneWayAndSorted(moves);
  });

  it('follows weights: a master with weight 2 ends with twice the slots of one with weight 1', () => {
    const snapshot = snapshotOf({ masters: { A: '0-11999', B: '12000-16383', C: '', D: '' } });
    const moves = planDrain(snapshot, { node: ID.A, weights: { [ID.C]: 2 } });
    const net = netBySlots(moves);
    // B already holds more than its quarter; C and D fill 2:1.
    expect(net.B).toBeUndefined();
    expect(net.A).toBe(-12000);
    expect(Math.abs(net.C! - 8000)).toBeLessThanOrEqual(1);
    expect(Math.abs(net.D! - 4000)).toBeLessThanOrEqual(1);
    expectOneWayAndSorted(moves);
  });

  it('skips weight-0 masters', () => {
    const moves = planDrain(threePlusEmpty(), { node: ID.B, weights: { [ID.D]: 0 } });
    expect(netBySlots(moves)).toEqual({ A: 2731, B: -5462, C: 2731 });
  });

  it('returns nothing for a master without slots', () => {
    expect(planDrain(threePlusEmpty(), { node: ID.D })).toEqual([]);
  });

  it.each<[string, () => unknown, string, RegExp]>([
    [
      'an unknown node',
      () => planDrain(threeMasters(), { node: 'zz' }),
      'UNKNOWN_NODE',
      /node to drain "zz"/,
    ],
    [
      'a replica',
      () => planDrain(threeMasters(), { node: '127.0.0.1:7005' }),
      'NOT_MASTER',
      /node to drain "127\.0\.0\.1:7005" .* is a replica/,
    ],
    [
      'no other master',
      () => planDrain(threeMasters(), { node: ID.A, weights: { [ID.B]: 0, [ID.C]: 0 } }),
      'UNSAFE_PLAN',
      /no other master can take the 5461 slots of 127\.0\.0\.1:7000 \(aaaaaaaa\)/,
    ],
    [
      'open slots on the node',
      () => planDrain(snapshotOf({ masters: THREE, seedExtra: `[42->-${ID.B}]` }), { node: ID.A }),
      'SLOT_CONFLICT',
      /slots 42 are open/,
    ],
  ])('rejects %s', (_, run, code, message) => expectError(run, code, message));
});

describe('planFix', () => {
  const nodes: readonly ClusterNode[] = parseClusterNodes(
    nodesText({ masters: THREE, epochs: { A: 1, B: 2, C: 3 } }),
  ).nodes;
  const SLOT = 100;

  /** How one master sees SLOT (100): whether it claims it, its open state, its keys there. */
  interface ViewSpec {
    claims?: boolean;
    importing?: Name;
    migrating?: Name;
    keys?: number;
  }

  /**
   * Views where A, B, C own their usual ranges except SLOT, which each master sees as `specs` say
   * (a master only ever lists itself as SLOT's owner: the claims are what fix reasons about).
   */
  function fixInput(specs: Partial<Record<'A' | 'B' | 'C', ViewSpec>>, counts = true): FixInput {
    const views: FixNodeView[] = (['A', 'B', 'C'] as const).map((name) => {
      const spec = specs[name] ?? {};
      const owners = [...threeMasters().owners];
      owners[SLOT] = null;
      if (spec.claims) owners[SLOT] = ID[name];
      const keys = spec.keys ?? 0;
      return {
        nodeId: ID[name],
        owners,
        importing: new Map(spec.importing ? [[SLOT, ID[spec.importing]]] : []),
        migrating: new Map(spec.migrating ? [[SLOT, ID[spec.migrating]]] : []),
        slotsWithKeys: new Set(keys > 0 ? [SLOT] : []),
        ...(counts ? { keysInSlot: new Map(keys > 0 ? [[SLOT, keys]] : []) } : {}),
      };
    });
    return { nodes, views };
  }

  function only(input: FixInput) {
    const plan = planFix(input);
    expect(plan.repairs.length + plan.unrepairable.length).toBe(1);
    return plan;
  }

  function summary(input: FixInput): unknown {
    const plan = only(input);
    const repair = plan.repairs[0];
    if (!repair) return { unrepairable: plan.unrepairable[0]!.reason };
    return {
      kind: repair.kind,
      source: nameOf(repair.source.id),
      target: nameOf(repair.target.id),
      keysFrom: repair.keysFrom.map((ref) => nameOf(ref.id)),
      closeOn: repair.closeOn.map((ref) => nameOf(ref.id)),
    };
  }

  it('reports nothing for a healthy cluster', () => {
    expect(planFix(fixInput({ A: { claims: true, keys: 5 } }))).toEqual({ repairs: [], unrepairable: [] });
  });

  it.each<[string, Partial<Record<'A' | 'B' | 'C', ViewSpec>>, unknown]>([
    [
      '(a) MIGRATING on owner A, IMPORTING on B: finish A -> B',
      { A: { claims: true, migrating: 'B', keys: 3 }, B: { importing: 'A', keys: 2 } },
      { kind: FixKind.FinishMigration, source: 'A', target: 'B', keysFrom: [], closeOn: [] },
    ],
    [
      '(a) B already claims it (SETSLOT NODE reached B only): finish A -> B',
      { A: { claims: true, migrating: 'B' }, B: { claims: true, keys: 5 } },
      { kind: FixKind.FinishMigration, source: 'A', target: 'B', keysFrom: [], closeOn: [] },
    ],
    [
      '(b) only MIGRATING on the owner, peer untouched: close it (case 4)',
      { A: { claims: true, migrating: 'B', keys: 4 } },
      { kind: FixKind.CloseStale, source: 'A', target: 'A', keysFrom: [], closeOn: ['A'] },
    ],
    [
      '(b) only MIGRATING on the owner, peer already holds keys: finish (case 1)',
      { A: { claims: true, migrating: 'B', keys: 4 }, B: { keys: 1 } },
      { kind: FixKind.FinishMigration, source: 'A', target: 'B', keysFrom: [], closeOn: [] },
    ],
    [
      '(c) only IMPORTING on a non-owner without keys: close-stale',
      { A: { claims: true, keys: 9 }, B: { importing: 'A' } },
      { kind: FixKind.CloseStale, source: 'A', target: 'A', keysFrom: [], closeOn: ['B'] },
    ],
    [
      '(d) IMPORTING with keys: move them back to the owner (case 2)',
      { A: { claims: true, keys: 9 }, B: { importing: 'A', keys: 4 } },
      { kind: FixKind.MoveKeysToOwner, source: 'B', target: 'A', keysFrom: ['B'], closeOn: ['B'] },
    ],
    [
      'case 3: migrating A -> B, importing on B and C without keys',
      { A: { claims: true, migrating: 'B', keys: 2 }, B: { importing: 'A' }, C: { importing: 'A' } },
      { kind: FixKind.FinishMigration, source: 'A', target: 'B', keysFrom: [], closeOn: ['C'] },
    ],
    [
      'case 3: migrating A -> B, importing only on C: close everywhere',
      { A: { claims: true, migrating: 'B', keys: 2 }, C: { importing: 'A' } },
      { kind: FixKind.CloseStale, source: 'A', target: 'A', keysFrom: [], closeOn: ['A', 'C'] },
    ],
    [
      'migrating A -> B while B imports from C: unrepairable',
      { A: { claims: true, migrating: 'B', keys: 2 }, B: { importing: 'C' } },
      { unrepairable: expect.stringMatching(/is IMPORTING it from c{40}/) },
    ],
    [
      '(e) uncovered, keys on B only: assign to B',
      { B: { keys: 3 } },
      { kind: FixKind.AssignUncovered, source: 'B', target: 'B', keysFrom: [], closeOn: [] },
    ],
    [
      '(e) uncovered, keys on A and C: the one with most keys gets it',
      { A: { keys: 3 }, C: { keys: 30 } },
      { kind: FixKind.AssignUncovered, source: 'A', target: 'C', keysFrom: ['A'], closeOn: [] },
    ],
    [
      '(e) uncovered with a stale import: assign and close',
      { C: { importing: 'A', keys: 1 } },
      { kind: FixKind.AssignUncovered, source: 'C', target: 'C', keysFrom: [], closeOn: ['C'] },
    ],
    [
      '(f) keys on a non-owner only, owner has none: move them to the owner',
      { A: { claims: true }, B: { keys: 7 } },
      { kind: FixKind.MoveKeysToOwner, source: 'B', target: 'A', keysFrom: ['B'], closeOn: [] },
    ],
    [
      '(f) keys on owner and non-owner, owner holds most: move to the owner',
      { A: { claims: true, keys: 70 }, B: { keys: 7 } },
      { kind: FixKind.MoveKeysToOwner, source: 'B', target: 'A', keysFrom: ['B'], closeOn: [] },
    ],
    [
      '(f) keys on owner and non-owner, non-owner holds most: unrepairable',
      { A: { claims: true, keys: 7 }, B: { keys: 70 } },
      { unrepairable: expect.stringMatching(/which copy is current cannot be told/) },
    ],
    [
      'two claimants, keys on one: it keeps the slot',
      { A: { claims: true }, C: { claims: true, keys: 2 } },
      { kind: FixKind.ResolveOwners, source: 'A', target: 'C', keysFrom: [], closeOn: [] },
    ],
    [
      'two claimants, no keys: the higher config epoch keeps it',
      { A: { claims: true }, B: { claims: true } },
      { kind: FixKind.ResolveOwners, source: 'A', target: 'B', keysFrom: [], closeOn: [] },
    ],
    [
      'two nodes MIGRATING: unrepairable',
      { A: { claims: true, migrating: 'C' }, B: { claims: true, migrating: 'C' } },
      { unrepairable: expect.stringMatching(/only one node can be migrating a slot/) },
    ],
    [
      'migrating A -> B while C holds keys: unrepairable, never paired with C',
      { A: { claims: true, migrating: 'B', keys: 1 }, C: { keys: 1 } },
      { unrepairable: expect.stringMatching(/more nodes are involved than one migration explains/) },
    ],
  ])('%s', (_, specs, expected) => {
    expect(summary(fixInput(specs))).toEqual(expected);
  });

  it('needs key counts to choose among several holders', () => {
    expect(summary(fixInput({ A: { keys: 3 }, C: { keys: 30 } }, false))).toEqual({
      unrepairable: expect.stringMatching(/key counts are unknown \(give keysInSlot to choose\)/),
    });
    expect(summary(fixInput({ A: { keys: 3 }, C: { keys: 3 } }))).toEqual({
      unrepairable: expect.stringMatching(/hold the same number of keys \(3\)/),
    });
  });

  it('assigns uncovered key-less slots to the master with fewest slots, spreading a batch', () => {
    const input = fixInput({ A: { claims: true } });
    for (const view of input.views as FixNodeView[]) {
      const owners = view.owners as (string | null)[];
      for (let slot = 0; slot < 30; slot++) owners[slot] = null;
    }
    const plan = planFix(input);
    expect(plan.unrepairable).toEqual([]);
    expect(plan.repairs).toHaveLength(30);
    expect(plan.repairs.every((repair) => repair.kind === FixKind.AssignUncovered)).toBe(true);
    const counts: Record<string, number> = {};
    for (const repair of plan.repairs)
      counts[nameOf(repair.target.id)] = (counts[nameOf(repair.target.id)] ?? 0) + 1;
    // A holds 5431 after losing 0-29, B 5462, C 5461: A takes the first 30 and stays the emptiest.
    expect(counts).toEqual({ A: 30 });
  });

  it('refuses when a master serving slots is failing', () => {
    const failedNodes = parseClusterNodes(nodesText({ masters: THREE, failed: ['C'] })).nodes;
    const input = fixInput({ A: { claims: true } });
    expectError(
      () => planFix({ nodes: failedNodes, views: input.views.filter((view) => view.nodeId !== ID.C) }),
      'UNSAFE_PLAN',
      /master 127\.0\.0\.1:7002 \(cccccccc\) is flagged master,fail but still serves slots/,
    );
  });

  it('rejects a view of a non-master', () => {
    const input = fixInput({ A: { claims: true } });
    expectError(
      () => planFix({ nodes, views: [...input.views, { ...input.views[0]!, nodeId: ID.R }] }),
      'INVALID_REQUEST',
      /views has an entry for f{40}, which is not a master/,
    );
  });
});
