/**
 * The server tasks of an atomic migration as GET /v1/migrations/:id shows them: which tasks the
 * sources' lists contribute (exports overlapping the plan's slots of that source, ended ones only
 * since the migration was created), their order and shape; and the read around it: no read for the
 * keys engine or an ended migration, one read a second per migration, null when a source fails.
 */
import { describe, expect, it } from 'vitest';
import {
  CLOCK_SLACK_SECONDS,
  SERVER_TASKS_CACHE_MS,
  type SourceTasks,
  selectServerTasks,
  serverTasks,
} from '../../src/producer/server-tasks-view.js';
import type { NodeAddress } from '../../src/shared/cluster/port.js';
import { parseServerMigrations, type ServerMigration } from '../../src/shared/domain/server-migrations.js';
import type { MigrationRecord, PlanGroup } from '../../src/shared/queue/migration-store.js';

const A = { address: '10.0.0.1:7000', id: 'a'.repeat(40) };
const B = { address: '10.0.0.2:7000', id: 'b'.repeat(40) };
const C = { address: '10.0.0.3:7000', id: 'c'.repeat(40) };
const D = { address: '10.0.0.4:7000', id: 'd'.repeat(40) };

const CREATED_MS = Date.parse('2026-03-01T12:00:00.000Z');
const CREATED_SECONDS = CREATED_MS / 1000;

function group(source: typeof A, target: typeof A, slots: string): PlanGroup {
  return {
    source: source.address,
    target: target.address,
    sourceId: source.id,
    targetId: target.id,
    slots,
    slotCount: 0,
  };
}

/** A (0-99, 200) -> C, B (5000-5099) -> C. */
const PLAN = [group(A, C, '0-99,200'), group(B, C, '5000-5099')];

let taskCounter = 0;
/**
 * A task as a source lists it, built through the reply's parser (CLUSTER GETSLOTMIGRATIONS' fields),
 * so the outcome follows from the state as it does for a real server.
 */
function task(
  overrides: Partial<Omit<ServerMigration, 'outcome'>> & Pick<ServerMigration, 'ranges'>,
): ServerMigration {
  const fields = {
    name: overrides.name ?? String(++taskCounter).padStart(40, '0'),
    operation: overrides.operation ?? 'export',
    slot_ranges: overrides.ranges.map((range) => `${range.start}-${range.end}`).join(' '),
    source_node: overrides.sourceNodeId ?? A.id,
    target_node: overrides.targetNodeId ?? C.id,
    state: overrides.state ?? 'snapshotting',
    message: overrides.message ?? '',
    create_time: overrides.createdAtSeconds ?? CREATED_SECONDS + 1,
    last_update_time: overrides.updatedAtSeconds ?? CREATED_SECONDS + 2,
  };
  return parseServerMigrations([Object.entries(fields).flat()])[0]!;
}

function select(listed: SourceTasks[], limit?: number) {
  return selectServerTasks(PLAN, listed, { createdAtMs: CREATED_MS, ...(limit ? { limit } : {}) });
}

describe('selectServerTasks', () => {
  it('shapes a task: source and target as host:port, slots as compact ranges, state, outcome, message', () => {
    const running = task({
      ranges: [
        { start: 0, end: 49 },
        { start: 50, end: 99 },
        { start: 200, end: 200 },
      ],
    });
    expect(select([{ source: A.address, tasks: [running] }])).toEqual([
      {
        name: running.name,
        source: A.address,
        target: C.address,
        slots: '0-99,200',
        state: 'snapshotting',
        outcome: 'in-progress',
        message: '',
      },
    ]);
  });

  it.each<[string, Parameters<typeof task>[0], boolean]>([
    ['an export of some of its slots', { ranges: [{ start: 90, end: 150 }] }, true],
    ['an export of none of its slots', { ranges: [{ start: 100, end: 199 }] }, false],
    ["an export of the other source's slots", { ranges: [{ start: 5000, end: 5000 }] }, false],
    ['an import of its slots', { ranges: [{ start: 0, end: 9 }], operation: 'import' }, false],
    [
      'an export towards a node the plan does not name (a promoted replica): shown, target as node id',
      { ranges: [{ start: 0, end: 9 }], targetNodeId: D.id },
      true,
    ],
    [
      'a task in progress created long before the migration (started by hand)',
      { ranges: [{ start: 0, end: 9 }], createdAtSeconds: 0, updatedAtSeconds: 0 },
      true,
    ],
    [
      'a task that ended long before the migration was created',
      { ranges: [{ start: 0, end: 9 }], state: 'success', updatedAtSeconds: CREATED_SECONDS - 3600 },
      false,
    ],
    [
      "a task that ended within the clock slack before it (a node's clock behind the API's)",
      {
        ranges: [{ start: 0, end: 9 }],
        state: 'failed',
        updatedAtSeconds: CREATED_SECONDS - CLOCK_SLACK_SECONDS + 1,
      },
      true,
    ],
  ])('source A lists %s', (_, overrides, shown) => {
    const listed = task(overrides);
    const selected = select([{ source: A.address, tasks: [listed] }]);
    expect(selected.map((view) => view.name)).toEqual(shown ? [listed.name] : []);
    if (shown && overrides.targetNodeId === D.id) expect(selected[0]!.target).toBe(D.id);
  });

  it('reads a source only for the slots the plan moves off that source', () => {
    // B's list holding A's slots: the plan moves 0-99 off A, not off B.
    const stray = task({ ranges: [{ start: 0, end: 9 }], sourceNodeId: B.id });
    expect(select([{ source: B.address, tasks: [stray] }])).toEqual([]);
    expect(select([{ source: D.address, tasks: [task({ ranges: [{ start: 0, end: 9 }] })] }])).toEqual([]);
  });

  it('in progress first, oldest first; then ended, newest first; at most the limit', () => {
    const endedOld = task({
      ranges: [{ start: 0, end: 9 }],
      state: 'cancelled',
      updatedAtSeconds: CREATED_SECONDS + 5,
    });
    const endedNew = task({
      ranges: [{ start: 10, end: 19 }],
      state: 'failed',
      message: 'Unable to connect to target node',
      updatedAtSeconds: CREATED_SECONDS + 9,
    });
    const runningNew = task({
      ranges: [{ start: 20, end: 29 }],
      state: 'replicating',
      createdAtSeconds: CREATED_SECONDS + 8,
    });
    const runningOld = task({
      ranges: [{ start: 5000, end: 5099 }],
      sourceNodeId: B.id,
      state: 'waiting-to-pause',
      createdAtSeconds: CREATED_SECONDS + 3,
    });
    const listed = [
      { source: A.address, tasks: [endedOld, runningNew, endedNew] },
      { source: B.address, tasks: [runningOld] },
    ];
    const order = select(listed).map((view) => [view.source, view.state, view.message]);
    expect(order).toEqual([
      [B.address, 'waiting-to-pause', ''],
      [A.address, 'replicating', ''],
      [A.address, 'failed', 'Unable to connect to target node'],
      [A.address, 'cancelled', ''],
    ]);
    expect(select(listed, 3).map((view) => view.state)).toEqual([
      'waiting-to-pause',
      'replicating',
      'failed',
    ]);
  });

  it('shows at most 20 by default', () => {
    const many = Array.from({ length: 30 }, (_, index) => task({ ranges: [{ start: index, end: index }] }));
    expect(select([{ source: A.address, tasks: many }])).toHaveLength(20);
  });
});

