import { describe, expect, it } from 'vitest';
import { SourceDuty } from '../../src/workers/drain.js';

describe("a drain's account of its source's time", () => {
  it('adds the time in batches and the time between rounds, by the source clock (µs)', () => {
    const duty = new SourceDuty();
    // Round 1: two batches back to back, 0-4 ms and 4-9 ms. Round 2 starts 1.5 ms after.
    duty.round([
      { start: 1_000_000, end: 1_004_000 },
      { start: 1_004_000, end: 1_009_000 },
    ]);
    duty.round([{ start: 1_010_500, end: 1_018_500 }]);
    expect(duty.summary()).toEqual({ rounds: 2, batches: 3, sourceBusyMs: 17, betweenRoundsMs: 2 });
  });

  it('counts a round without the clock (an ACL user without +time) but not its time', () => {
    const duty = new SourceDuty();
    duty.round([{ start: 0, end: 3_000 }]);
    duty.round([undefined]);
    duty.round([{ start: 10_000, end: 12_000 }]);
    expect(duty.summary()).toEqual({ rounds: 3, batches: 2, sourceBusyMs: 5, betweenRoundsMs: 7 });
  });
});
