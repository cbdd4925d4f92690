/**
 * The migration record's step script on a real control Redis: an ended slot is never reopened by a
 * late writer, and the keys that writer reports still count. Slots opened ahead by another job are
 * told apart from those no opener can take any more.
 */
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startControlRedis } from '../../src/sandbox/index.js';
import type { RedisProcess } from '../../src/sandbox/redis-process.js';
import { SlotStep } from '../../src/shared/domain/slot-migration.js';
import { MigrationStore } from '../../src/shared/queue/migration-store.js';

describe('MigrationStore scripts on a real control Redis', () => {
  let control: RedisProcess;
  let redis: Redis;
  let store: MigrationStore;

  beforeAll(async () => {
    control = await startControlRedis();
    redis = new Redis({ host: control.host, port: control.port });
    store = new MigrationStore(redis, 'store-test');
  });

  afterAll(async () => {
    redis?.disconnect();
    await control?.stop();
  });

  it("keeps a done slot done, and counts the keys of a migrate job's drained step that arrives after it", async () => {
    const node = { id: 'a'.repeat(40), host: '127.0.0.1', port: 7000 };
    const target = { id: 'b'.repeat(40), host: '127.0.0.1', port: 7001 };
    await store.create({
      id: 'mig-late',
      cluster: 'default',
      kind: 'migrations',
      request: {},
      moves: [{ slot: 5, source: node, target }],
    });
    // The finalizer (another worker) ends the slot first ...
    expect(await store.setSlotStep('mig-late', 'default', 5, SlotStep.Done)).toBe(true);
    // ... then the migrate job's drained step, sent without waiting, arrives with the keys it moved.
    expect(await store.setSlotStep('mig-late', 'default', 5, SlotStep.Migrating, 3)).toBe(false);
    const record = await store.get('mig-late');
    expect(record).toMatchObject({ state: 'done', keysMoved: 3, slots: { done: 1, migrating: 0 } });
  });

  it('tells which slots an opener may still be writing for, and closes the others to openers', async () => {
    const source = { id: 'a'.repeat(40), host: '127.0.0.1', port: 7000 };
    const target = { id: 'b'.repeat(40), host: '127.0.0.1', port: 7001 };
    await store.create({
      id: 'mig-ahead',
      cluster: 'default',
      kind: 'migrations',
      request: {},
      moves: [10, 11, 12, 13].map((slot) => ({ slot, source, target })),
    });
    // An opener takes 11 and 12 (pending), stamped.
    expect(await store.claimForTask('mig-ahead', [], [11, 12], 2)).toEqual([11, 12]);
    // A finalizer of 10, 11 and 13: 11 is being opened; 10 and 13 are closed to openers from now on.
    expect(await store.openingsInFlight('mig-ahead', [10, 11, 13])).toEqual([11]);
    expect(await store.claimForTask('mig-ahead', [], [10, 13], 2)).toEqual([]);
    // The opener's writes were answered: nothing is in flight any more.
    await store.openingsAnswered('mig-ahead', [11, 12]);
    expect(await store.openingsInFlight('mig-ahead', [10, 11, 12, 13])).toEqual([]);
  });
});
