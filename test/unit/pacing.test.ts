/**
 * Pacing's decisions (src/shared/domain/pacing.ts) and the wait it is fed (the longest busy run of a
 * source, src/workers/pacer.ts), as tables. The shared store is a Lua script, exercised with the
 * rest on a real cluster in test/integration/client-latency-budget.test.ts.
 */
import { describe, expect, it } from 'vitest';
import {
  initialPace,
  MIN_BATCH_KEYS,
  nextPace,
  type Pace,
  type PaceCeilings,
  PaceChange,
  UNCAPPED_SLOTS,
} from '../../src/shared/domain/pacing.js';
import { type BatchRun, longestBusyRunMs } from '../../src/workers/pacer.js';

const CEILINGS: PaceCeilings = { slots: 4, batches: 2, batchKeys: 1000 };
const pace = (slots: number, batches: number, batchKeys: number): Pace => ({ slots, batches, batchKeys });

describe('nextPace', () => {
  it.each<[string, Pace, number, Pace, PaceChange]>([
    ['over budget: half the slots first', pace(4, 2, 1000), 12, pace(2, 2, 1000), PaceChange.Slower],
    ['over budget at one slot: half the batches', pace(1, 2, 1000), 12, pace(1, 1, 1000), PaceChange.Slower],
    [
      'over budget at one batch: the keys that would have taken 85 % of it',
      pace(1, 1, 1000),
      12.5,
      pace(1, 1, 680),
      PaceChange.Slower,
    ],
    ['a little over: still aimed at 85 % of it', pace(1, 1, 1000), 10.1, pace(1, 1, 841), PaceChange.Slower],
    ['far over (a stall): half the keys at least', pace(1, 1, 1000), 80, pace(1, 1, 500), PaceChange.Slower],
    [
      'never below the smallest batch',
      pace(1, 1, MIN_BATCH_KEYS),
      500,
      pace(1, 1, MIN_BATCH_KEYS),
      PaceChange.Same,
    ],
    ['under the headroom: bigger batches first', pace(1, 1, 100), 2, pace(1, 1, 150), PaceChange.Faster],
    [
      'just under the headroom: the keys that would take 85 % of it',
      pace(1, 1, 400),
      6.8,
      pace(1, 1, 500),
      PaceChange.Faster,
    ],
    ['bigger batches up to the ceiling', pace(1, 1, 900), 2, pace(1, 1, 1000), PaceChange.Faster],
    ['then one more batch in flight', pace(1, 1, 1000), 2, pace(1, 2, 1000), PaceChange.Faster],
    ['then one more slot', pace(1, 2, 1000), 2, pace(2, 2, 1000), PaceChange.Faster],
    ['at every ceiling: stays', pace(4, 2, 1000), 2, pace(4, 2, 1000), PaceChange.Same],
    ['between headroom and budget: stays', pace(2, 1, 300), 8, pace(2, 1, 300), PaceChange.Same],
    ['exactly the budget is within it', pace(2, 1, 300), 10, pace(2, 1, 300), PaceChange.Same],
    ['ceilings lowered since: they hold at once', pace(16, 8, 5000), 8, pace(4, 2, 1000), PaceChange.Same],
  ])('%s', (_, from, observedMs, to, change) => {
    expect(nextPace(from, observedMs, 10, CEILINGS)).toEqual({ pace: to, change });
  });

  it('starts a node slow: one slot, one batch, small batches', () => {
    expect(initialPace(CEILINGS)).toEqual(pace(1, 1, 128));
    expect(initialPace({ slots: 4, batches: 2, batchKeys: 50 })).toEqual(pace(1, 1, 50));
  });

  it('grows to a source without a cap only up to a bound', () => {
    let current = pace(UNCAPPED_SLOTS - 1, 2, 1000);
    current = nextPace(current, 1, 10, { ...CEILINGS, slots: 0 }).pace;
    expect(current.slots).toBe(UNCAPPED_SLOTS);
    expect(nextPace(current, 1, 10, { ...CEILINGS, slots: 0 }).change).toBe(PaceChange.Same);
  });

  it('settles under a steady overload within a few windows and climbs back when it ends', () => {
    let current = pace(4, 2, 1000);
    // A wait proportional to what is queued on the source: slots x batches x keys / 100 ms.
    const waitOf = (each: Pace) => (each.slots * each.batches * each.batchKeys) / 100;
    for (let window = 0; window < 40; window++)
      current = nextPace(current, waitOf(current), 10, CEILINGS).pace;
    expect(waitOf(current)).toBeLessThanOrEqual(10);
    expect(waitOf(current)).toBeGreaterThan(10 * 0.7 * 0.5);
    // Once it settled, it stays between the headroom and the budget: no saw.
    const settled: number[] = [];
    for (let window = 0; window < 20; window++) {
      current = nextPace(current, waitOf(current), 10, CEILINGS).pace;
      settled.push(waitOf(current));
    }
    expect(Math.min(...settled)).toBeGreaterThanOrEqual(10 * 0.7);
    expect(Math.max(...settled)).toBeLessThanOrEqual(10);
    for (let window = 0; window < 40; window++) current = nextPace(current, 0, 10, CEILINGS).pace;
    expect(current).toEqual(pace(4, 2, 1000));
  });
});

describe('longestBusyRunMs', () => {
  const run = (startMs: number, endMs: number): BatchRun => ({ start: startMs * 1000, end: endMs * 1000 });
  it.each<[string, BatchRun[], number]>([
    ['no batch', [], 0],
    ['one batch', [run(0, 3)], 3],
    ['back to back: one run', [run(0, 3), run(3.1, 5), run(5.15, 9)], 9],
    ['a gap a client can use splits runs', [run(0, 3), run(4, 5), run(5.1, 6)], 3],
    ['out of order', [run(5.1, 6), run(0, 3), run(3.05, 5)], 6],
  ])('%s', (_, runs, expected) => {
    expect(longestBusyRunMs(runs)).toBeCloseTo(expected, 6);
  });
});
