/**
 * The engine a new migration runs with and what the cluster rules out for it (checkEngine), the
 * server tasks that hold a plan's slots (tasksHoldingSlots), and INFO keyspace (parseKeyspace): tables.
 */
import { describe, expect, it } from 'vitest';
import {
  checkEngine,
  type EngineCheckInput,
  EngineRefusalKind,
  type MasterFacts,
  openSlotsOnPlanNodes,
  repairEngine,
  tasksHoldingSlots,
} from '../../src/shared/domain/engine-choice.js';
import { databasesBeyondZero, parseKeyspace } from '../../src/shared/domain/keyspace.js';
import { EngineChoice, MigrationEngine } from '../../src/shared/domain/migration.js';
import type { NodeRef, OpenSlot, SlotMove } from '../../src/shared/domain/plan.js';
import { parseServerMigrations, type ServerMigration } from '../../src/shared/domain/server-migrations.js';

const A: NodeRef = { id: 'a'.repeat(40), host: '127.0.0.1', port: 7000 };
const B: NodeRef = { id: 'b'.repeat(40), host: '127.0.0.1', port: 7001 };
const C: NodeRef = { id: 'c'.repeat(40), host: '127.0.0.1', port: 7002 };

/** A CLUSTER GETSLOTMIGRATIONS entry as Valkey 9.1 sends it over RESP2. */
function task(
  name: string,
  operation: 'import' | 'export',
  ranges: string,
  state = 'snapshotting',
  ends: { source: NodeRef; target: NodeRef } = { source: A, target: B },
): ServerMigration {
  const [parsed] = parseServerMigrations([
    [
      'name',
      name,
      'operation',
      operation.toUpperCase(),
      'slot_ranges',
      ranges,
      'source_node',
      ends.source.id,
      'target_node',
      ends.target.id,
      'state',
      state,
      'message',
      '',
      'create_time',
      '1700000000',
      'last_update_time',
      '1700000001',
    ],
  ]);
  return parsed!;
}

function master(node: NodeRef, facts: Partial<Omit<MasterFacts, 'node'>> = {}): MasterFacts {
  return { node, serverMigrations: [], databases: [{ database: 0, keys: 10, expires: 0 }], ...facts };
}

const atomicEverywhere = [master(A), master(B), master(C)];
const redisEverywhere = [A, B, C].map((node) => master(node, { serverMigrations: undefined }));
const oneWithout = [master(A), master(B, { serverMigrations: undefined }), master(C)];

function move(slot: number, source = A, target = B): SlotMove {
  return { slot, source, target };
}

function check(partial: Partial<EngineCheckInput>) {
  return checkEngine({
    choice: EngineChoice.Auto,
    repairsByHand: false,
    masters: atomicEverywhere,
    moves: [move(100)],
    openSlots: [],
    ...partial,
  });
}

describe('checkEngine: which engine', () => {
  it.each([
    ['auto', 'every master has atomic', EngineChoice.Auto, atomicEverywhere, MigrationEngine.Atomic],
    ['auto', 'no master has it', EngineChoice.Auto, redisEverywhere, MigrationEngine.Keys],
    ['auto', 'one master lacks it', EngineChoice.Auto, oneWithout, MigrationEngine.Keys],
    ['keys', 'every master has atomic', EngineChoice.Keys, atomicEverywhere, MigrationEngine.Keys],
    ['keys', 'no master has it', EngineChoice.Keys, redisEverywhere, MigrationEngine.Keys],
    ['atomic', 'every master has atomic', EngineChoice.Atomic, atomicEverywhere, MigrationEngine.Atomic],
  ])('%s where %s: %s', (_choice, _where, choice, masters, engine) => {
    expect(check({ choice, masters })).toEqual({ engine });
  });

  it.each([
    ['no master has it', redisEverywhere, [A, B, C]],
    ['one master lacks it', oneWithout, [B]],
  ])('atomic where %s: refused, naming the masters without it', (_where, masters, lacking) => {
    expect(check({ choice: EngineChoice.Atomic, masters })).toEqual({
      refusal: { kind: EngineRefusalKind.AtomicUnsupported, lacking },
    });
  });

  it('an empty master without atomic counts too (it may receive slots)', () => {
    const masters = [
      ...atomicEverywhere,
      master({ ...C, id: 'd'.repeat(40), port: 7003 }, { serverMigrations: undefined }),
    ];
    expect(check({ masters })).toEqual({ engine: MigrationEngine.Keys });
  });

  it.each([
    [EngineChoice.Auto, { engine: MigrationEngine.Keys }],
    [EngineChoice.Keys, { engine: MigrationEngine.Keys }],
    [EngineChoice.Atomic, { refusal: { kind: EngineRefusalKind.AtomicForRepairs } }],
  ])('fix (repairs by hand) with %s, whatever the servers have', (choice, expected) => {
    expect(repairEngine(choice)).toEqual(expected);
    for (const masters of [atomicEverywhere, redisEverywhere])
      expect(check({ choice, masters, repairsByHand: true })).toEqual(expected);
  });
});

