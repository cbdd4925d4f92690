/**
 * A slot migration interrupted between every pair of steps (and in the middle of draining) is
 * finished by a plain re-run, with nothing lost: every step re-derives its position from the cluster.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifyDataset } from '../../src/sandbox/index.js';
import { type SlotAction, SlotPhase } from '../../src/shared/domain/slot-migration.js';
import { ErrorCode, type SlotfleetError } from '../../src/shared/errors.js';
import { createMetrics } from '../../src/shared/metrics.js';
import { MigrationStore } from '../../src/shared/queue/migration-store.js';
import type { SlotJobData } from '../../src/shared/queue/names.js';
import { driveSlot, type SlotRunDeps } from '../../src/workers/slot-run.js';
import { HookedAdapter, seedOneSlot } from './support/one-slot.js';
import { expectOwnersEverywhere, type Stack, startStack } from './support/stack.js';

class Crash extends Error {}

describe('interrupting a slot migration', () => {
  let stack: Stack;
  let adapter: HookedAdapter;
  let store: MigrationStore;
  let controlClient: ReturnType<Stack['control']['client']>;

  beforeAll(async () => {
    stack = await startStack({ workers: 0 });
    adapter = new HookedAdapter('default', stack.config.clusters.default!, { commandTimeoutMs: 10_000 });
    controlClient = stack.control.client();
    store = new MigrationStore(controlClient, stack.config.queuePrefix);
  });

  afterAll(async () => {
    await adapter?.close();
    controlClient?.disconnect();
    await stack?.stop();
  });

  function deps(beforeAction?: SlotRunDeps['beforeAction']): SlotRunDeps {
    return {
      cluster: adapter,
      store,
      metrics: createMetrics({ defaultMetrics: false }),
      // Small batches, one in flight: draining takes several rounds, so there is a "between".
      settings: { batchKeys: 7, batchesInFlight: 1, batchBytes: 0, migrateTimeoutMs: 5_000 },
      log: stack.log,
      ...(beforeAction ? { beforeAction } : {}),
    };
  }

  /** A slot full of keys of every type (some with TTL), its owner, and another master as target. */
  async function prepareSlot(tag: string): Promise<{ data: SlotJobData; verify: () => Promise<void> }> {
    const { data, manifest, slot } = await seedOneSlot(stack, { tag, keys: 60, migrationId: `crash-${tag}` });
    return {
      data,
      verify: async () => {
        const result = await verifyDataset(stack.cluster.seedUrl, manifest);
        expect(result).toMatchObject({ missingCount: 0, wrongValueCount: 0, wrongTtlCount: 0, checked: 60 });
        await expectOwnersEverywhere(stack.cluster, new Map([[slot, data.target.id]]));
      },
    };
  }

  async function runToEnd(data: SlotJobData, beforeAction?: SlotRunDeps['beforeAction']) {
    await driveSlot(data, SlotPhase.Migrate, deps(beforeAction));
    return driveSlot(data, SlotPhase.Finalize, deps(beforeAction));
  }

  it.each([
    'set-importing',
    'set-migrating',
    'migrate-keys',
    'assign-target',
    'assign-source',
    'assign-others',
  ])('crashing just before %s, then re-running, completes with nothing lost', async (crashAt) => {
    const { data, verify } = await prepareSlot(`before-${crashAt}`);
    const performed: string[] = [];
    const crashOnce = (action: SlotAction) => {
      if (action.kind === crashAt) throw new Crash(`crash before ${crashAt}`);
      performed.push(action.kind);
    };
    await expect(runToEnd(data, crashOnce)).rejects.toBeInstanceOf(Crash);
    await runToEnd(data);
    await verify();
    expect(performed).not.toContain(crashAt);
  });

  it('crashing between two MIGRATE batches, then re-running, completes with nothing lost', async () => {
    const { data, verify } = await prepareSlot('mid-drain');
    // Two batches go through; the worker dies before the third.
    adapter.hook = {
      atBatch: adapter.batches + 3,
      run: () => {
        throw new Crash('worker died between two MIGRATE batches');
      },
    };
    await expect(runToEnd(data)).rejects.toBeInstanceOf(Crash);
    const source = stack.cluster.process(data.source.port).client();
    const keysLeft = Number(await source.call('CLUSTER', 'COUNTKEYSINSLOT', data.slot));
    source.disconnect();
    expect(keysLeft).toBe(60 - 2 * 7);
    await runToEnd(data);
    await verify();
  });

  it('re-running both jobs of a finished slot changes nothing', async () => {
    const { data, verify } = await prepareSlot('rerun');
    await runToEnd(data);
    const actions: string[] = [];
    const again = await runToEnd(data, (action) => {
      actions.push(action.kind);
    });
    expect(again.keysMoved).toBe(0);
    expect(actions).toEqual([]);
    await verify();
  });

  it('maps the "already owner", "not owner" and "still holds keys" replies of real nodes', async () => {
    const { data } = await prepareSlot('replies');
    await runToEnd(data);
    const codeOf = (promise: Promise<unknown>) =>
      promise.then(
        () => 'no error',
        (error: SlotfleetError) => error.code,
      );
    expect(await codeOf(adapter.setSlotImporting(data.target, data.slot, data.source.id))).toBe(
      ErrorCode.AlreadyOwner,
    );
    expect(await codeOf(adapter.setSlotMigrating(data.source, data.slot, data.target.id))).toBe(
      ErrorCode.NotOwner,
    );
    // The target now holds the keys: handing the slot away must be refused by Redis itself.
    expect(await codeOf(adapter.setSlotNode(data.target, data.slot, data.source.id))).toBe(
      ErrorCode.StillHoldsKeys,
    );
  });
});
