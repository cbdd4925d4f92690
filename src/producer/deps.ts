/**
 * What the API's routes are given, and the fastify instance they are registered on. A module of its
 * own so that app.ts (which registers the routes) and the routes (which use these) both import it
 * and neither imports the other.
 */
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { Queue } from 'bullmq';
import type {
  FastifyBaseLogger,
  FastifyInstance,
  RawReplyDefaultExpression,
  RawRequestDefaultExpression,
  RawServerDefault,
} from 'fastify';
import type { ClusterAdapter } from '../shared/cluster/adapter.js';
import type { Config } from '../shared/config.js';
import type { Logger } from '../shared/logger.js';
import type { MigrationStore } from '../shared/queue/migration-store.js';
import type { ApiMetrics } from './api-metrics.js';

export interface AppDeps {
  readonly config: Config;
  readonly log: Logger;
  readonly store: MigrationStore;
  /** The migrate-slot queue the API adds jobs to. */
  readonly migrateQueue: Queue;
  /** Every slot queue, for the queue UI at /queues. */
  readonly queues: readonly Queue[];
  /** The adapter of a configured cluster, or undefined when no cluster has that name. */
  readonly adapterFor: (cluster: string) => ClusterAdapter | undefined;
  /** Resolves when the control Redis answers. */
  readonly pingControl: () => Promise<void>;
  /**
   * The control connection's last failed TLS handshake, until it is ready again. The API's commands
   * fail at once while it reconnects ("Stream isn't writeable"): only its error event says why.
   */
  readonly controlTlsFailure?: () => Error | undefined;
  /** This process's Prometheus metrics, served on GET /metrics. */
  readonly metrics: Pick<ApiMetrics, 'render'>;
}

/** The app and its plugin scopes, as routes see them: TypeBox schemas type params, bodies and replies. */
export type TypedApp = FastifyInstance<
  RawServerDefault,
  RawRequestDefaultExpression,
  RawReplyDefaultExpression,
  FastifyBaseLogger,
  TypeBoxTypeProvider
>;
