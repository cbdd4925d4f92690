/**
 * Clusters that require credentials. One whose nodes have `requirepass` and `masterauth` (and a
 * control Redis with its own password); one with ACL users and the `default` user off, where
 * slotfleet logs in as a user that has exactly SLOTFLEET_ACL_RULES (on Valkey 9 with
 * SLOTFLEET_ATOMIC_ACL_RULES, as docs/operations.md says), so MIGRATE can only reach the
 * target with AUTH2 as that user (and the control Redis takes a user too). On both, a rebalance onto
 * a new empty master completes through the API and a worker, every key keeps its value and TTL, no
 * slot stays open and the replicas keep up with their masters.
 */
import { readFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type DatasetManifest,
  type RedisProcess,
  redisUrl,
  SANDBOX_HOST,
  type SandboxCluster,
  SLOTFLEET_ACL_RULES,
  SLOTFLEET_ATOMIC_ACL_RULES,
  seedDataset,
  verifyDataset,
  withAdminConnection,
} from '../../src/sandbox/index.js';
import { projectServer } from './support/servers.js';
import { expectNoOpenSlots, type Stack, startStack, waitForMigration } from './support/stack.js';

const KEYS = 10_000;

/**
 * Adds an empty master, rebalances onto it through the API, and checks what a user would. The new
 * master weighs 0.25 (the others 1), so about 1260 slots move rather than 4096: every slot runs the
 * whole protocol, and the test stays fast on a busy machine.
 */
async function rebalanceOntoNewMaster(stack: Stack, manifest: DatasetManifest): Promise<void> {
  const added = await stack.cluster.addEmptyMaster();
  const created = await stack.api.app.inject({
    method: 'POST',
    url: '/v1/clusters/default/rebalance',
    payload: { useEmptyMasters: true, weights: { [added.id]: 0.25 } },
  });
  expect(created.statusCode, created.body).toBe(202);
  const final = await waitForMigration(stack, created.json().id, 180_000);
  expect(final).toMatchObject({ state: 'done', errors: [] });
  expect(final.keysMoved).toBeGreaterThan(0);

  const detail = await stack.api.app.inject({ method: 'GET', url: '/v1/clusters/default' });
  expect(detail.statusCode, detail.body).toBe(200);
  const newMaster = detail.json().masters.find((master: { id: string }) => master.id === added.id);
  // 16384 / 3.25 * 0.25, give or take redis-cli's rounding.
  expect(newMaster.slots).toBeGreaterThanOrEqual(1255);
  expect(newMaster.slots).toBeLessThanOrEqual(1265);

  const verification = await verifyDataset(stack.cluster.seedUrl, manifest);
  expect(verification).toMatchObject({ missingCount: 0, wrongValueCount: 0, wrongTtlCount: 0 });
  await expectNoOpenSlots(stack.cluster);
  await expectReplicasInSync(stack.cluster);
}

/** Every replica's link is up and it holds as many keys as its master (replication authenticated). */
async function expectReplicasInSync(cluster: SandboxCluster): Promise<void> {
  const topology = await cluster.topology();
  const replicas = topology.filter((node) => node.role === 'replica');
  expect(replicas.length).toBeGreaterThan(0);
  for (const replica of replicas) {
    const master = cluster.process(replica.masterId!);
    await expect
      .poll(
        async () => {
          const [link, replicaKeys] = await withAdminConnection(
            cluster.process(replica.id),
            async (connection) => [
              /master_link_status:(\w+)/.exec(await connection.info('replication'))?.[1],
              await connection.dbsize(),
            ],
          );
          const masterKeys = await withAdminConnection(master, (connection) => connection.dbsize());
          return { link, sameKeys: replicaKeys === masterKeys };
        },
        { timeout: 20_000, interval: 200 },
      )
      .toEqual({ link: 'up', sameKeys: true });
  }
}

