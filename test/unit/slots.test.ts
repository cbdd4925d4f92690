import { describe, expect, it } from 'vitest';
import { formatSlotRanges, parseSlotRanges } from '../../src/shared/domain/slots.js';

describe('parseSlotRanges', () => {
  it.each([
    ['0', [0]],
    ['0-3', [0, 1, 2, 3]],
    ['5, 1-2 ,16383', [1, 2, 5, 16383]],
    ['7-7', [7]],
  ])('parses %j', (text, expected) => {
    expect(parseSlotRanges(text)).toEqual(expected);
  });

  it.each([
    ['', /empty/],
    ['16384', /slot 16384 is out of range 0\.\.16383/],
    ['0-16384', /slot 16384 is out of range/],
    ['-1', /"-1" is not a slot/],
    ['a-b', /"a-b" is not a slot/],
    ['10-5', /runs backwards: write it as 5-10/],
    ['1,1', /slot 1 is given more than once/],
    ['0-5,3', /slot 3 is given more than once/],
    ['1.5', /not a slot/],
  ])('rejects %j naming the problem', (text, message) => {
    expect(() => parseSlotRanges(text)).toThrow(message);
  });

  it('round-trips through formatSlotRanges', () => {
    expect(formatSlotRanges([4000, 0, 1, 2, 99, 98])).toBe('0-2,98-99,4000');
    expect(parseSlotRanges(formatSlotRanges([3, 9, 10, 11]))).toEqual([3, 9, 10, 11]);
  });
});
