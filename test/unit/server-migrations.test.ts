import { describe, expect, it } from 'vitest';
import { mapRedisError } from '../../src/shared/cluster/error-map.js';
import {
  describeServerMigration,
  lastEndedTask,
  parseServerMigrations,
  parseServerRanges,
  ServerMigrationOutcome,
  slotsRangeArguments,
  taskHolding,
} from '../../src/shared/domain/server-migrations.js';

const SOURCE = 'a'.repeat(40);
const TARGET = 'b'.repeat(40);

/** One entry as Valkey 9.1 sends it over RESP2 (clusterCommandGetSlotMigrations). */
function entry(name: string, state: string, ranges: string, updated = 100, message = ''): unknown[] {
  return [
    'name',
    name,
    'operation',
    'EXPORT',
    'slot_ranges',
    ranges,
    'target_node',
    TARGET,
    'source_node',
    SOURCE,
    'create_time',
    90,
    'last_update_time',
    updated,
    'last_ack_time',
    updated,
    'state',
    state,
    'message',
    message,
    'cow_size',
    0,
    'remaining_repl_size',
    0,
  ];
}

describe('CLUSTER GETSLOTMIGRATIONS', () => {
  it('parses every field of a RESP2 entry', () => {
    const [migration] = parseServerMigrations([entry('t1', 'snapshotting', '0-9 20-20')]);
    expect(migration).toEqual({
      name: 't1',
      operation: 'export',
      ranges: [
        { start: 0, end: 9 },
        { start: 20, end: 20 },
      ],
      sourceNodeId: SOURCE,
      targetNodeId: TARGET,
      state: 'snapshotting',
      outcome: ServerMigrationOutcome.InProgress,
      message: '',
      createdAtSeconds: 90,
      updatedAtSeconds: 100,
      ackedAtSeconds: 100,
    });
  });

  it.each([
    ['success', ServerMigrationOutcome.Succeeded],
    ['failed', ServerMigrationOutcome.Failed],
    ['cancelled', ServerMigrationOutcome.Cancelled],
    ['replicating', ServerMigrationOutcome.InProgress],
    ['failover-granted', ServerMigrationOutcome.InProgress],
  ])('state %s is %s', (state, outcome) => {
    expect(parseServerMigrations([entry('t', state, '1-1')])[0]!.outcome).toBe(outcome);
  });

  it('refuses what is not a list of migrations, naming the entry', () => {
    expect(() => parseServerMigrations('OK')).toThrow(/expected an array/);
    expect(() => parseServerMigrations([['name', 'x']])).toThrow(/entry 0 lacks/);
    expect(() => parseServerRanges('1-x')).toThrow(/bad slot range/);
  });

  it('finds the task in progress holding a slot, and the last ended one', () => {
    const migrations = parseServerMigrations([
      entry('old', 'failed', '0-99', 50, 'FLUSHDB'),
      entry('newer', 'cancelled', '0-49', 60),
      entry('live', 'replicating', '100-199'),
    ]);
    expect(taskHolding(migrations, 150)?.name).toBe('live');
    expect(taskHolding(migrations, 10)).toBeUndefined();
    expect(lastEndedTask(migrations, 10)?.name).toBe('newer');
    expect(lastEndedTask(migrations, 70)?.name).toBe('old');
    expect(lastEndedTask(migrations, 150)).toBeUndefined();
    expect(describeServerMigration(migrations[0]!)).toBe(
      `server slot migration old (export 0-99 to ${TARGET}: failed, FLUSHDB)`,
    );
  });

  it('gives MIGRATESLOTS its ranges, runs merged', () => {
    expect(slotsRangeArguments([5, 3, 4, 10, 12, 11])).toEqual([3, 5, 10, 12]);
  });
});

describe('replies of the servers’ own slot migration, through the one error map', () => {
  it.each([
    ["ERR unknown subcommand 'GETSLOTMIGRATIONS'. Try CLUSTER HELP.", 'ATOMIC_UNSUPPORTED'],
    ["ERR unknown subcommand 'migrateslots'. Try CLUSTER HELP.", 'ATOMIC_UNSUPPORTED'],
    ['ERR No migrations ongoing', 'NO_SERVER_MIGRATION'],
    ['ERR I am already migrating slot 10923.', 'SLOT_MIGRATION_BUSY'],
    ['ERR Slot export in progress.', 'SLOT_MIGRATION_BUSY'],
    ['ERR Slots are being manually migrated', 'SLOT_MIGRATION_BUSY'],
    ['ERR Slots are not served by this node.', 'NOT_OWNER'],
    ['ERR Slot migration can only be used on primary nodes.', 'READONLY'],
    ['ERR Attempted to access a non local key in a cluster node script', 'MOVED'],
  ])('%s is %s', (reply, code) => {
    expect(mapRedisError(new Error(reply), 'test').code).toBe(code);
  });
});