/** A connection to `node` as someone else than the sandbox's own user. */
function connectAs<T>(
  node: RedisProcess,
  credentials: { username?: string; password?: string },
  use: Parameters<typeof withAdminConnection<T>>[1],
): Promise<T> {
  return withAdminConnection(
    { port: node.port, username: credentials.username, password: credentials.password },
    use,
  );
}

describe('a cluster whose nodes require a password (requirepass + masterauth)', () => {
  // URL-reserved characters on purpose: they must survive encoding in the URLs and decoding in config.
  const clusterPassword = 'cluster-Pa55:w@rd/x%';
  const controlPassword = 'control-Pa55#word';
  let stack: Stack;
  let manifest: DatasetManifest;

  beforeAll(async () => {
    stack = await startStack({
      workers: 1,
      clusterAccess: { password: clusterPassword },
      controlAccess: { password: controlPassword },
      env: { SLOTFLEET_WORKER_CONCURRENCY: '32' },
    });
    manifest = await seedDataset(stack.cluster.seedUrl, { keys: KEYS, types: 'mixed', ttlFraction: 0.2 });
  });

  afterAll(async () => {
    await stack?.stop();
  });

  it('refuses clients without the password, on the cluster and on the control Redis', async () => {
    const node = stack.cluster.nodes[0]!;
    await expect(connectAs(node, {}, (connection) => connection.ping())).rejects.toThrow(/NOAUTH/);
    await expect(connectAs(stack.control, {}, (connection) => connection.ping())).rejects.toThrow(/NOAUTH/);
    expect(stack.config.clusters.default).toMatchObject({ password: clusterPassword });
    expect(stack.config.control).toMatchObject({ password: controlPassword });
    const ready = await stack.api.app.inject({ method: 'GET', url: '/readyz' });
    expect(ready.json()).toEqual({ status: 'ready', checks: { control: 'ok', 'cluster:default': 'ok' } });
  });

  it('rebalances onto a new empty master: MIGRATE ... AUTH, every key intact, nothing left open', async () => {
    await rebalanceOntoNewMaster(stack, manifest);
  }, 240_000);
});

/**
 * What docs/operations.md tells an operator to give slotfleet's user on this server: the atomic
 * engine's commands on Valkey 9 only (Redis 7.0 and Valkey 8 refuse their names in ACL SETUSER).
 */
function slotfleetAclRules(): string {
  const server = projectServer();
  const atomic = server.name === 'valkey' && Number(server.version.split('.')[0]) >= 9;
  return atomic ? `${SLOTFLEET_ACL_RULES} ${SLOTFLEET_ATOMIC_ACL_RULES}` : SLOTFLEET_ACL_RULES;
}

