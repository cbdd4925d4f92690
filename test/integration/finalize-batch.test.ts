/**
 * Finalizer jobs take the slots drained together as one batch. A slot of a batch fails on its own:
 * a retryable failure is retried alone (the job's data keeps only that slot), a permanent one fails
 * that slot only, named in the record, while the rest of its batch is assigned.
 */
import { Queue } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { seedDataset, verifyDataset } from '../../src/sandbox/index.js';
import {
  type SlotAction,
  SlotActionKind,
  type SlotObservation,
} from '../../src/shared/domain/slot-migration.js';
import { ownerOf } from '../../src/shared/domain/topology.js';
import { ErrorCode, SlotfleetError } from '../../src/shared/errors.js';
import { type FinalizeJobData, QueueName } from '../../src/shared/queue/names.js';
import { slotsOf } from './support/slots.js';
import { allViews, type Stack, startStack, waitForMigration } from './support/stack.js';

/**
 * A beforeAction hook for the finalizer: fails the flaky slot's first assignment with a retryable
 * error, and every assignment of the broken slot with a permanent one. failures() lists the flaky
 * slot's failures.
 */
function failAssignments(flaky: number, broken: number) {
  const failed: number[] = [];
  return {
    failures: () => failed,
    hook: (action: SlotAction, observation: SlotObservation) => {
      if (action.kind !== SlotActionKind.AssignTarget) return;
      if (observation.slot === flaky && failed.length === 0) {
        failed.push(flaky);
        throw new SlotfleetError(
          ErrorCode.Connection,
          `test: connection lost before assigning slot ${flaky}`,
        );
      }
      if (observation.slot === broken) {
        throw new SlotfleetError(ErrorCode.SlotConflict, `test: slot ${broken} was opened by someone else`);
      }
    },
  };
}

