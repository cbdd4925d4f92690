import { dirname, join } from 'node:path';
import { Cluster } from 'ioredis';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import {
  countKeys,
  type DatasetManifest,
  datasetKey,
  requireRedisBinaries,
  SandboxCluster,
  SLOT_COUNT,
  seedDataset,
  startControlRedis,
  verifyDataset,
} from '../../src/sandbox/index.js';
import { isAlive } from './support/processes.js';

const HOOK_TIMEOUT_MS = 60_000;

describe('server binaries', () => {
  it("finds this project's server (Redis 7.0 here) and its CLI", async () => {
    const binaries = await requireRedisBinaries();
    expect(binaries).toMatchObject({ name: 'redis', version: expect.stringMatching(/^7\./) });
    expect(binaries.serverPath).toMatch(/redis-server$/);
    expect(binaries.cliPath).toMatch(/redis-cli$/);
  });

  it('finds valkey-server by name, and valkey-cli next to it', async () => {
    const binaries = await requireRedisBinaries({ serverPath: 'valkey-server' });
    expect(binaries.name).toBe('valkey');
    expect(binaries.serverPath).toMatch(/^\/.*\/valkey-server$/);
    expect(binaries.cliPath).toBe(join(dirname(binaries.serverPath), 'valkey-cli'));
  });

  it('takes a server by path, its CLI the sibling in the same directory', async () => {
    const { serverPath } = inject('sandboxServers').valkey9;
    const binaries = await requireRedisBinaries({ serverPath });
    expect(binaries).toMatchObject({ name: 'valkey', version: expect.stringMatching(/^9\./), serverPath });
    expect(binaries.cliPath).toBe(join(dirname(serverPath), 'valkey-cli'));
  });

  it('fails with the install command when the server is missing', async () => {
    await expect(requireRedisBinaries({ serverPath: '/nonexistent/redis-server' })).rejects.toThrow(
      /apt-get install redis-server/,
    );
    const valkey = requireRedisBinaries({ serverPath: '/nonexistent/valkey-server' });
    await expect(valkey).rejects.toThrow(/apt-get install -t bookworm-backports valkey-server valkey-tools/);
    await expect(valkey).rejects.toThrow(/\.ci\/valkey9/);
  });

  it('refuses a binary that is neither Redis nor Valkey', async () => {
    await expect(requireRedisBinaries({ serverPath: '/bin/echo' })).rejects.toThrow(/not Redis or Valkey/);
  });
});