describe('an ACL cluster: default user off, slotfleet logs in as a user with SLOTFLEET_ACL_RULES (and SLOTFLEET_ATOMIC_ACL_RULES on Valkey 9)', () => {
  const admin = { username: 'sandbox-admin', password: 'admin-Pa55-word' };
  const slotfleetUser = { username: 'slotfleet', password: 'sf-Pa55:w@rd/y', rules: slotfleetAclRules() };
  const queuesUser = { username: 'queues', password: 'queues-Pa55-word' };
  let stack: Stack;
  let manifest: DatasetManifest;

  beforeAll(async () => {
    stack = await startStack({
      workers: 1,
      clusterAccess: { aclUser: admin, extraAclUsers: [slotfleetUser] },
      controlAccess: { aclUser: queuesUser },
      env: ({ cluster }) => ({
        SLOTFLEET_CLUSTER_URL: redisUrl(
          Number(new URL(cluster.seedUrl).port),
          slotfleetUser.password,
          SANDBOX_HOST,
          slotfleetUser.username,
        ),
        SLOTFLEET_WORKER_CONCURRENCY: '32',
      }),
    });
    manifest = await seedDataset(stack.cluster.seedUrl, { keys: KEYS, types: 'mixed', ttlFraction: 0.2 });
  });

  afterAll(async () => {
    await stack?.stop();
  });

  it('documents SLOTFLEET_ACL_RULES in docs/operations.md as they are', async () => {
    const operations = await readFile('docs/operations.md', 'utf8');
    const documented = /ACL SETUSER slotfleet on >pass ([^`]*)```/.exec(operations)?.[1];
    expect(documented?.split(/\s+/).filter(Boolean)).toEqual(SLOTFLEET_ACL_RULES.split(' '));
  });

  it('is configured as intended: default user off, slotfleet user unable to do more than its rules', async () => {
    expect(stack.config.clusters.default).toMatchObject({
      username: slotfleetUser.username,
      password: slotfleetUser.password,
    });
    expect(stack.config.control).toMatchObject(queuesUser);
    const node = stack.cluster.nodes[0]!;
    await expect(connectAs(node, {}, (connection) => connection.ping())).rejects.toThrow(/NOAUTH/);
    await expect(
      connectAs(node, {}, (connection) => connection.call('AUTH', 'default', admin.password)),
    ).rejects.toThrow(/WRONGPASS/);
    await expect(connectAs(stack.control, {}, (connection) => connection.ping())).rejects.toThrow(/NOAUTH/);
    // A user restricted to its rules: a read of a key or a FLUSHALL is refused.
    await expect(
      connectAs(node, slotfleetUser, (connection) => connection.call('GET', 'anything')),
    ).rejects.toThrow(/NOPERM/);
    await expect(connectAs(node, slotfleetUser, (connection) => connection.call('FLUSHALL'))).rejects.toThrow(
      /NOPERM/,
    );
    // Forget those refusals: the rebalance below must leave no ACL LOG entry of its own.
    await Promise.all(
      stack.cluster.nodes.map((process) =>
        withAdminConnection(process, (connection) => connection.call('ACL', 'LOG', 'RESET')),
      ),
    );
  });

  it('rebalances onto a new empty master: MIGRATE ... AUTH2 as the slotfleet user, every key intact', async () => {
    await rebalanceOntoNewMaster(stack, manifest);
    // The API's reads (status page, cluster detail, readiness, metrics) run under the same user.
    for (const url of ['/status.json', '/readyz', '/metrics', '/v1/clusters/default']) {
      const response = await stack.api.app.inject({ method: 'GET', url });
      expect(response.statusCode, `${url}: ${response.body}`).toBe(200);
    }

    const masters = await stack.cluster.masters();
    for (const node of stack.cluster.nodes) {
      // Any command slotfleet sent that SLOTFLEET_ACL_RULES does not allow is in the ACL LOG, even
      // the ones whose refusal ioredis ignores (CLIENT SETNAME).
      const entries = (await withAdminConnection(node, (connection) =>
        connection.call('ACL', 'LOG'),
      )) as unknown[][];
      const refused = entries
        .map((entry) => fieldsOf(entry))
        .filter((entry) => entry.username === slotfleetUser.username);
      expect(refused, `ACL LOG of ${node.port}`).toEqual([]);
    }
    for (const master of masters) {
      // Every master, the new one included, has slotfleet connections, all as the slotfleet user.
      const clients = String(
        await withAdminConnection(stack.cluster.process(master.id), (connection) =>
          connection.call('CLIENT', 'LIST'),
        ),
      )
        .trim()
        .split('\n')
        .filter((line) => / name=slotfleet /.test(line));
      expect(clients.length, `slotfleet connections on ${master.port}`).toBeGreaterThan(0);
      for (const line of clients) expect(line).toMatch(/ user=slotfleet /);
    }
  }, 240_000);
});

/** An ACL LOG entry ([field, value, field, value, ...]) as an object. */
function fieldsOf(entry: unknown[]): Record<string, unknown> {
  const fields: Record<string, unknown> = {};
  for (let index = 0; index + 1 < entry.length; index += 2) fields[String(entry[index])] = entry[index + 1];
  return fields;
}
