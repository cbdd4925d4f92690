/** Slot numbers and the "0-99,4000" range syntax operators type. Pure. */
import { ErrorCode, SlotfleetError } from '../errors.js';

export const SLOT_COUNT = 16384;
export const MAX_SLOT = SLOT_COUNT - 1;

export interface SlotRange {
  readonly start: number;
  readonly end: number;
}

/**
 * Parses "0-99,4000,200-201" into sorted, distinct slots. Rejects (naming the offending part)
 * anything that is not a slot number or an ascending range inside 0..16383, and duplicates,
 * because a typo here would move data the operator did not mean to move.
 */
export function parseSlotRanges(text: string): number[] {
  const trimmed = text.trim();
  if (trimmed === '') throw invalid('slots is empty: give slot numbers or ranges such as "0-99,4000"');
  const seen = new Set<number>();
  for (const rawPart of trimmed.split(',')) {
    const part = rawPart.trim();
    const match = /^(\d{1,5})(?:\s*-\s*(\d{1,5}))?$/.exec(part);
    if (!match) throw invalid(`"${part}" is not a slot or a range of slots (expected e.g. "0-99" or "4000")`);
    const start = Number(match[1]);
    const end = match[2] === undefined ? start : Number(match[2]);
    for (const slot of [start, end]) {
      if (slot > MAX_SLOT) throw invalid(`slot ${slot} is out of range 0..${MAX_SLOT}`);
    }
    if (end < start) throw invalid(`range "${part}" runs backwards: write it as ${end}-${start}`);
    for (let slot = start; slot <= end; slot++) {
      if (seen.has(slot)) throw invalid(`slot ${slot} is given more than once`);
      seen.add(slot);
    }
  }
  return [...seen].sort((a, b) => a - b);
}

/** Sorted slots back to the compact "0-99,4000" form, for logs and responses. */
export function formatSlotRanges(slots: Iterable<number>): string {
  return toRanges(slots)
    .map((range) => (range.start === range.end ? `${range.start}` : `${range.start}-${range.end}`))
    .join(',');
}

export function toRanges(slots: Iterable<number>): SlotRange[] {
  const sorted = [...new Set(slots)].sort((a, b) => a - b);
  const ranges: SlotRange[] = [];
  for (const slot of sorted) {
    const last = ranges[ranges.length - 1];
    if (last && last.end === slot - 1) ranges[ranges.length - 1] = { start: last.start, end: slot };
    else ranges.push({ start: slot, end: slot });
  }
  return ranges;
}

export function isValidSlot(slot: number): boolean {
  return Number.isInteger(slot) && slot >= 0 && slot <= MAX_SLOT;
}

function invalid(message: string): SlotfleetError {
  return new SlotfleetError(ErrorCode.InvalidRequest, message);
}