describe('sandbox cluster', () => {
  let cluster: SandboxCluster;
  let manifest: DatasetManifest;

  beforeAll(async () => {
    cluster = await SandboxCluster.start({ masters: 3, replicasPerMaster: 1 });
    manifest = await seedDataset(cluster.seedUrl, { keys: 5000, types: 'mixed', ttlFraction: 0.3, seed: 7 });
  }, HOOK_TIMEOUT_MS);

  afterAll(async () => {
    if (cluster === undefined) return;
    const startedPids = cluster.startedPids();
    await cluster.stop();
    // A second stop must be a no-op: test teardown paths often overlap.
    await cluster.stop();
    expect(startedPids.length).toBeGreaterThanOrEqual(7);
    expect(startedPids.filter(isAlive)).toEqual([]);
  }, HOOK_TIMEOUT_MS);

  it('starts 3 masters with one replica each, covering every slot', async () => {
    const topology = await cluster.topology();
    const masters = topology.filter((node) => node.role === 'master');
    const replicas = topology.filter((node) => node.role === 'replica');
    expect(masters).toHaveLength(3);
    expect(replicas).toHaveLength(3);
    expect(masters.reduce((total, node) => total + node.slots, 0)).toBe(SLOT_COUNT);
    for (const master of masters) {
      expect(await cluster.replicasOf(master.id)).toHaveLength(1);
    }
    for (const node of topology) {
      expect(node.host).toBe('127.0.0.1');
      expect(cluster.process(node.id).port).toBe(node.port);
    }
    expect(cluster.seedUrl).toMatch(/^redis:\/\/127\.0\.0\.1:\d+$/);
    // The split `redis-cli --cluster create` makes: planners-vs-redis-cli compares against it.
    const seed = cluster.process(masters[0]!.id).client();
    try {
      const ranges = ((await seed.call('CLUSTER', 'SLOTS')) as [number, number][])
        .map(([first, last]) => `${first}-${last}`)
        .sort((left, right) => Number.parseInt(left, 10) - Number.parseInt(right, 10));
      expect(ranges).toEqual(['0-5460', '5461-10922', '10923-16383']);
    } finally {
      seed.disconnect();
    }
  });

  it('seeds a mixed dataset and verifies every key, value and TTL', async () => {
    expect(manifest.keysWithTtl).toBeGreaterThan(1000);
    expect(manifest.keysWithTtl).toBeLessThan(2000);
    expect(await countKeys(cluster.seedUrl)).toBe(5000);
    const result = await verifyDataset(cluster.seedUrl, manifest);
    expect(result).toMatchObject({ checked: 5000, missingCount: 0, wrongValueCount: 0, wrongTtlCount: 0 });
  });

  it('reports a deleted key as missing and a changed value as wrong', async () => {
    // Index 6 is a string, index 7 a hash (mixed types cycle in a fixed order).
    const deletedKey = datasetKey(manifest, 6);
    const changedKey = datasetKey(manifest, 7);
    // Through a Cluster client: a direct connection to the wrong node would get MOVED.
    const writer = new Cluster(cluster.startupNodes());
    try {
      await writer.del(deletedKey);
      await writer.hset(changedKey, 'f0', 'tampered');
    } finally {
      await writer.quit();
    }
    const result = await verifyDataset(cluster.seedUrl, manifest);
    expect(result.missing).toEqual([deletedKey]);
    expect(result.wrongValue).toEqual([changedKey]);
    expect(result.missingCount).toBe(1);
    expect(result.wrongValueCount).toBe(1);
    expect(result.wrongTtlCount).toBe(0);
  });

  it('adds an empty master that every node knows', async () => {
    const added = await cluster.addEmptyMaster();
    const topology = await cluster.topology();
    const entry = topology.find((node) => node.id === added.id);
    expect(entry).toMatchObject({ role: 'master', slots: 0, port: added.process.port });
    expect(topology).toHaveLength(7);
  });

  it('fails a master over to its replica and the roles swap', async () => {
    // The empty master added above may have the lowest port: pick one that owns slots.
    const oldMaster = (await cluster.masters()).find((node) => node.slots > 0)!;
    const [replica] = await cluster.replicasOf(oldMaster.id);
    const newMasterId = await cluster.failover(oldMaster.id);
    expect(newMasterId).toBe(replica!.id);
    const topology = await cluster.topology();
    expect(topology.find((node) => node.id === newMasterId)).toMatchObject({
      role: 'master',
      slots: oldMaster.slots,
    });
    expect(topology.find((node) => node.id === oldMaster.id)).toMatchObject({
      role: 'replica',
      masterId: newMasterId,
    });
    const result = await verifyDataset(cluster.seedUrl, manifest);
    expect(result.checked).toBe(5000);
    expect(result.missingCount).toBe(1);
  });

  it('pauses and resumes a node', async () => {
    const [, , replica] = (await cluster.topology()).filter((node) => node.role === 'replica');
    const paused = cluster.process(replica!.id);
    cluster.pauseNode(replica!.id);
    expect(paused.isPaused).toBe(true);
    expect(paused.isRunning).toBe(true);
    const client = paused.client();
    client.on('error', () => {});
    try {
      await expect(
        Promise.race([
          client.ping(),
          new Promise((_, reject) => setTimeout(() => reject(new Error('no answer')), 500)),
        ]),
      ).rejects.toThrow('no answer');
      cluster.resumeNode(replica!.id);
      expect(paused.isPaused).toBe(false);
      await expect(client.ping()).resolves.toBe('PONG');
    } finally {
      client.disconnect();
    }
    await cluster.waitForConsensus();
  });
});

describe('control redis', () => {
  it(
    'keeps data across a kill and restart thanks to AOF',
    async () => {
      const control = await startControlRedis({ password: 's3cret/pw' });
      const pids = [control.pid];
      try {
        expect(control.url).toBe(`redis://:s3cret%2Fpw@127.0.0.1:${control.port}`);
        const before = control.client();
        await before.set('job', 'queued');
        before.disconnect();
        await control.kill();
        expect(control.isRunning).toBe(false);
        await control.restart();
        pids.push(control.pid);
        const after = control.client();
        expect(await after.get('job')).toBe('queued');
        expect(await after.config('GET', 'appendonly')).toEqual(['appendonly', 'yes']);
        after.disconnect();
      } finally {
        await control.stop();
        await control.stop();
        await control.removeDir();
      }
      expect(pids.filter(isAlive)).toEqual([]);
    },
    HOOK_TIMEOUT_MS,
  );
});
