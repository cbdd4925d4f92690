/**
 * Plans an operator and an autoscaler post, on a real 3-master x 1-replica cluster: rebalance onto a
 * new empty master, pause/resume/cancel while it runs, Idempotency-Key, overlap refused with 409,
 * fix of a slot left open by an interrupted move, drain a master to zero, auth, and OpenAPI.
 */
import { Queue } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DatasetManifest, seedDataset, verifyDataset } from '../../src/sandbox/index.js';
import { ConnectionRole, controlConnectionOptions } from '../../src/shared/queue/connections.js';
import { migrateJobId, QueueName } from '../../src/shared/queue/names.js';
import { allViews, type Stack, startStack, waitForMigration } from './support/stack.js';

const TOKEN = 'test-token-0123456789abcdef';
const auth = { authorization: `Bearer ${TOKEN}` };

describe('plans, control and safety of the API', () => {
  let stack: Stack;
  let manifest: DatasetManifest;

  beforeAll(async () => {
    stack = await startStack({
      workers: 1,
      env: { SLOTFLEET_API_TOKEN: TOKEN, SLOTFLEET_WORKER_CONCURRENCY: '32' },
    });
    manifest = await seedDataset(stack.cluster.seedUrl, { keys: 20_000, types: 'mixed', ttlFraction: 0.2 });
  });

  afterAll(async () => {
    await stack?.stop();
  });

  const inject = (
    method: 'GET' | 'POST',
    url: string,
    payload?: object,
    headers: Record<string, string> = {},
  ) =>
    stack.api.app.inject({ method, url, headers: { ...auth, ...headers }, ...(payload ? { payload } : {}) });

  async function expectIntactAndClosed(): Promise<void> {
    const result = await verifyDataset(stack.cluster.seedUrl, manifest);
    expect(result).toMatchObject({ missingCount: 0, wrongValueCount: 0, wrongTtlCount: 0 });
    await stack.cluster.waitForConsensus();
    for (const view of await allViews(stack.cluster)) {
      expect([...view.importing, ...view.migrating], `${view.myself.port} has open slots`).toEqual([]);
    }
  }

  it('refuses /v1 without the token, and keeps health, readiness and docs open', async () => {
    const anonymous = await stack.api.app.inject({ method: 'GET', url: '/v1/clusters' });
    expect(anonymous.statusCode).toBe(401);
    expect(anonymous.json().message).toMatch(/Bearer/);
    const wrong = await stack.api.app.inject({
      method: 'POST',
      url: '/v1/clusters/default/rebalance',
      headers: { authorization: 'Bearer nope' },
      payload: { dryRun: true },
    });
    expect(wrong.statusCode).toBe(401);
    expect((await inject('GET', '/v1/clusters')).json()).toEqual([
      { name: 'default', seed: `127.0.0.1:${stack.config.clusters.default!.port}` },
    ]);
    expect((await stack.api.app.inject({ method: 'GET', url: '/healthz' })).statusCode).toBe(200);
    // The queue UI is behind the same token.
    expect((await stack.api.app.inject({ method: 'GET', url: '/queues' })).statusCode).toBe(401);
    const board = await inject('GET', '/queues');
    expect(board.statusCode).toBe(200);
    expect(board.body).toMatch(/bull-board|Bull Dashboard/i);
    const queueList = await inject('GET', '/queues/api/queues');
    expect(queueList.statusCode, queueList.body).toBe(200);
    expect(
      queueList
        .json()
        .queues.map((queue: { name: string }) => queue.name)
        .sort(),
    ).toEqual(['finalize-slot', 'migrate-slot']);
    const ready = await stack.api.app.inject({ method: 'GET', url: '/readyz' });
    expect(ready.json()).toEqual({ status: 'ready', checks: { control: 'ok', 'cluster:default': 'ok' } });
  });

  it('documents every route in the OpenAPI document', async () => {
    const response = await stack.api.app.inject({ method: 'GET', url: '/docs/json' });
    expect(response.statusCode).toBe(200);
    const paths = response.json().paths as Record<string, Record<string, unknown>>;
    const routes = Object.entries(paths).flatMap(([path, methods]) =>
      Object.keys(methods).map((method) => `${method.toUpperCase()} ${path}`),
    );
    expect(routes).toEqual(
      expect.arrayContaining([
        'GET /v1/clusters',
        'GET /v1/clusters/{cluster}',
        'POST /v1/clusters/{cluster}/migrations',
        'POST /v1/clusters/{cluster}/rebalance',
        'POST /v1/clusters/{cluster}/reshard',
        'POST /v1/clusters/{cluster}/drain',
        'POST /v1/clusters/{cluster}/fix',
        'GET /v1/migrations',
        'GET /v1/migrations/{id}',
        'POST /v1/migrations/{id}/pause',
        'POST /v1/migrations/{id}/resume',
        'POST /v1/migrations/{id}/cancel',
        'GET /healthz',
        'GET /readyz',
      ]),
    );
  });

  it('rebalances onto a new empty master, paused and resumed on the way', async () => {
    const added = await stack.cluster.addEmptyMaster();
    // The new master weighs 0.25 (the others 1): about 1260 slots move rather than 4096, still far
    // more than the requests below take, and every slot runs the whole protocol.
    const rebalance = { useEmptyMasters: true, weights: { [added.id]: 0.25 } };
    const preview = await inject('POST', '/v1/clusters/default/rebalance', { ...rebalance, dryRun: true });
    expect(preview.statusCode, preview.body).toBe(200);
    const plan = preview.json();
    // 16384 / 3.25 * 0.25, give or take redis-cli's rounding.
    expect(plan.slots).toBeGreaterThanOrEqual(1255);
    expect(plan.slots).toBeLessThanOrEqual(1265);
    expect(plan.plan.every((group: { targetId: string }) => group.targetId === added.id)).toBe(true);
    expect(await stack.jobCounts()).toEqual({ migrate: 0, finalize: 0 });

    const created = await inject('POST', '/v1/clusters/default/rebalance', rebalance, {
      'idempotency-key': 'scale-out-1',
    });
    expect(created.statusCode, created.body).toBe(202);
    const id = created.json().id;

    // Same key, same body: the same migration, nothing new enqueued.
    const jobsBefore = await stack.jobCounts();
    const again = await inject('POST', '/v1/clusters/default/rebalance', rebalance, {
      'idempotency-key': 'scale-out-1',
    });
    expect(again.statusCode).toBe(202);
    expect(again.json()).toMatchObject({ id, reused: true });
    expect((await stack.jobCounts()).migrate).toBeLessThanOrEqual(jobsBefore.migrate ?? 0);
    // Same key, another body: refused.
    const other = await inject(
      'POST',
      '/v1/clusters/default/rebalance',
      { threshold: 5 },
      { 'idempotency-key': 'scale-out-1' },
    );
    expect(other.statusCode).toBe(422);
    expect(other.json().message).toMatch(/Idempotency-Key "scale-out-1" was used with a different request/);

    // Overlap: the plan's last slot belongs to the running migration (1260 slots take far longer
    // than this request).
    const lastGroup = plan.plan[plan.plan.length - 1];
    const lastSlot = lastGroup.slots.split(/[-,]/).pop();
    const overlap = await inject('POST', '/v1/clusters/default/migrations', {
      moves: [{ slots: lastSlot, target: lastGroup.sourceId }],
    });
    expect(overlap.statusCode, overlap.body).toBe(409);
    expect(overlap.json().message).toBe(
      `slots ${lastSlot} belong to active migration ${id}: wait for it to end, or cancel it`,
    );

    const paused = await inject('POST', `/v1/migrations/${id}/pause`);
    expect(paused.statusCode).toBe(200);
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    const heldA = (await inject('GET', `/v1/migrations/${id}`)).json();
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    const heldB = (await inject('GET', `/v1/migrations/${id}`)).json();
    expect(heldB.state).toBe('paused');
    expect(heldB.slots.done).toBe(heldA.slots.done);
    expect(heldB.slots.done).toBeLessThan(heldB.slotsTotal);

    expect((await inject('POST', `/v1/migrations/${id}/resume`)).statusCode).toBe(200);
    const final = await waitForMigration(stack, id, 180_000, auth);
    // The engine is chosen when the migration is created and recorded with it.
    expect(final).toMatchObject({ state: 'done', errors: [], engine: 'keys' });
    const detail = (await inject('GET', '/v1/clusters/default')).json();
    const newMaster = detail.masters.find((master: { id: string }) => master.id === added.id);
    expect(newMaster.slots).toBe(plan.slots);
    await expectIntactAndClosed();

    const list = (await inject('GET', '/v1/migrations?limit=5')).json();
    expect(list.items[0].id).toBe(id);
  }, 240_000);

  it('cancels a running migration: started slots finish, the rest are dropped, nothing is left open', async () => {
    const masters = (await stack.cluster.masters()).sort((a, b) => b.slots - a.slots);
    const created = await inject('POST', '/v1/clusters/default/reshard', {
      from: [masters[0]!.id],
      to: masters[masters.length - 1]!.id,
      slots: 1500,
    });
    expect(created.statusCode, created.body).toBe(202);
    const id = created.json().id;
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect((await inject('POST', `/v1/migrations/${id}/cancel`)).statusCode).toBe(200);
    const final = await waitForMigration(stack, id, 180_000, auth);
    expect(final.state).toBe('cancelled');
    expect(final.slots.cancelled).toBeGreaterThan(0);
    expect((final.slots.done ?? 0) + (final.slots.cancelled ?? 0)).toBe(1500);
    await expectIntactAndClosed();
  }, 240_000);

  it('fixes a slot left MIGRATING/IMPORTING by an interrupted move', async () => {
    const masters = await stack.cluster.masters();
    const source = masters.find((master) => master.slots > 0)!;
    const target = masters.find((master) => master.id !== source.id && master.slots > 0)!;
    const { slotsOf } = await import('./support/slots.js');
    const client = stack.cluster.process(source.id).client();
    let slot = -1;
    for (const candidate of await slotsOf(stack.cluster, source.id)) {
      if (Number(await client.call('CLUSTER', 'COUNTKEYSINSLOT', candidate)) >= 2) {
        slot = candidate;
        break;
      }
    }
    expect(slot).toBeGreaterThanOrEqual(0);
    // What redis-cli's clusterManagerMoveSlot leaves when it dies after its first MIGRATE.
    expect(await stack.cluster.interruptMove(slot, source.id, target.id, 1)).toBe(1);
    client.disconnect();

    const refused = await inject('POST', '/v1/clusters/default/rebalance', { dryRun: true });
    expect(refused.statusCode).toBe(409);
    expect(refused.json().message).toMatch(new RegExp(`${slot}.*open|open.*${slot}`));

    const preview = await inject('POST', '/v1/clusters/default/fix', { dryRun: true });
    expect(preview.statusCode, preview.body).toBe(200);
    expect(preview.json().slots).toBe(1);
    // replace: true reaches the repair job (a key the owner holds with another value is overwritten).
    const fix = await inject('POST', '/v1/clusters/default/fix', { replace: true });
    expect(fix.statusCode, fix.body).toBe(202);
    const final = await waitForMigration(stack, fix.json().id, 60_000, auth);
    expect(final).toMatchObject({ state: 'done', errors: [] });
    const queue = new Queue(QueueName.MigrateSlot, {
      connection: controlConnectionOptions(stack.config.control, ConnectionRole.Worker),
      prefix: stack.config.queuePrefix,
    });
    const job = await queue.getJob(migrateJobId(fix.json().id, slot));
    await queue.close();
    expect(job?.data).toMatchObject({ slot, replace: true, engine: 'keys' });
    await expectIntactAndClosed();
    expect((await slotsOf(stack.cluster, target.id)).includes(slot)).toBe(true);
  });

  it('drains a master to zero slots', async () => {
    // The master with the fewest slots (the one added above, or the reshard's target): the drain
    // does for a thousand slots what it does for five thousand.
    const masters = (await stack.cluster.masters()).filter((master) => master.slots > 0);
    const victim = masters.sort((a, b) => a.slots - b.slots)[0]!;
    const created = await inject('POST', '/v1/clusters/default/drain', { node: `127.0.0.1:${victim.port}` });
    expect(created.statusCode, created.body).toBe(202);
    const final = await waitForMigration(stack, created.json().id, 180_000, auth);
    expect(final).toMatchObject({ state: 'done', errors: [] });
    const { slotsOf } = await import('./support/slots.js');
    expect(await slotsOf(stack.cluster, victim.id)).toEqual([]);
    await expectIntactAndClosed();
  }, 240_000);
});
