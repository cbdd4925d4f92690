/**
 * One slot full of keys, moved by the slot engine directly (no queue): the fixture of the tests that
 * interrupt, fail over or disturb a single slot's migration on a real cluster.
 */
import { type DatasetManifest, seedDataset } from '../../../src/sandbox/index.js';
import { ClusterAdapter, type MigrateOptions } from '../../../src/shared/cluster/adapter.js';
import type { NodeRef } from '../../../src/shared/domain/plan.js';
import type { SlotJobData } from '../../../src/shared/queue/names.js';
import { allViews, type Stack } from './stack.js';

/**
 * Seeds `keys` keys of every type (half with a TTL) under the hash tag {tag}, and returns the job
 * data moving their slot from its owner to the next master by port.
 */
export async function seedOneSlot(
  stack: Stack,
  options: { tag: string; keys: number; migrationId: string },
): Promise<{ data: SlotJobData; manifest: DatasetManifest; slot: number }> {
  const { tag, keys, migrationId } = options;
  const manifest = await seedDataset(stack.cluster.seedUrl, {
    keys,
    types: 'mixed',
    ttlFraction: 0.5,
    hashTag: `{${tag}}`,
    prefix: tag,
  });
  const { data, slot } = await moveToNextMaster(stack, `{${tag}}`, migrationId);
  return { data, manifest, slot };
}

/** The job data moving the slot of a hash tag ("{tag}") from its owner to the next master by port. */
export async function moveToNextMaster(
  stack: Stack,
  hashTag: string,
  migrationId: string,
): Promise<{ data: SlotJobData; slot: number }> {
  const client = stack.cluster.nodes[0]!.client();
  const slot = Number(await client.call('CLUSTER', 'KEYSLOT', hashTag));
  client.disconnect();
  const view = (await allViews(stack.cluster))[0]!;
  const masters = view.nodes.filter((node) => node.role === 'master').sort((a, b) => a.port - b.port);
  const ownerIndex = masters.findIndex((node) => node.slots.some((r) => slot >= r.start && slot <= r.end));
  const owner = masters[ownerIndex]!;
  const target = masters[(ownerIndex + 1) % masters.length]!;
  const ref = (node: typeof owner): NodeRef => ({ id: node.id, host: node.host, port: node.port });
  return { data: { migrationId, cluster: 'default', slot, source: ref(owner), target: ref(target) }, slot };
}

/** The real adapter, with a hook run once before the n-th MIGRATE batch (a failover, a SIGSTOP...). */
export class HookedAdapter extends ClusterAdapter {
  batches = 0;
  hook: { atBatch: number; run: () => void | Promise<void> } | undefined;

  override async migrateNextBatch(
    source: NodeRef,
    target: NodeRef,
    slot: number,
    limits: { maxKeys: number; maxBytes: number },
    options: MigrateOptions,
  ) {
    this.batches++;
    const hook = this.hook;
    if (hook && this.batches === hook.atBatch) {
      this.hook = undefined;
      await hook.run();
    }
    return super.migrateNextBatch(source, target, slot, limits, options);
  }
}
