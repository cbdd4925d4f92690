/** One ClusterAdapter per configured cluster, created on first use and closed together. */
import type { Config } from '../config.js';
import type { Logger } from '../logger.js';
import { ClusterAdapter } from './adapter.js';

/** Commands other than MIGRATE that get no reply in this time fail (MIGRATE gets its own timeout on top). */
export const NODE_COMMAND_TIMEOUT_MS = 10_000;

export class ClusterRegistry {
  private readonly adapters = new Map<string, ClusterAdapter>();

  constructor(
    private readonly config: Config,
    private readonly log: Logger,
  ) {}

  /** @returns undefined when no cluster of that name is configured. */
  find(cluster: string): ClusterAdapter | undefined {
    let adapter = this.adapters.get(cluster);
    if (adapter) return adapter;
    const endpoint = Object.hasOwn(this.config.clusters, cluster) ? this.config.clusters[cluster] : undefined;
    if (!endpoint) return undefined;
    adapter = new ClusterAdapter(cluster, endpoint, {
      commandTimeoutMs: NODE_COMMAND_TIMEOUT_MS,
      logger: this.log.child({ cluster }),
    });
    this.adapters.set(cluster, adapter);
    return adapter;
  }

  get(cluster: string): ClusterAdapter {
    const adapter = this.find(cluster);
    if (!adapter) throw new Error(`cluster "${cluster}" is not configured in this process`);
    return adapter;
  }

  async close(): Promise<void> {
    const adapters = [...this.adapters.values()];
    this.adapters.clear();
    await Promise.all(adapters.map((adapter) => adapter.close()));
  }
}
