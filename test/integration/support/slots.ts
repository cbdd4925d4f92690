/** Which slots a master owns, read straight from a node (test oracle, independent of the planner). */
import type { SandboxCluster } from '../../../src/sandbox/index.js';
import { parseClusterNodes, slotOwners } from '../../../src/sandbox/index.js';

export async function slotsOf(cluster: SandboxCluster, masterId: string): Promise<number[]> {
  const client = cluster.process(masterId).client();
  try {
    const owners = slotOwners(parseClusterNodes(String(await client.call('CLUSTER', 'NODES'))));
    return owners.flatMap((owner, slot) => (owner === masterId ? [slot] : []));
  } finally {
    client.disconnect();
  }
}
