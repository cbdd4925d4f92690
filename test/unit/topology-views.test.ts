/**
 * TopologyViews parses each CLUSTER NODES text once, whoever reads it: the jobs that share one read
 * of a node resume together, and each parse of a reply mid-rebalance costs a worker milliseconds.
 * Logic only: the node is a stand-in that answers a fixed text (topology.test.ts covers the parse).
 */
import { describe, expect, it } from 'vitest';
import type { NodeConnections } from '../../src/shared/cluster/connections.js';
import { TopologyViews } from '../../src/shared/cluster/topology-views.js';

const A = 'a'.repeat(40);
const B = 'b'.repeat(40);

function textWith(epoch: number): string {
  return [
    `${A} 127.0.0.1:7000@17000 myself,master - 0 0 ${epoch} connected 0-8191 [8192-<-${B}]`,
    `${B} 127.0.0.1:7001@17001,host-b master - 0 1700000000000 2 connected 8192-16383`,
    '',
  ].join('\n');
}

/** A node that answers CLUSTER NODES with whatever `current` holds. */
function standInNode() {
  const node = { current: textWith(1) };
  const connections = {
    run: async (_node: unknown, _what: string, command: (redis: unknown) => Promise<unknown>) =>
      command({
        call: async () => node.current,
      }),
  } as unknown as NodeConnections;
  return { node, views: new TopologyViews('default', { host: '127.0.0.1', port: 7000 }, connections) };
}

describe('TopologyViews', () => {
  it('gives every reader of one read the same parse, even while the first waits for the endpoint type', async () => {
    const { node, views } = standInNode();
    const address = { host: '127.0.0.1', port: 7000 };
    // The text names a hostname, so the first parse waits for the endpoint type (CLUSTER SHARDS,
    // answered here by the same stand-in with a text, which reads as "ip").
    const read = await Promise.all(Array.from({ length: 8 }, () => views.readView(address)));
    expect(new Set(read).size).toBe(1);
    const slotViews = await Promise.all([views.readSlotView(address, 8192), views.readSlotView(address, 1)]);
    expect(slotViews.map((view) => [view.owner, view.importingFrom])).toEqual([
      [B, B],
      [A, null],
    ]);
    // A new text is parsed anew.
    node.current = textWith(7);
    const changed = await views.readView(address);
    expect(changed).not.toBe(read[0]);
    expect(changed.myself.configEpoch).toBe(7);
  });
});