describe('serverTasks', () => {
  let recordCounter = 0;
  function record(overrides: Partial<MigrationRecord> = {}) {
    return {
      id: `m-${++recordCounter}`,
      cluster: 'default',
      engine: 'atomic',
      state: 'running',
      plan: PLAN,
      createdAt: new Date(CREATED_MS).toISOString(),
      ...overrides,
    } as const satisfies Partial<MigrationRecord>;
  }

  /** An adapter whose serverMigrations answers from `lists` by host:port, or throws for `down`. */
  function fakeCluster(lists: Record<string, ServerMigration[] | undefined>, down: string[] = []) {
    const reads: string[] = [];
    const adapter = {
      async serverMigrations(node: NodeAddress) {
        const address = `${node.host}:${node.port}`;
        reads.push(address);
        if (down.includes(address)) throw new Error('connect ECONNREFUSED');
        return lists[address];
      },
    };
    return {
      deps: { adapterFor: (cluster: string) => (cluster === 'default' ? adapter : undefined) },
      reads,
    };
  }

  it('reads each source once, and shows what they list', async () => {
    const running = task({ ranges: [{ start: 0, end: 99 }] });
    const { deps, reads } = fakeCluster({ [A.address]: [running], [B.address]: [] });
    const tasks = await serverTasks(deps, record(), CREATED_MS + 5_000);
    expect(tasks?.map((view) => view.name)).toEqual([running.name]);
    expect(reads.sort()).toEqual([A.address, B.address]);
  });

  it.each([
    ['the keys engine', { engine: 'keys' as const }],
    ['an atomic migration that has ended', { state: 'done' as const }],
  ])('%s: [] without a read', async (_, overrides) => {
    const { deps, reads } = fakeCluster({ [A.address]: [task({ ranges: [{ start: 0, end: 0 }] })] });
    expect(await serverTasks(deps, record(overrides))).toEqual([]);
    expect(reads).toEqual([]);
  });

  it('reuses a read for a second per migration, then reads again', async () => {
    const { deps, reads } = fakeCluster({ [A.address]: [], [B.address]: [] });
    const polled = record();
    const nowMs = CREATED_MS + 10_000;
    await serverTasks(deps, polled, nowMs);
    await serverTasks(deps, polled, nowMs + SERVER_TASKS_CACHE_MS - 1);
    expect(reads).toHaveLength(2);
    await serverTasks(deps, record(), nowMs + 1);
    expect(reads).toHaveLength(4);
    await serverTasks(deps, polled, nowMs + SERVER_TASKS_CACHE_MS);
    expect(reads).toHaveLength(6);
  });

  it('null, not an error, when a source does not answer or the cluster is unknown', async () => {
    const { deps } = fakeCluster({ [A.address]: [] }, [B.address]);
    expect(await serverTasks(deps, record())).toBeNull();
    expect(await serverTasks(deps, record({ cluster: 'elsewhere' }))).toBeNull();
  });

  it('a source without atomic slot migration lists nothing', async () => {
    const { deps } = fakeCluster({ [A.address]: undefined, [B.address]: undefined });
    expect(await serverTasks(deps, record())).toEqual([]);
  });
});
