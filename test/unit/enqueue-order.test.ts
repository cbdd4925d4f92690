import { describe, expect, it } from 'vitest';
import { interleaveByPair, type NodeRef, type SlotMove } from '../../src/shared/domain/plan.js';

const node = (name: string): NodeRef => ({ id: name.repeat(40), host: '127.0.0.1', port: 7000 });
const [A, B, C, D] = ['a', 'b', 'c', 'd'].map(node) as [NodeRef, NodeRef, NodeRef, NodeRef];
const move = (slot: number, source: NodeRef, target: NodeRef): SlotMove => ({ slot, source, target });
const slotsOf = (moves: readonly SlotMove[]) => moves.map((each) => each.slot);

describe('interleaveByPair', () => {
  it.each([
    ['nothing', [], []],
    ['one pair keeps its order', [move(5, A, D), move(1, A, D), move(9, A, D)], [5, 1, 9]],
    [
      'pairs sorted by source take turns',
      [move(0, A, D), move(1, A, D), move(2, A, D), move(10, B, D), move(20, C, D), move(21, C, D)],
      [0, 10, 20, 1, 21, 2],
    ],
    [
      'the same source to two targets is two pairs',
      [move(0, A, C), move(1, A, C), move(2, A, D), move(3, A, D)],
      [0, 2, 1, 3],
    ],
  ])('%s', (_name, moves, expected) => {
    const ordered = interleaveByPair(moves);
    expect(slotsOf(ordered)).toEqual(expected);
    expect(new Set(ordered)).toEqual(new Set(moves));
  });
});
