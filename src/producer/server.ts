/** The API process: wires the control Redis, the cluster adapters and the app, then listens. */
import { FlowProducer } from 'bullmq';
import { Redis } from 'ioredis';
import { ClusterRegistry } from '../shared/cluster/registry.js';
import type { Config } from '../shared/config.js';
import type { Logger } from '../shared/logger.js';
import { ConnectionRole, controlConnectionOptions } from '../shared/queue/connections.js';
import { MigrationStore } from '../shared/queue/migration-store.js';
import { type App, buildApp } from './app.js';

export interface ApiHandle {
  readonly app: App;
  /** The address the API listens on, e.g. http://127.0.0.1:8080. */
  readonly url: string;
  close(): Promise<void>;
}

export function createApi(config: Config, log: Logger): { app: App; close(): Promise<void> } {
  const connection = controlConnectionOptions(config.control, ConnectionRole.Api);
  const control = new Redis(connection);
  control.on('error', (error) => log.warn({ err: error.message }, 'control Redis connection'));
  const flowProducer = new FlowProducer({ connection, prefix: config.queuePrefix });
  flowProducer.on('error', (error) => log.warn({ err: error.message }, 'control Redis (flow producer)'));
  const clusters = new ClusterRegistry(config, log);
  const app = buildApp({
    config,
    log,
    store: new MigrationStore(control, config.queuePrefix),
    flowProducer,
    adapterFor: (cluster) => clusters.find(cluster),
  });
  return {
    app,
    async close() {
      await app.close();
      await Promise.allSettled([flowProducer.close(), clusters.close(), control.quit()]);
    },
  };
}

export async function startApi(config: Config, log: Logger): Promise<ApiHandle> {
  const { app, close } = createApi(config, log);
  const url = await app.listen({ host: config.api.host, port: config.api.port });
  log.info({ url, clusters: Object.keys(config.clusters) }, 'slotfleet API listening');
  return { app, url, close };
}
