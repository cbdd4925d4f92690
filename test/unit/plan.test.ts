import { describe, expect, it } from 'vitest';
import { type ClusterSnapshot, planExplicitMoves, snapshotFromViews } from '../../src/shared/domain/plan.js';
import { parseClusterNodes } from '../../src/shared/domain/topology.js';

const A = 'a'.repeat(40);
const B = 'b'.repeat(40);
const R = 'd'.repeat(40);

function snapshot(extra = ''): ClusterSnapshot {
  const view = parseClusterNodes(
    [
      `${A} 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-8191${extra}`,
      `${B} 127.0.0.1:7001@17001 master - 0 0 2 connected 8192-16382`,
      `${R} 127.0.0.1:7003@17003 slave ${A} 0 0 1 connected`,
    ].join('\n'),
  );
  return snapshotFromViews(view, [view]);
}

describe('planExplicitMoves', () => {
  it('moves each slot from its current owner', () => {
    const plan = planExplicitMoves(snapshot(), [{ slots: '0-1,8192', target: '127.0.0.1:7001' }]);
    expect(plan.moves.map((move) => [move.slot, move.source.id, move.target.id])).toEqual([
      [0, A, B],
      [1, A, B],
    ]);
    expect(plan.alreadyOnTarget).toEqual([8192]);
  });

  it.each([
    [[], 'INVALID_REQUEST', /moves is empty/],
    [[{ slots: '16384', target: A }], 'INVALID_REQUEST', /moves\[0\]\.slots: slot 16384 is out of range/],
    [[{ slots: '1', target: 'nosuchnode' }], 'UNKNOWN_NODE', /"nosuchnode" is not a node of this cluster/],
    [[{ slots: '1', target: '127.0.0.1:7003' }], 'NOT_MASTER', /is a replica/],
    [
      [
        { slots: '1-3', target: B },
        { slots: '3', target: B },
      ],
      'INVALID_REQUEST',
      /slot 3 appears in moves\[0\] and moves\[1\]/,
    ],
    [[{ slots: '16383', target: A }], 'SLOT_CONFLICT', /16383 have no owner/],
  ])('rejects %j with %s', (moves, code, message) => {
    expect(() => planExplicitMoves(snapshot(), moves)).toThrow(message);
    try {
      planExplicitMoves(snapshot(), moves);
    } catch (error) {
      expect((error as { code: string }).code).toBe(code);
    }
  });

  it('refuses a node that would both give and receive slots', () => {
    expect(() =>
      planExplicitMoves(snapshot(), [
        { slots: '0', target: B },
        { slots: '8192', target: A },
      ]),
    ).toThrow(/127\.0\.0\.1:7001, 127\.0\.0\.1:7000 would both give and receive|would both give and receive/);
  });

  it('refuses slots left open by an earlier migration', () => {
    expect(() => planExplicitMoves(snapshot(` [5->-${B}]`), [{ slots: '4-6', target: B }])).toThrow(
      /slots 5 are open/,
    );
  });
});
