/**
 * The node-lease semaphore (src/shared/queue/node-leases.ts) against a real control Redis: many
 * clients, each on its own connection as worker processes would be, never hold more leases on a node
 * than its cap; both leases of a slot are taken together or not at all; a lease its holder stopped
 * renewing (a SIGKILLed worker) frees itself after the TTL, one still renewed does not; release is
 * idempotent and never frees another holder's lease.
 */
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startControlRedis } from '../../src/sandbox/index.js';
import type { RedisProcess } from '../../src/sandbox/redis-process.js';
import type { NodeRef } from '../../src/shared/domain/plan.js';
import { createLogger } from '../../src/shared/logger.js';
import { createMetrics } from '../../src/shared/metrics.js';
import {
  LeaseRole,
  type NodeCaps,
  NodeLeases,
  type NodeLeasesOptions,
} from '../../src/shared/queue/node-leases.js';

const node = (name: string, port: number): NodeRef => ({
  id: name.repeat(40).slice(0, 40),
  host: '10.0.0.1',
  port,
});
const SOURCE_A = node('a', 7000);
const SOURCE_B = node('b', 7001);
const TARGET = node('c', 7002);
const OTHER_TARGET = node('d', 7003);
const log = createLogger({ level: 'silent', name: 'test' });
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('node leases in the control Redis', () => {
  let control: RedisProcess;
  const clients: Redis[] = [];
  const members: NodeLeases[] = [];
  let prefixCounter = 0;

  beforeAll(async () => {
    control = await startControlRedis();
  });

  afterAll(async () => {
    await Promise.all(members.map((leases) => leases.close()));
    await Promise.all(clients.map((client) => client.quit()));
    const pid = control?.pid;
    await control?.stop();
    await control?.removeDir();
    if (pid !== undefined) expect(() => process.kill(pid, 0)).toThrow();
  });

  /** n NodeLeases on n connections sharing one fresh prefix, as n worker processes would. */
  function fleet(n: number, caps: NodeCaps, options: NodeLeasesOptions = {}): NodeLeases[] {
    const prefix = `leases-${++prefixCounter}`;
    return Array.from({ length: n }, () => {
      const client = new Redis({ host: control.host, port: control.port, maxRetriesPerRequest: null });
      clients.push(client);
      const leases = new NodeLeases(client, prefix, caps, options);
      members.push(leases);
      return leases;
    });
  }

  const request = (holder: string, source = SOURCE_A, target = TARGET) => ({
    cluster: 'default',
    source,
    target,
    holder,
  });

  it('never lets concurrent acquirers hold more than the cap on a node', async () => {
    const caps = { perSource: 3, perTarget: 5 };
    const members = fleet(12, caps);
    /** Leases held right now, per node, as the test itself sees them (granted and not yet released). */
    const live = new Map<string, number>();
    const peak = new Map<string, number>();
    const reported = { source: 0, target: 0 };
    const bump = (key: string, delta: number) => {
      const value = (live.get(key) ?? 0) + delta;
      live.set(key, value);
      peak.set(key, Math.max(peak.get(key) ?? 0, value));
    };
    let granted = 0;
    let refused = 0;
    await Promise.all(
      members.map(async (leases, member) => {
        for (let round = 0; round < 25; round++) {
          const source = (member + round) % 2 === 0 ? SOURCE_A : SOURCE_B;
          const lease = await leases.acquire(request(`job-${member}-${round}@token`, source), log);
          if (!lease) {
            refused++;
            continue;
          }
          granted++;
          bump(`source ${source.id}`, 1);
          bump('target', 1);
          reported.source = Math.max(reported.source, lease.sourceSlotsInFlight);
          reported.target = Math.max(reported.target, lease.targetSlotsInFlight);
          await sleep(2 + Math.random() * 10);
          bump(`source ${source.id}`, -1);
          bump('target', -1);
          await lease.release();
        }
      }),
    );
    expect({ granted, refused }).toEqual({ granted: 300, refused: 0 });
    // 12 clients for 3 + 3 source leases and 5 target leases: every cap was reached, none passed.
    expect(reported).toEqual({ source: caps.perSource, target: caps.perTarget });
    expect(peak.get(`source ${SOURCE_A.id}`)).toBeLessThanOrEqual(caps.perSource);
    expect(peak.get(`source ${SOURCE_B.id}`)).toBeLessThanOrEqual(caps.perSource);
    expect(peak.get('target')).toBeLessThanOrEqual(caps.perTarget);
    expect(peak.get('target')).toBeGreaterThan(1);
    const leases = members[0]!;
    for (const [role, id] of [
      [LeaseRole.Source, SOURCE_A.id],
      [LeaseRole.Source, SOURCE_B.id],
      [LeaseRole.Target, TARGET.id],
    ] as const) {
      expect(await leases.slotsInFlight('default', role, id)).toBe(0);
    }
  });

  it('takes the source and the target lease together or not at all', async () => {
    const [leases] = fleet(1, { perSource: 1, perTarget: 1 });
    const first = await leases!.tryAcquire(request('first', SOURCE_A, OTHER_TARGET));
    expect(first).toEqual({ acquired: true, sourceSlotsInFlight: 1, targetSlotsInFlight: 1 });
    // The source is full, the target free: nothing is taken on the target either.
    const second = await leases!.tryAcquire(request('second', SOURCE_A, TARGET));
    expect(second).toEqual({ acquired: false, sourceSlotsInFlight: 1, targetSlotsInFlight: 0 });
    expect(await leases!.slotsInFlight('default', LeaseRole.Target, TARGET.id)).toBe(0);
    // And the other way round: the target is full, the source free.
    const third = await leases!.tryAcquire(request('third', SOURCE_B, OTHER_TARGET));
    expect(third).toEqual({ acquired: false, sourceSlotsInFlight: 0, targetSlotsInFlight: 1 });
    expect(await leases!.slotsInFlight('default', LeaseRole.Source, SOURCE_B.id)).toBe(0);
    // A holder asking again (its first reply lost) keeps what it has: no second lease, no refusal.
    expect(await leases!.tryAcquire(request('first', SOURCE_A, OTHER_TARGET))).toEqual(first);
  });

  it('reclaims a lease its holder stopped renewing, after the TTL, and keeps a renewed one', async () => {
    const ttlMs = 300;
    const [dead, alive, other] = fleet(3, { perSource: 1, perTarget: 1 }, { ttlMs, renewEveryMs: 100 });
    // tryAcquire starts no renewal: this holder is as good as SIGKILLed.
    expect((await dead!.tryAcquire(request('killed-worker'))).acquired).toBe(true);
    expect((await other!.tryAcquire(request('waiting'))).acquired).toBe(false);
    await sleep(ttlMs + 50);
    const taken = await other!.tryAcquire(request('waiting'));
    expect(taken).toEqual({ acquired: true, sourceSlotsInFlight: 1, targetSlotsInFlight: 1 });
    await other!.release(request('waiting'));

    // acquire() renews every 100 ms: three TTLs later its lease still holds the node.
    const held = await alive!.acquire(request('running-slot'), log);
    expect(held?.acquired).toBe(true);
    await sleep(3 * ttlMs);
    expect((await other!.tryAcquire(request('waiting'))).acquired).toBe(false);
    await held!.release();
    expect((await other!.tryAcquire(request('waiting'))).acquired).toBe(true);
    await other!.release(request('waiting'));
    // The sets expire with their last lease: nothing is left behind in the control Redis.
    const client = control.client();
    try {
      const key = dead!.key('default', LeaseRole.Source, SOURCE_A.id);
      expect(await client.exists(key)).toBe(0);
    } finally {
      client.disconnect();
    }
  });

  it('releases idempotently, without touching another holder, and keeps the gauge true', async () => {
    const metrics = createMetrics({ defaultMetrics: false });
    const [leases] = fleet(1, { perSource: 2, perTarget: 2 }, { inFlight: metrics.nodeSlotsInFlight });
    const mine = await leases!.acquire(request('mine'), log);
    const theirs = await leases!.acquire(request('theirs'), log);
    expect(theirs).toMatchObject({ acquired: true, sourceSlotsInFlight: 2, targetSlotsInFlight: 2 });
    const gauge = async (role: LeaseRole) => {
      const values = (await metrics.nodeSlotsInFlight.get()).values;
      return values.find((value) => value.labels.role === role)?.value;
    };
    expect(await gauge(LeaseRole.Source)).toBe(2);
    await Promise.all([mine!.release(), mine!.release()]);
    await mine!.release();
    await leases!.release(request('mine'));
    expect(await leases!.slotsInFlight('default', LeaseRole.Source, SOURCE_A.id)).toBe(1);
    expect(await leases!.slotsInFlight('default', LeaseRole.Target, TARGET.id)).toBe(1);
    expect(await gauge(LeaseRole.Source)).toBe(1);
    expect(await gauge(LeaseRole.Target)).toBe(1);
    await theirs!.release();
    expect(await leases!.slotsInFlight('default', LeaseRole.Target, TARGET.id)).toBe(0);
    expect(await gauge(LeaseRole.Target)).toBe(0);
    expect((await metrics.nodeSlotsInFlight.get()).values.map((value) => value.labels)).toEqual([
      { cluster: 'default', node: '10.0.0.1:7000', role: 'source' },
      { cluster: 'default', node: '10.0.0.1:7002', role: 'target' },
    ]);
  });

  /** EVALSHA calls the control Redis has served so far: every lease attempt is one. */
  async function scriptCalls(): Promise<number> {
    const client = control.client();
    try {
      const stats = await client.info('commandstats');
      return Number(/cmdstat_evalsha:calls=(\d+)/.exec(stats)?.[1] ?? 0);
    } finally {
      client.disconnect();
    }
  }

  it('sleeps while the nodes are busy, without polling, and wakes at once on a release elsewhere', async () => {
    // Rechecks a minute apart: only the release's wake-up can end the wait within the test.
    const [holder, waiter] = fleet(2, { perSource: 1, perTarget: 0 }, { recheckMs: 60_000 });
    const held = await holder!.acquire(request('holder', SOURCE_A, TARGET), log);
    const heard: string[] = [];
    const waiting = waiter!.acquire(request('waiter', SOURCE_A, OTHER_TARGET), log, {
      onWait: () => heard.push('wait'),
      onWaitEnd: () => heard.push('end'),
    });
    await sleep(300);
    const callsAsleep = await scriptCalls();
    await sleep(700);
    // Asleep for 0.7 s: not one more attempt.
    expect(await scriptCalls()).toBe(callsAsleep);
    expect(heard).toEqual(['wait']);
    const releasedAt = Date.now();
    await held!.release();
    const lease = await waiting;
    expect(Date.now() - releasedAt).toBeLessThan(500);
    expect(lease).toMatchObject({ acquired: true, sourceSlotsInFlight: 1, targetSlotsInFlight: 1 });
    expect(heard).toEqual(['wait', 'end']);
    await lease!.release();
    await Promise.all([holder!.close(), waiter!.close()]);
  });

  it('passes a wake on to a sleeper whose pair is free when the woken one still cannot go', async () => {
    const [holders, first, second] = fleet(3, { perSource: 1, perTarget: 2 }, { recheckMs: 60_000 });
    const OTHER_SOURCE = node('e', 7004);
    const onA = await holders!.acquire(request('on-a', SOURCE_A, TARGET), log);
    const onOther = await holders!.acquire(request('on-other', OTHER_SOURCE, TARGET), log);
    // The target is full. The first sleeper also needs source A, which stays full; the second needs
    // source B, which is free.
    let firstGot = false;
    const firstWaiting = first!.acquire(request('first', SOURCE_A, TARGET), log).then((lease) => {
      firstGot = true;
      return lease;
    });
    await sleep(100);
    const secondWaiting = second!.acquire(request('second', SOURCE_B, TARGET), log);
    await sleep(100);
    const releasedAt = Date.now();
    await onOther!.release();
    const secondLease = await secondWaiting;
    expect(Date.now() - releasedAt).toBeLessThan(500);
    expect(secondLease?.acquired).toBe(true);
    expect(firstGot).toBe(false);
    await Promise.all([secondLease!.release(), onA!.release()]);
    const firstLease = await firstWaiting;
    expect(firstLease?.acquired).toBe(true);
    await firstLease!.release();
    await Promise.all([holders!.close(), first!.close(), second!.close()]);
  });

  it('ends a wait with nothing held when the leases are closed (a stopping worker)', async () => {
    const [holder, waiter] = fleet(2, { perSource: 1, perTarget: 0 }, { recheckMs: 60_000 });
    const held = await holder!.acquire(request('holder', SOURCE_A, TARGET), log);
    const waiting = waiter!.acquire(request('waiter', SOURCE_A, OTHER_TARGET), log);
    await sleep(100);
    await waiter!.close();
    expect(await waiting).toBeUndefined();
    expect(await waiter!.slotsInFlight('default', LeaseRole.Target, OTHER_TARGET.id)).toBe(0);
    expect((await waiter!.tryAcquire(request('free', SOURCE_B, TARGET))).acquired).toBe(true);
    await held!.release();
    await holder!.close();
  });
});