describe('checkEngine: what the cluster rules out', () => {
  const holding = task('f'.repeat(40), 'export', '90-110');

  it.each([EngineChoice.Auto, EngineChoice.Keys, EngineChoice.Atomic])(
    'a slot held by a server task in progress is refused with engine %s',
    (choice) => {
      const masters = [master(A, { serverMigrations: [holding] }), master(B), master(C)];
      expect(check({ choice, masters })).toEqual({
        refusal: {
          kind: EngineRefusalKind.ServerTask,
          holdings: [{ task: holding, slots: [100], listedBy: A }],
        },
      });
    },
  );

  it('fix is refused too when a repair would touch a held slot', () => {
    const masters = [master(A, { serverMigrations: [holding] }), master(B), master(C)];
    expect(check({ masters, repairsByHand: true }).refusal?.kind).toBe(EngineRefusalKind.ServerTask);
  });

  it('atomic with a slot open by hand on a source or target: refused, naming it', () => {
    const open: OpenSlot[] = [
      { slot: 5, nodeId: B.id, state: 'importing', peerId: C.id },
      { slot: 6, nodeId: C.id, state: 'migrating', peerId: B.id },
    ];
    expect(check({ openSlots: open })).toEqual({
      refusal: { kind: EngineRefusalKind.OpenSlots, openSlots: [{ ...open[0], node: B }] },
    });
    // keys does not care: the planners refuse open slots of the plan itself.
    expect(check({ openSlots: open, choice: EngineChoice.Keys })).toEqual({ engine: MigrationEngine.Keys });
  });

  it('an open slot on a node outside the plan does not stop atomic', () => {
    const open: OpenSlot[] = [{ slot: 6, nodeId: C.id, state: 'migrating', peerId: B.id }];
    expect(check({ openSlots: open })).toEqual({ engine: MigrationEngine.Atomic });
  });

  it('keys with keys in databases other than 0: refused, naming nodes and databases', () => {
    const databases = [
      { database: 0, keys: 10, expires: 0 },
      { database: 3, keys: 5, expires: 1 },
    ];
    const masters = [master(A), master(B), master(C, { databases })];
    expect(check({ choice: EngineChoice.Keys, masters })).toEqual({
      refusal: {
        kind: EngineRefusalKind.OtherDatabases,
        nodes: [{ node: C, databases: [{ database: 3, keys: 5, expires: 1 }] }],
      },
    });
    // auto picks atomic, which moves every database.
    expect(check({ masters })).toEqual({ engine: MigrationEngine.Atomic });
    // fix repairs with keys only: refused as well.
    expect(check({ masters, repairsByHand: true }).refusal?.kind).toBe(EngineRefusalKind.OtherDatabases);
  });

  it('refuses the missing engine first, then held slots, then what the engine rules out', () => {
    const masters = [
      master(A, { serverMigrations: [holding], databases: [{ database: 2, keys: 1, expires: 0 }] }),
      master(B, { serverMigrations: undefined }),
      master(C),
    ];
    expect(check({ choice: EngineChoice.Atomic, masters }).refusal?.kind).toBe(
      EngineRefusalKind.AtomicUnsupported,
    );
    expect(check({ choice: EngineChoice.Keys, masters }).refusal?.kind).toBe(EngineRefusalKind.ServerTask);
  });
});

