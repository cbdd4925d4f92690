/**
 * The keys engine: the slot runs through the state machine of src/shared/domain/slot-migration.ts
 * (SETSLOT IMPORTING and MIGRATING, MIGRATE batches until the source is empty, then SETSLOT NODE on
 * every master), as redis-cli does it, made restartable. Works on every Redis and Valkey.
 *
 * Blocks (SLOTFLEET_OPEN_SLOTS_TOGETHER): the job of a block's first slot claims the block's other
 * slots that no job has begun, opens them with its own (one write per node), then moves their keys
 * one slot after another under one node lease, records them drained and adds their finalize job.
 * Their own jobs wait for that and end at once, without a command to the cluster: a slot costs its
 * job the queue's own work and a share of one record read. Whatever the opener cannot finish (an
 * error, a pause, its worker stopping or dying) goes back to the slots' own jobs, which run them as
 * any slot, from what the cluster says.
 */
import { observeSlot } from '../../shared/cluster/observe-slot.js';
import { MigrationEngine } from '../../shared/domain/migration.js';
import { CancelDecision, cancelDecision, SlotPhase, SlotStep } from '../../shared/domain/slot-migration.js';
import { formatSlotRanges } from '../../shared/domain/slots.js';
import { OpeningState } from '../../shared/queue/migration-store.js';
import type { SlotJobData } from '../../shared/queue/names.js';
import { drainSlot, PauseRequested } from '../drain.js';
import { type OpenAhead, SlotRun, type SlotRunResult } from '../slot-run.js';
import type { MoverDeps, SlotMover } from './slot-mover.js';

/** How often an opener stamps the slots it still holds: well within the claims' grace (3 s). */
const RENEW_MS = 1_000;
/** Slots drained before their steps are written and their finalize job added together. */
const HAND_ON_EVERY = 16;

export const keysMover: SlotMover = {
  engine: MigrationEngine.Keys,
  moveSlot: async (data, phase, deps) => {
    const ahead = deps.openAhead;
    if (ahead && phase === SlotPhase.Migrate && !data.repair) {
      const state = await settled(data, ahead, deps);
      // A job the stranded-slot sweep runs again does not take "handed on" at its word: the stamp can
      // outlive the finalize job added before it (a control Redis restart that lost the job, with the
      // stamp sent across the restart), and nothing else would then end the slot. It runs the slot
      // from what the cluster says, which adds a finalize job if one is needed.
      if (state === OpeningState.HandedOn && data.rerun) {
        deps.log.info('slot run again after lost writes: its opener said handed on, the cluster decides');
      } else if (state === OpeningState.HandedOn) {
        deps.log.debug('slot drained by the job that opened it');
        return { keysMoved: 0, step: SlotStep.Migrating, handedOn: true };
      }
    }
    const run = new SlotRun(data, phase, deps);
    // The block's claims are renewed from the start: the opener's own slot may take longer to drain
    // than the claims' grace, and its block's jobs must not run their slots meanwhile.
    const renewal = ahead ? renewEvery(ahead, data, () => run.claimed, deps.log) : undefined;
    let result: SlotRunResult;
    try {
      result = await run.run();
    } catch (error) {
      await giveBack(data, run.claimed, deps);
      throw error;
    } finally {
      clearInterval(renewal);
    }
    if (run.claimed.length > 0) await moveBlock(data, run, deps);
    return result;
  },
  // A slot not yet MIGRATING has moved no key: drop it (undoing the target's IMPORTING). Once
  // MIGRATING, keys may be on both sides: it is finished, so no slot is left with its keys split.
  onCancel: async (data, deps) => {
    const observation = await observeSlot(deps.cluster, data.slot, data.source, data.target, {
      includeOthers: false,
    });
    const decision = cancelDecision(observation);
    if (decision === CancelDecision.Finish) return 'finish';
    if (decision === CancelDecision.UndoImport) await deps.cluster.setSlotStable(data.target, data.slot);
    deps.log.info({ decision }, 'slot cancelled: no key had moved');
    return 'cancelled';
  },
};

/**
 * Waits while the job that opened this slot holds it; the wait does not count against the worker's
 * concurrency (taskWait), so the queue's next jobs are fetched meanwhile.
 */
async function settled(data: SlotJobData, ahead: OpenAhead, deps: MoverDeps): Promise<OpeningState> {
  let waited = false;
  const state = await ahead.settled(data, () => {
    waited = true;
    deps.taskWait?.onWait();
  });
  if (waited) deps.taskWait?.onWaitEnd();
  // Paused (or the worker stopping) while it waited: hand the slot back before touching it.
  if (waited && state === OpeningState.Free && (await deps.isPaused?.())) throw new PauseRequested();
  return state;
}

