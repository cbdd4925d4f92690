/**
 * CLUSTER FAILOVER of the source, and of the target, in the middle of a slot's drain. The promoted
 * replica holds the keys (replicated) but none of the slot's open states; a re-run of the job (as
 * BullMQ retries it) adopts the successor, sets IMPORTING / MIGRATING again naming it, and finishes
 * with nothing lost, every node agreeing on the owner, and no slot left open.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DatasetManifest, verifyDataset } from '../../src/sandbox/index.js';
import { SlotPhase } from '../../src/shared/domain/slot-migration.js';
import { isRetryable } from '../../src/shared/errors.js';
import { createMetrics } from '../../src/shared/metrics.js';
import { MigrationStore } from '../../src/shared/queue/migration-store.js';
import type { SlotJobData } from '../../src/shared/queue/names.js';
import { driveSlot, type SlotRunDeps } from '../../src/workers/slot-run.js';
import { HookedAdapter, seedOneSlot } from './support/one-slot.js';
import { expectNoOpenSlots, expectOwnersEverywhere, type Stack, startStack } from './support/stack.js';

const KEYS = 80;

describe('a failover in the middle of a slot migration', () => {
  let stack: Stack;
  let adapter: HookedAdapter;
  let controlClient: ReturnType<Stack['control']['client']>;

  beforeAll(async () => {
    stack = await startStack({ workers: 0 });
    adapter = new HookedAdapter('default', stack.config.clusters.default!, { commandTimeoutMs: 10_000 });
    controlClient = stack.control.client();
  });

  afterAll(async () => {
    await adapter?.close();
    controlClient?.disconnect();
    await stack?.stop();
  });

  function deps(): SlotRunDeps {
    return {
      cluster: adapter,
      store: new MigrationStore(controlClient, stack.config.queuePrefix),
      metrics: createMetrics({ defaultMetrics: false }),
      // Small batches, one in flight: the drain takes several rounds, so there is a middle.
      settings: { batchKeys: 9, batchesInFlight: 1, batchBytes: 0, migrateTimeoutMs: 5_000 },
      log: stack.log,
    };
  }

  /** Runs the two jobs as BullMQ would: an attempt that fails with a retryable error runs again. */
  async function runLikeBullmq(data: SlotJobData): Promise<string[]> {
    const errors: string[] = [];
    for (const phase of [SlotPhase.Migrate, SlotPhase.Finalize]) {
      for (let attempt = 1; ; attempt++) {
        try {
          await driveSlot(data, phase, deps());
          break;
        } catch (error) {
          errors.push((error as Error).message);
          if (!isRetryable(error) || attempt >= 8) throw error;
          await new Promise((resolve) => setTimeout(resolve, 500));
        }
      }
    }
    return errors;
  }

  async function expectNothingLostAndClosed(manifest: DatasetManifest) {
    const result = await verifyDataset(stack.cluster.seedUrl, manifest);
    expect(result).toMatchObject({ missingCount: 0, wrongValueCount: 0, wrongTtlCount: 0, checked: KEYS });
    await expectNoOpenSlots(stack.cluster);
  }

  it.each(['source', 'target'] as const)(
    'of the %s: the job adopts the promoted replica and finishes with nothing lost',
    async (role) => {
      const { data, manifest, slot } = await seedOneSlot(stack, {
        tag: `fo-${role}`,
        keys: KEYS,
        migrationId: `failover-fo-${role}`,
      });
      const failedOver = data[role];
      let promotedId = '';
      adapter.batches = 0;
      adapter.hook = {
        atBatch: 3,
        run: async () => {
          promotedId = await stack.cluster.failover(failedOver.id, { waitForConsensus: false });
        },
      };
      const errors = await runLikeBullmq(data);
      expect(promotedId).not.toBe('');
      // The failover made at least one attempt fail (READONLY, MOVED or not converged yet).
      expect(errors.length).toBeGreaterThan(0);
      const newOwner = role === 'target' ? promotedId : data.target.id;
      await expectOwnersEverywhere(stack.cluster, new Map([[slot, newOwner]]));
      await expectNothingLostAndClosed(manifest);
    },
    120_000,
  );
});
