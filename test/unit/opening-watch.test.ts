/**
 * OpeningWatch: the jobs of one process that wait for their block's opener share one read of the
 * record per poll, are woken at once by their own process' opener, and run their slots themselves
 * when the worker stops.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createLogger } from '../../src/shared/logger.js';
import { OpeningState, TASK_CLAIM_GRACE_MS } from '../../src/shared/queue/migration-store.js';
import { OpeningWatch } from '../../src/workers/opening-watch.js';

const log = createLogger({ level: 'silent', name: 'opening-watch-test' });

/** Slots held until released; counts the reads. */
function record(held: Set<number>) {
  const reads: number[][] = [];
  return {
    reads,
    openingStates: async (_id: string, slots: readonly number[]) => {
      reads.push([...slots]);
      return slots.map((slot) => (held.has(slot) ? OpeningState.Held : OpeningState.Free));
    },
  };
}

describe('OpeningWatch', () => {
  it('answers the jobs that ask together with one read, and polls only for the slots still held', async () => {
    const held = new Set([2, 3]);
    const store = record(held);
    const watch = new OpeningWatch(store, log, 5);
    const onHeld: number[] = [];
    const answers = [1, 2, 3].map((slot) => watch.settled('m', slot, () => onHeld.push(slot)));
    expect(await answers[0]).toBe(OpeningState.Free);
    expect(store.reads[0]).toEqual([1, 2, 3]);
    held.clear();
    expect(await Promise.all(answers.slice(1))).toEqual([OpeningState.Free, OpeningState.Free]);
    expect(onHeld).toEqual([2, 3]);
    expect(store.reads.slice(1).every((slots) => slots.every((slot) => slot === 2 || slot === 3))).toBe(true);
    watch.close();
  });

  it("wakes a waiter when its own process' opener hands its slot on, and frees every waiter on close", async () => {
    const store = record(new Set([7, 8]));
    const watch = new OpeningWatch(store, log, 60_000);
    const seven = watch.settled('m', 7, () => undefined);
    const eight = watch.settled('m', 8, () => undefined);
    await new Promise((resolve) => setTimeout(resolve, 20));
    watch.notify('m', [7], OpeningState.HandedOn);
    expect(await seven).toBe(OpeningState.HandedOn);
    watch.close();
    expect(await eight).toBe(OpeningState.Free);
  });

  describe('after the control Redis was away', () => {
    afterEach(() => {
      vi.useRealTimers();
    });

    it('takes no Free for the claims grace: no opener could renew meanwhile, a live one renews after', async () => {
      vi.useFakeTimers();
      let away = true;
      const answers = new Map([
        [1, OpeningState.Free],
        [2, OpeningState.HandedOn],
      ]);
      const store = {
        openingStates: async (_id: string, slots: readonly number[]) => {
          if (away) throw new Error('Connection is closed.');
          return slots.map((slot) => answers.get(slot)!);
        },
      };
      const watch = new OpeningWatch(store, log, 5);
      let lapsed: OpeningState | undefined;
      let handedOn: OpeningState | undefined;
      void watch.settled('m', 1, () => undefined).then((state) => (lapsed = state));
      void watch.settled('m', 2, () => undefined).then((state) => (handedOn = state));
      await vi.advanceTimersByTimeAsync(50);
      away = false;
      // Handed on is an answer whatever happened; a lapsed claim is not, within the grace.
      await vi.advanceTimersByTimeAsync(50);
      expect(handedOn).toBe(OpeningState.HandedOn);
      await vi.advanceTimersByTimeAsync(TASK_CLAIM_GRACE_MS - 200);
      expect(lapsed).toBeUndefined();
      await vi.advanceTimersByTimeAsync(200);
      expect(lapsed).toBe(OpeningState.Free);
      watch.close();
    });
  });
});