/** Renews the claims of the slots held (held() at each tick) every RENEW_MS, until cleared. */
function renewEvery(
  ahead: OpenAhead,
  data: SlotJobData,
  held: () => readonly number[],
  log: MoverDeps['log'],
): NodeJS.Timeout {
  return setInterval(() => {
    const slots = held();
    if (slots.length === 0) return;
    ahead
      .renew(data, slots)
      .catch((error: Error) => log.warn({ err: error.message }, 'renewing the slots held'));
  }, RENEW_MS);
}

async function giveBack(data: SlotJobData, slots: readonly number[], deps: MoverDeps): Promise<void> {
  if (slots.length === 0 || !deps.openAhead) return;
  // If this fails too, the stamps lapse after the grace and the jobs go on then.
  await deps.openAhead
    .release(data, slots)
    .catch((error: Error) => deps.log.warn({ err: error.message }, 'giving slots back to their jobs'));
}

/**
 * Moves the keys of the slots this run opened ahead, one slot after another under one node lease, and
 * hands them on in groups; gives back every slot it does not hand on.
 */
async function moveBlock(data: SlotJobData, run: SlotRun, deps: MoverDeps): Promise<void> {
  const ahead = deps.openAhead!;
  const opened = new Set(run.opened);
  const left = run.claimed.filter((slot) => !opened.has(slot));
  // After a failover the run works with a successor the block's jobs do not name: they run alone.
  const remaining = run.adopted ? [] : run.claimed.filter((slot) => opened.has(slot));
  left.push(...(run.adopted ? run.opened : []));
  await giveBack(data, left, deps);
  if (remaining.length === 0) return;

  const block = formatSlotRanges(remaining);
  const log = deps.log.child({ block });
  const logOfSlot = (slot: number) => deps.logOf?.(slot, { block }) ?? deps.log.child({ slot, block });
  /** Drained, not handed on yet; long: its step was written draining (a second round). */
  const drained: { slot: number; unrecorded: number; long: boolean }[] = [];
  const renewal = renewEvery(ahead, data, () => [...drained.map((entry) => entry.slot), ...remaining], log);
  const handOn = async () => {
    const batch = drained.splice(0);
    if (batch.length === 0) return;
    try {
      // Their step is migrating since the claim (draining for a long one, set back here): only the
      // keys they moved are left to count.
      const keys = batch.reduce((sum, entry) => sum + (entry.long ? 0 : entry.unrecorded), 0);
      await Promise.all([
        keys > 0 ? deps.store.addKeysMoved(data.migrationId, keys) : undefined,
        ...batch
          .filter((entry) => entry.long)
          .map(({ slot, unrecorded }) =>
            deps.store.setSlotStep(data.migrationId, data.cluster, slot, SlotStep.Migrating, unrecorded),
          ),
      ]);
      await ahead.handOn(
        data,
        batch.map((entry) => entry.slot),
      );
    } catch (error) {
      // Their jobs run them again from what the cluster says: drained, so they go to finalize.
      remaining.push(...batch.map((entry) => entry.slot));
      throw error;
    }
  };
  const { drainGate, ...drainDeps } = deps;
  try {
    // Refused when the worker is stopping or the migration was paused meanwhile: the jobs decide.
    await drainGate?.acquire();
  } catch {
    clearInterval(renewal);
    await giveBack(data, remaining, deps);
    return;
  }
  try {
    while (remaining.length > 0) {
      if (await deps.isPaused?.()) throw new PauseRequested();
      const slot = remaining[0]!;
      const slotLog = logOfSlot(slot);
      let long = false;
      // As a slot's own run: a drain that takes more than one round shows as draining.
      const onSecondRound = () => {
        long = true;
        slotLog.debug({ from: SlotStep.Migrating, to: SlotStep.Draining }, 'slot step');
        deps.store
          .setSlotStep(data.migrationId, data.cluster, slot, SlotStep.Draining)
          .catch((error: Error) => slotLog.warn({ err: error.message }, 'recording slot step'));
      };
      const moved = await drainSlot({ ...data, slot }, { ...drainDeps, log: slotLog }, onSecondRound);
      remaining.shift();
      drained.push({ slot, unrecorded: moved.unrecorded, long });
      slotLog.debug({ keysMoved: moved.moved }, 'slot drained');
      if (drained.length >= HAND_ON_EVERY) await handOn();
    }
    await handOn();
  } catch (error) {
    // The opener's own slot is drained whatever happens here: the rest goes back to the slots' jobs.
    if (!(error instanceof PauseRequested)) {
      log.warn(
        { err: (error as Error).message, left: formatSlotRanges(remaining) },
        "moving the keys of the block's slots: giving the rest back to their own jobs",
      );
    }
    await handOn().catch(() => undefined);
  } finally {
    clearInterval(renewal);
    await drainGate?.release();
    if (remaining.length > 0) {
      log.info({ slots: formatSlotRanges(remaining) }, 'slots of the block given back to their own jobs');
    }
    await giveBack(data, remaining, deps);
  }
}