describe('tasksHoldingSlots', () => {
  const name = '1'.repeat(40);

  it('lists one entry per task though both ends list it, keeping the source (export) entry', () => {
    const importing = task(name, 'import', '0-99');
    const exporting = task(name, 'export', '0-99');
    const masters = [
      master(B, { serverMigrations: [importing] }),
      master(A, { serverMigrations: [exporting] }),
    ];
    expect(tasksHoldingSlots(masters, [5, 50, 100, 7])).toEqual([
      { task: exporting, listedBy: A, slots: [5, 7, 50] },
    ]);
  });

  it.each([
    ['succeeded', 'success'],
    ['failed', 'failed'],
    ['cancelled', 'cancelled'],
  ])('ignores a task that has %s', (_outcome, state) => {
    const masters = [master(A, { serverMigrations: [task(name, 'export', '0-99', state)] })];
    expect(tasksHoldingSlots(masters, [5])).toEqual([]);
  });

  it('checks every range of a task, and only the plan slots it covers', () => {
    const twoRanges = task(name, 'export', '10-19 30-30');
    const masters = [master(A, { serverMigrations: [twoRanges] })];
    expect(tasksHoldingSlots(masters, [9, 10, 19, 20, 30, 31])).toEqual([
      { task: twoRanges, listedBy: A, slots: [10, 19, 30] },
    ]);
  });

  it('lists each task holding slots, and nothing on servers without atomic', () => {
    const first = task(name, 'export', '0-9');
    const second = task('2'.repeat(40), 'export', '20-29', 'snapshotting', { source: C, target: B });
    const masters = [
      master(A, { serverMigrations: [first] }),
      master(C, { serverMigrations: [second] }),
      master(B, { serverMigrations: undefined }),
    ];
    expect(tasksHoldingSlots(masters, [1, 25, 40])).toEqual([
      { task: first, listedBy: A, slots: [1] },
      { task: second, listedBy: C, slots: [25] },
    ]);
  });
});

describe('openSlotsOnPlanNodes', () => {
  it('keeps open slots of sources and targets, any slot', () => {
    const open: OpenSlot[] = [
      { slot: 1, nodeId: A.id, state: 'migrating', peerId: C.id },
      { slot: 2, nodeId: C.id, state: 'importing', peerId: A.id },
      { slot: 3, nodeId: B.id, state: 'importing', peerId: C.id },
    ];
    expect(openSlotsOnPlanNodes(open, [move(100, A, B)])).toEqual([
      { ...open[0], node: A },
      { ...open[2], node: B },
    ]);
  });
});

describe('parseKeyspace', () => {
  it.each([
    [
      'Redis 7.0, database 0',
      '# Keyspace\r\ndb0:keys=5,expires=0,avg_ttl=0\r\n',
      [{ database: 0, keys: 5, expires: 0 }],
    ],
    ['no keys at all', '# Keyspace\r\n', []],
    [
      'Valkey 9 with numbered databases (and fields Redis has not)',
      '# Keyspace\r\ndb0:keys=10,expires=2,avg_ttl=1000,subexpiry=0\r\ndb3:keys=5,expires=0,avg_ttl=0,subexpiry=0\r\ndb15:keys=1,expires=1,avg_ttl=9\r\n',
      [
        { database: 0, keys: 10, expires: 2 },
        { database: 3, keys: 5, expires: 0 },
        { database: 15, keys: 1, expires: 1 },
      ],
    ],
    [
      'other sections around it, unsorted',
      '# Server\nredis_version:7.0.15\n\n# Keyspace\ndb12:keys=7,expires=0,avg_ttl=0\ndb1:keys=2,expires=0,avg_ttl=0\n',
      [
        { database: 1, keys: 2, expires: 0 },
        { database: 12, keys: 7, expires: 0 },
      ],
    ],
  ])('%s', (_case, info, expected) => {
    expect(parseKeyspace(info)).toEqual(expected);
  });

  it('throws naming a db line without a keys count', () => {
    expect(() => parseKeyspace('db2:expires=0,avg_ttl=0')).toThrow(
      /no keys count in "db2:expires=0,avg_ttl=0"/,
    );
  });

  it('databasesBeyondZero keeps the other databases that hold keys', () => {
    const databases = parseKeyspace('db0:keys=1,expires=0\ndb3:keys=5,expires=0\ndb4:keys=0,expires=0');
    expect(databasesBeyondZero(databases)).toEqual([{ database: 3, keys: 5, expires: 0 }]);
  });
});
