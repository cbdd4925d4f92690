/** The API process: wires the control Redis, the cluster adapters and the app, then listens. */
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { describeTlsFailure } from '../shared/cluster/error-map.js';
import { ClusterRegistry } from '../shared/cluster/registry.js';
import type { Config } from '../shared/config.js';
import type { Logger } from '../shared/logger.js';
import { trackControlRedis } from '../shared/metrics.js';
import { ConnectionRole, closeQueue, controlConnectionOptions } from '../shared/queue/connections.js';
import { MigrationStore } from '../shared/queue/migration-store.js';
import { QueueName } from '../shared/queue/names.js';
import { ApiMetrics } from './api-metrics.js';
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
  // A failed TLS handshake reaches no command (they fail at once while the connection retries): keep
  // it for the 503s, as node connections keep theirs.
  let controlTlsFailure: Error | undefined;
  control.on('error', (error) => {
    log.warn({ err: error.message }, 'control Redis connection');
    if (describeTlsFailure(error) !== undefined) controlTlsFailure = error;
  });
  control.on('ready', () => {
    controlTlsFailure = undefined;
  });
  const clusters = new ClusterRegistry(config, log);
  const store = new MigrationStore(control, config.queuePrefix);
  const adapterFor = (cluster: string) => clusters.find(cluster);
  // The migrate-slot queue takes new jobs; both are read for /metrics (queue depth by state).
  const queues = [QueueName.MigrateSlot, QueueName.FinalizeSlot].map((name) => {
    const queue = new Queue(name, { connection, prefix: config.queuePrefix });
    queue.on('error', (error) => log.warn({ queue: name, err: error.message }, 'control Redis (queue)'));
    return queue;
  });
  const metrics = new ApiMetrics({ store, adapterFor, queues, log });
  trackControlRedis(metrics.metrics, control);
  const app = buildApp({
    config,
    log,
    store,
    migrateQueue: queues[0]!,
    queues,
    adapterFor,
    pingControl: async () => {
      await control.ping();
    },
    controlTlsFailure: () => controlTlsFailure,
    metrics,
  });
  return {
    app,
    async close() {
      await app.close();
      await Promise.allSettled([
        clusters.close(),
        ...queues.map((queue) => closeQueue(queue)),
        control.quit(),
      ]);
    },
  };
}

const LOOPBACK = /^(127\.\d+\.\d+\.\d+|::1|localhost)$/;

export async function startApi(config: Config, log: Logger): Promise<ApiHandle> {
  const { app, close } = createApi(config, log);
  let host = config.api.host;
  if (!config.api.token && !LOOPBACK.test(host)) {
    log.warn(
      { requestedHost: host, host: '127.0.0.1' },
      'no SLOTFLEET_API_TOKEN: listening on loopback only; set a token to listen on other addresses',
    );
    host = '127.0.0.1';
  } else if (!config.api.token) {
    log.warn('no SLOTFLEET_API_TOKEN: the API is unauthenticated and listens on loopback only');
  }
  const url = await app.listen({ host, port: config.api.port });
  log.info({ url, clusters: Object.keys(config.clusters) }, 'slotfleet API listening');
  return { app, url, close };
}
