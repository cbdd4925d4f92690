/**
 * The operator CLI (`slotfleet rebalance|reshard|drain|status|cancel ...`) against a running API:
 * the dry-run table, --json that parses, --wait exit codes for success and failure, refusals.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { seedDataset } from '../../src/sandbox/index.js';
import { runSlotfleet, type SlotfleetRun } from './support/run-slotfleet.js';
import { type Stack, startStack } from './support/stack.js';

describe('operator CLI against a running API', () => {
  let stack: Stack;
  let apiUrl: string;

  beforeAll(async () => {
    stack = await startStack({ workers: 1, env: { SLOTFLEET_WORKER_CONCURRENCY: '16' } });
    await seedDataset(stack.cluster.seedUrl, { keys: 5_000, types: 'string' });
    apiUrl = await stack.api.app.listen({ host: '127.0.0.1', port: 0 });
  });

  afterAll(async () => {
    await stack?.stop();
  });

  function cli(args: string[], timeoutMs = 120_000): Promise<SlotfleetRun> {
    return runSlotfleet(
      args,
      { ...process.env, SLOTFLEET_API_URL: apiUrl, SLOTFLEET_LOG_LEVEL: 'warn' },
      timeoutMs,
    );
  }

  it('prints a dry-run plan as a table and enqueues nothing', async () => {
    const added = await stack.cluster.addEmptyMaster();
    const run = await cli(['rebalance', '--use-empty-masters', '--dry-run']);
    expect(run.code, run.stderr).toBe(0);
    const lines = run.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^source\s+target\s+slots\s+keys$/);
    expect(lines.slice(1, -1).every((line) => line.includes(`127.0.0.1:${added.process.port}`))).toBe(true);
    expect(lines.at(-1)).toMatch(/^\d+ slots, \d+ keys \(dry run: nothing enqueued\)$/);
    expect(await stack.jobCounts()).toEqual({ migrate: 0, finalize: 0 });
  });

  it('--json prints JSON that parses', async () => {
    const run = await cli(['rebalance', '--use-empty-masters', '--dry-run', '--json']);
    expect(run.code).toBe(0);
    const plan = JSON.parse(run.stdout);
    expect(plan).toMatchObject({ dryRun: true, cluster: 'default' });
    expect(plan.slots).toBeGreaterThan(4000);
  });

  it('--wait exits 0 when the migration is done', async () => {
    const masters = (await stack.cluster.masters()).filter((master) => master.slots > 0);
    const run = await cli([
      'reshard',
      '--from',
      masters[0]!.id,
      '--to',
      `127.0.0.1:${masters[1]!.port}`,
      '--slots',
      '30',
      '--wait',
      '--json',
    ]);
    expect(run.code, run.stderr).toBe(0);
    expect(JSON.parse(run.stdout)).toMatchObject({ state: 'done', slotsTotal: 30 });
  });

  it('--wait exits 1 when the migration does not end done', async () => {
    const masters = (await stack.cluster.masters()).filter((master) => master.slots > 0);
    const waiting = cli([
      'reshard',
      '--from',
      masters[1]!.id,
      '--to',
      masters[2]!.id,
      '--slots',
      '2000',
      '--wait',
    ]);
    let id: string | undefined;
    for (let i = 0; i < 100 && !id; i++) {
      const status = await cli(['status', '--json']);
      id = JSON.parse(status.stdout).items.find((item: { state: string }) => item.state !== 'done')?.id;
      if (!id) await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect(id).toBeDefined();
    const cancelled = await cli(['cancel', id!]);
    expect(cancelled.code).toBe(0);
    const run = await waiting;
    expect(run.code).toBe(1);
    expect(run.stdout).toMatch(/cancelled/);
  });

  it('a refused request exits 3 with the API message', async () => {
    const run = await cli(['drain', '127.0.0.1:1']);
    expect(run.code).toBe(3);
    expect(run.stderr).toMatch(/the API refused \(422 UNKNOWN_NODE\)/);
  });
});
