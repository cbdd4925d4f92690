/**
 * A worker process: one BullMQ Worker per slot queue, sharing one set of per-node cluster
 * connections (so concurrent slots' commands to a node are pipelined), plus /metrics.
 */
import { createServer, type Server } from 'node:http';
import { Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { ClusterRegistry } from '../shared/cluster/registry.js';
import type { Config } from '../shared/config.js';
import type { MigrationControl } from '../shared/domain/migration.js';
import { SlotPhase } from '../shared/domain/slot-migration.js';
import type { Logger } from '../shared/logger.js';
import { createMetrics, type Metrics } from '../shared/metrics.js';
import { ConnectionRole, controlConnectionOptions } from '../shared/queue/connections.js';
import { MigrationStore } from '../shared/queue/migration-store.js';
import { QueueName, type SlotJobData } from '../shared/queue/names.js';
import { createSlotProcessor, type ProcessorDeps } from './processors.js';

export interface WorkerHandle {
  readonly metrics: Metrics;
  /** Port /metrics listens on (0 when disabled). */
  readonly metricsPort: number;
  /** Stops taking jobs, lets jobs in flight finish, closes every connection. */
  close(): Promise<void>;
}

export interface WorkerOptions {
  /** Serve /metrics on config.worker.metricsPort. @defaultValue true */
  readonly serveMetrics?: boolean;
  readonly beforeAction?: ProcessorDeps['beforeAction'];
}

/** How long a worker trusts the pause/cancel state it read. */
const CONTROL_CACHE_MS = 250;
/** A slot job may be re-run after a crash as often as it takes: every step is idempotent. */
const MAX_STALLED_COUNT = 10;

export async function startWorker(
  config: Config,
  log: Logger,
  options: WorkerOptions = {},
): Promise<WorkerHandle> {
  const connection = controlConnectionOptions(config.control, ConnectionRole.Worker);
  const control = new Redis(connection);
  control.on('error', (error) => log.warn({ err: error.message }, 'control Redis connection'));
  const clusters = new ClusterRegistry(config, log);
  const metrics = createMetrics();
  const store = new MigrationStore(control, config.queuePrefix);
  // Slot jobs ask for their migration's control between batches: one read per migration per
  // CONTROL_CACHE_MS instead of one per batch.
  const controlCache = new Map<string, { control: Promise<MigrationControl>; at: number }>();
  const controlOf = (migrationId: string): Promise<MigrationControl> => {
    const cached = controlCache.get(migrationId);
    if (cached && Date.now() - cached.at < CONTROL_CACHE_MS) return cached.control;
    const control = store.control(migrationId);
    controlCache.set(migrationId, { control, at: Date.now() });
    control.catch(() => controlCache.delete(migrationId));
    return control;
  };
  const deps: ProcessorDeps = {
    adapterFor: (cluster) => clusters.get(cluster),
    store,
    controlOf,
    metrics,
    settings: config.worker,
    log,
    ...(options.beforeAction ? { beforeAction: options.beforeAction } : {}),
  };
  const workerOptions = {
    connection,
    prefix: config.queuePrefix,
    concurrency: config.worker.concurrency,
    maxStalledCount: MAX_STALLED_COUNT,
  };
  const workers = [
    new Worker<SlotJobData>(
      QueueName.MigrateSlot,
      createSlotProcessor(SlotPhase.Migrate, deps),
      workerOptions,
    ),
    new Worker<SlotJobData>(
      QueueName.FinalizeSlot,
      createSlotProcessor(SlotPhase.Finalize, deps),
      workerOptions,
    ),
  ];
  for (const worker of workers) {
    worker.on('error', (error) => log.warn({ queue: worker.name, err: error.message }, 'worker error'));
  }
  await Promise.all(workers.map((worker) => worker.waitUntilReady()));

  let server: Server | undefined;
  let metricsPort = 0;
  if (options.serveMetrics ?? true) {
    server = createServer((request, response) => {
      if (request.url === '/metrics') {
        metrics.registry.metrics().then(
          (text) => response.writeHead(200, { 'content-type': metrics.registry.contentType }).end(text),
          () => response.writeHead(500).end(),
        );
      } else response.writeHead(404).end();
    });
    await new Promise<void>((resolve) => server!.listen(config.worker.metricsPort, config.api.host, resolve));
    const bound = server.address();
    metricsPort = typeof bound === 'object' && bound ? bound.port : 0;
  }
  log.info(
    { concurrency: config.worker.concurrency, batchKeys: config.worker.batchKeys, metricsPort },
    'slotfleet worker ready',
  );

  let closing: Promise<void> | undefined;
  return {
    metrics,
    metricsPort,
    close() {
      closing ??= (async () => {
        await Promise.all(workers.map((worker) => worker.close()));
        await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
        await clusters.close();
        await control.quit().catch(() => control.disconnect());
      })();
      return closing;
    },
  };
}
