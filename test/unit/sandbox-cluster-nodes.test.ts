/**
 * The sandbox reads CLUSTER NODES with the domain's parser: the entries its waits use, and the
 * domain helpers behind their failing and joining flags.
 */
import { describe, expect, it } from 'vitest';
import { parseClusterNodes, SLOT_COUNT, slotOwners } from '../../src/sandbox/cluster-nodes.js';
import { isFlaggedFailing, isJoining } from '../../src/shared/domain/topology.js';

const A = 'a'.repeat(40);
const B = 'b'.repeat(40);
const C = 'c'.repeat(40);
const R = 'd'.repeat(40);
const H = 'e'.repeat(40);

const SAMPLE = [
  `${A} 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460 [5461-<-${B}]`,
  `${B} 127.0.0.1:7001@17001,host-b master - 0 1700000000000 2 connected 5461-10922`,
  `${C} 127.0.0.1:7002@17002 master,fail - 0 1700000000000 3 disconnected 10923-16383`,
  `${R} 127.0.0.1:7003@17003 slave,fail? ${A} 0 1700000000000 1 connected`,
  `${H} :0@0 handshake,noaddr - 0 0 0 disconnected`,
  '',
].join('\n');

describe('the sandbox entries of CLUSTER NODES', () => {
  const entries = parseClusterNodes(SAMPLE);
  const entry = (id: string) => entries.find((candidate) => candidate.id === id)!;

  it.each([
    [
      'myself, a master with an importing slot',
      A,
      { role: 'master', myself: true, slots: 5461, failing: false, joining: false },
    ],
    [
      'a master announcing a hostname',
      B,
      { host: '127.0.0.1', port: 7001, slots: 5462, linkConnected: true, failing: false },
    ],
    ['a master flagged fail', C, { slots: 5461, failing: true, joining: false, linkConnected: false }],
    ['a replica flagged fail?', R, { role: 'replica', masterId: A, slots: 0, failing: true }],
    ['a node in handshake', H, { role: 'replica', masterId: null, failing: false, joining: true }],
  ])('%s', (_, id, expected) => {
    expect(entry(id)).toMatchObject(expected);
  });

  it('keeps the owned ranges and leaves the open-slot markers out', () => {
    expect(entry(A).slotRanges).toEqual([{ start: 0, end: 5460 }]);
  });

  it('maps every slot to the master listing it', () => {
    const owners = slotOwners(entries);
    expect(owners).toHaveLength(SLOT_COUNT);
    expect([owners[0], owners[5460], owners[5461], owners[16383]]).toEqual([A, A, B, C]);
  });

  it('throws on a reply the domain cannot read, instead of skipping the line', () => {
    expect(() => parseClusterNodes(`${A} 127.0.0.1:7000@17000 myself,master`)).toThrow(/CLUSTER NODES/);
  });
});

describe('isFlaggedFailing and isJoining', () => {
  it.each([
    [['master'], false, false],
    [['myself', 'master'], false, false],
    [['master', 'fail'], true, false],
    [['slave', 'fail?'], true, false],
    [['handshake'], false, true],
    [['noaddr', 'master'], false, true],
    [['master', 'fail', 'noaddr'], true, true],
  ])('flags %j: failing %s, joining %s', (flags, failing, joining) => {
    expect(isFlaggedFailing({ flags })).toBe(failing);
    expect(isJoining({ flags })).toBe(joining);
  });
});