describe('finalizer batches', () => {
  let stack: Stack;

  beforeAll(async () => {
    stack = await startStack({
      workers: 0,
      replicasPerMaster: 0,
      // No client-latency pacing: a source starts paced at one slot at a time, so the second test's
      // two slots would drain one after the other, and land in one finalizer batch only when the
      // second finished within the batch's 20 ms (a race it lost about one run in three). The caps
      // (4 slots per source) let them drain at once, as the barrier below means them to.
      // Each slot drains in its own job, where the tests' hooks see it: with blocks, the job of a
      // block's first slot would drain the other one itself (keys-blocks.test.ts tests that).
      env: { SLOTFLEET_MAX_CLIENT_LATENCY_MS: '0', SLOTFLEET_OPEN_SLOTS_TOGETHER: '1' },
    });
  });

  afterAll(async () => {
    await stack?.stop();
  });

  const finalizeQueue = () =>
    new Queue<FinalizeJobData>(QueueName.FinalizeSlot, {
      connection: { host: stack.control.host, port: stack.control.port },
      prefix: stack.config.queuePrefix,
    });

  it('retries a failing slot alone and fails a broken one alone, finishing the rest of the batch', async () => {
    const manifest = await seedDataset(stack.cluster.seedUrl, { keys: 4_000, types: 'mixed', seed: 11 });
    const masters = (await stack.cluster.masters()).sort((a, b) => a.port - b.port);
    const [target, source] = [masters[0]!, masters[1]!];
    const owned = await slotsOf(stack.cluster, source.id);
    // Two migrations, so the two failing slots are never in one batch (batches are per migration).
    const [retried, failing] = [owned.slice(0, 40), owned.slice(40, 60)];
    const [flaky, broken] = [retried[10]!, failing[10]!];
    const failures = failAssignments(flaky, broken);
    const worker = await stack.startWorker({ beforeAction: failures.hook });
    const queue = finalizeQueue();
    const jobsOf = async (id: string, states: ('completed' | 'failed')[]) =>
      (await queue.getJobs(states)).filter((job) => job.data.migrationId === id);
    try {
      const [retriedId, failingId] = await Promise.all(
        [retried, failing].map(async (slots) => {
          const created = await stack.api.app.inject({
            method: 'POST',
            url: '/v1/clusters/default/migrations',
            payload: { moves: [{ slots: slots.join(','), target: target.id }] },
          });
          expect(created.statusCode, created.body).toBe(202);
          return created.json().id as string;
        }),
      );
      const [retriedEnd, failingEnd] = await Promise.all([
        waitForMigration(stack, retriedId!, 60_000),
        waitForMigration(stack, failingId!, 60_000),
      ]);
      // The flaky slot's error is gone once it is done; the broken slot's stays, naming it.
      expect(retriedEnd).toMatchObject({ state: 'done', errors: [] });
      expect(retriedEnd.slots).toMatchObject({ done: retried.length });
      expect(failures.failures()).toEqual([flaky]);
      expect(failingEnd.state).toBe('failed');
      expect(failingEnd.slots).toMatchObject({ done: failing.length - 1, failed: 1 });
      expect(failingEnd.errors).toEqual([
        expect.objectContaining({
          slot: broken,
          code: ErrorCode.SlotConflict,
          message: expect.stringMatching(/opened by someone else/),
        }),
      ]);

      // (The records end a moment before the jobs do.)
      await expect
        .poll(async () => (await queue.getJobCounts('active', 'waiting', 'delayed')).active, {
          timeout: 10_000,
        })
        .toBe(0);
      await expect
        .poll(async () => (await jobsOf(failingId!, ['failed'])).length, { timeout: 10_000 })
        .toBe(1);
      // Batches, not one job per slot.
      expect((await jobsOf(retriedId!, ['completed'])).length).toBeLessThan(retried.length);
      // The broken slot's batch failed for good, naming it; its other slots were assigned all the same.
      const [failed] = await jobsOf(failingId!, ['failed']);
      expect(failed!.data.slots.map((slot) => slot.slot)).toContain(broken);
      expect(failed!.failedReason).toMatch(
        new RegExp(
          `^1 of \\d+ slots failed, first slot ${broken}: SLOT_CONFLICT: test: slot ${broken} was opened`,
        ),
      );
      // The flaky slot's batch was retried with that slot alone, after the others were assigned.
      const flakyJob = (await jobsOf(retriedId!, ['completed'])).find((job) =>
        job.data.slots.some((slot) => slot.slot === flaky),
      )!;
      expect(flakyJob.data.slots.map((slot) => slot.slot)).toEqual([flaky]);
      expect(flakyJob.attemptsMade).toBe(2);
      expect(flakyJob.returnvalue).toMatchObject({ slots: 1 });

      // Every other slot is the target's, on every node.
      const assigned = [...retried, ...failing].filter((slot) => slot !== broken);
      await expect
        .poll(
          async () =>
            (await allViews(stack.cluster)).flatMap((view) =>
              assigned
                .filter((slot) => ownerOf(view, slot) !== target.id)
                .map((slot) => `${view.myself.port}:${slot}`),
            ),
          { timeout: 20_000, interval: 200 },
        )
        .toEqual([]);
      const views = await Promise.all(
        [source, target].map(async (node) => {
          const client = stack.cluster.process(node.port).client();
          try {
            return String(await client.call('CLUSTER', 'NODES'));
          } finally {
            client.disconnect();
          }
        }),
      );
      // The broken slot is left open but safe: drained, MIGRATING on the source, IMPORTING on the target.
      expect(views[0]).toContain(`[${broken}->-${target.id}]`);
      expect(views[1]).toContain(`[${broken}-<-${source.id}]`);
      const verification = await verifyDataset(stack.cluster.seedUrl, manifest);
      expect(verification).toMatchObject({ missingCount: 0, wrongValueCount: 0, wrongTtlCount: 0 });
    } finally {
      await queue.close();
      await worker.close();
    }
  });

  it('in one batch, retries the flaky slot alone while the broken one stays failed in the record', async () => {
    const masters = (await stack.cluster.masters()).sort((a, b) => a.port - b.port);
    const [target, source] = [masters[0]!, masters[2]!];
    const [flaky, broken] = (await slotsOf(stack.cluster, source.id)).slice(0, 2) as [number, number];
    // Both slots drain at the same moment (a barrier before their first batch), so one finalizer
    // job takes both: drained slots wait 20 ms for company.
    let arrived = 0;
    let release: () => void = () => undefined;
    const barrier = new Promise<void>((resolve) => {
      release = resolve;
    });
    const failures = failAssignments(flaky, broken);
    const worker = await stack.startWorker({
      beforeAction: async (action, observation) => {
        if (action.kind === SlotActionKind.MigrateKeys && arrived < 2) {
          if (++arrived === 2) release();
          await barrier;
        }
        failures.hook(action, observation);
      },
    });
    const queue = finalizeQueue();
    try {
      const created = await stack.api.app.inject({
        method: 'POST',
        url: '/v1/clusters/default/migrations',
        payload: { moves: [{ slots: `${flaky},${broken}`, target: target.id }] },
      });
      expect(created.statusCode, created.body).toBe(202);
      const id: string = created.json().id;
      const final = await waitForMigration(stack, id, 60_000);
      expect(final.state).toBe('failed');
      expect(final.slots).toMatchObject({ done: 1, failed: 1 });
      expect(final.errors).toEqual([expect.objectContaining({ slot: broken, code: ErrorCode.SlotConflict })]);
      await expect
        .poll(async () => (await queue.getJobCounts('active', 'waiting', 'delayed')).active, {
          timeout: 10_000,
        })
        .toBe(0);
      const jobs = (await queue.getJobs(['completed', 'failed'])).filter(
        (job) => job.data.migrationId === id,
      );
      // One job held both; its retry carried the flaky slot alone and completed.
      expect(jobs).toHaveLength(1);
      expect(jobs[0]!.data.slots.map((slot) => slot.slot)).toEqual([flaky]);
      expect(jobs[0]!.attemptsMade).toBe(2);
      expect(jobs[0]!.returnvalue).toMatchObject({ slots: 1 });
      expect(await jobs[0]!.getState()).toBe('completed');
    } finally {
      await queue.close();
      await worker.close();
    }
  });
});
