/**
 * What the slot engine's unit tests share: a slot full of keys on the in-memory cluster, the
 * engine's and the processors' dependencies around it, a stand-in for BullMQ's Job (its data, id,
 * attempts, moveToDelayed and updateData: bookkeeping, not Redis behaviour), the retry loop BullMQ
 * runs, and the checks that a move lost nothing and left the cluster agreeing.
 */
import { DelayedError, type Job, UnrecoverableError } from 'bullmq';
import { MigrationControl } from '../../src/shared/domain/migration.js';
import type { SlotAction } from '../../src/shared/domain/slot-migration.js';
import { isRetryable } from '../../src/shared/errors.js';
import { createLogger } from '../../src/shared/logger.js';
import { createMetrics, type Metrics } from '../../src/shared/metrics.js';
import type { SlotJobData } from '../../src/shared/queue/names.js';
import type { DrainSettings } from '../../src/workers/drain.js';
import type { ProcessorDeps } from '../../src/workers/processors.js';
import type { SlotRunDeps } from '../../src/workers/slot-run.js';
import { keySlot, type MemoryCluster, type StoredKey, type ValueType } from './memory-cluster.js';
import type { MemorySlotRecords } from './memory-records.js';

export const MIGRATION_ID = 'mig-memory-1';
export const CLUSTER_NAME = 'memory';

/** Small batches, one in flight: a drain of 60 keys takes 9 rounds, so there is a "between". */
export const SMALL_BATCHES: DrainSettings = {
  batchKeys: 7,
  batchesInFlight: 1,
  batchBytes: 0,
  migrateTimeoutMs: 5_000,
};

export const silentLog = createLogger({ level: 'silent', name: 'slot-engine-test' });

export interface SeededSlot {
  readonly slot: number;
  readonly data: SlotJobData;
  readonly keys: readonly StoredKey[];
}

const TYPES: readonly ValueType[] = ['string', 'list', 'set', 'hash', 'zset'];

/** A hash tag starting with `prefix` whose slot the node at `port` serves. */
export function tagServedBy(cluster: MemoryCluster, port: number, prefix: string): string {
  for (let index = 0; ; index++) {
    const tag = `${prefix}-${index}`;
    if (cluster.ownerOf(keySlot(`{${tag}}`)).port === port) return tag;
  }
}

/**
 * `keys` keys of every type under the hash tag {tag}, every other one with a TTL of an hour, on the
 * slot's owner; the job data moves the slot to the next master by port (or to `targetId`).
 */
export function seedSlot(
  cluster: MemoryCluster,
  options: { tag: string; keys?: number; migrationId?: string; targetId?: string },
): SeededSlot {
  const slot = keySlot(`{${options.tag}}`);
  const keys = Array.from({ length: options.keys ?? 60 }, (_, index) =>
    cluster.set(
      `{${options.tag}}:${String(index).padStart(4, '0')}`,
      { type: TYPES[index % TYPES.length]!, content: `${options.tag}-value-${index}` },
      index % 2 === 0 ? { ttlMs: 3_600_000 } : {},
    ),
  );
  const source = cluster.ownerOf(slot);
  const masters = cluster.masters().sort((left, right) => left.port - right.port);
  const target = options.targetId
    ? cluster.node(options.targetId)
    : masters[(masters.indexOf(source) + 1) % masters.length]!;
  return {
    slot,
    keys,
    data: {
      migrationId: options.migrationId ?? MIGRATION_ID,
      cluster: CLUSTER_NAME,
      slot,
      source: source.ref,
      target: target.ref,
    },
  };
}

/**
 * What is wrong after a slot moved to `ownerId`: a key missing from it or with another value or
 * TTL, a key of the slot left on another master, a node (replicas included, once gossip settled)
 * naming another owner, a slot left open anywhere.
 */
export function movedProblems(cluster: MemoryCluster, seeded: SeededSlot, ownerId: string): string[] {
  const problems = cluster.disagreements(new Map([[seeded.slot, ownerId]]));
  const owner = cluster.node(ownerId);
  for (const key of seeded.keys) {
    const held = owner.lookup(key.name);
    const name = key.name.toString();
    if (!held) problems.push(`${name} missing on ${owner.address}`);
    else if (JSON.stringify(held.value) !== JSON.stringify(key.value)) problems.push(`${name} changed value`);
    else if (held.expiresAtMs !== key.expiresAtMs) problems.push(`${name} changed TTL`);
  }
  for (const master of cluster.masters()) {
    if (master.id !== ownerId && master.countKeysInSlot(seeded.slot) > 0) {
      problems.push(`${master.address} still holds ${master.countKeysInSlot(seeded.slot)} keys of the slot`);
    }
  }
  return problems;
}

/** Every seeded key still on the source, and the slot neither open nor claimed elsewhere. */
export function untouchedProblems(cluster: MemoryCluster, seeded: SeededSlot): string[] {
  return movedProblems(cluster, seeded, seeded.data.source.id);
}

export interface EngineOptions {
  readonly settings?: Partial<DrainSettings>;
  readonly beforeAction?: SlotRunDeps['beforeAction'];
  readonly isPaused?: SlotRunDeps['isPaused'];
  readonly metrics?: Metrics;
}

export function engineDeps(
  cluster: MemoryCluster,
  store: MemorySlotRecords,
  options: EngineOptions = {},
): SlotRunDeps {
  return {
    cluster,
    store,
    metrics: options.metrics ?? createMetrics({ defaultMetrics: false }),
    settings: { ...SMALL_BATCHES, ...options.settings },
    log: silentLog,
    ...(options.beforeAction ? { beforeAction: options.beforeAction } : {}),
    ...(options.isPaused ? { isPaused: options.isPaused } : {}),
  };
}

/** A beforeAction that throws once, before the n-th action of a kind (the first by default). */
export function crashBefore(kind: SlotAction['kind'], occurrence = 1) {
  let seen = 0;
  const performed: string[] = [];
  return {
    performed,
    hook: (action: SlotAction) => {
      if (action.kind === kind && ++seen === occurrence) throw new Crash(`crash before ${kind}`);
      performed.push(action.kind);
    },
  };
}

/** A worker that died: not a SlotfleetError, so BullMQ's stalled-job check re-runs the job. */
export class Crash extends Error {
  override name = 'Crash';
}

export interface Processors {
  readonly deps: ProcessorDeps;
  /** What controlOf answers: the operator's wish, changed by the tests. */
  control: MigrationControl;
  /** Slots handed to the finalize batcher. */
  readonly finalizeQueue: SlotJobData[];
  readonly metrics: Metrics;
}

export function processorDeps(
  cluster: MemoryCluster,
  store: MemorySlotRecords,
  options: { settings?: Partial<DrainSettings>; beforeAction?: SlotRunDeps['beforeAction'] } = {},
): Processors {
  const metrics = createMetrics({ defaultMetrics: false });
  const finalizeQueue: SlotJobData[] = [];
  const processors: Processors = {
    control: MigrationControl.Run,
    finalizeQueue,
    metrics,
    deps: {
      adapterFor: () => cluster,
      store,
      metrics,
      settings: { ...SMALL_BATCHES, ...options.settings },
      log: silentLog,
      controlOf: async () => processors.control,
      enqueueFinalize: async (data) => {
        finalizeQueue.push(data);
      },
      ...(options.beforeAction ? { beforeAction: options.beforeAction } : {}),
    },
  };
  return processors;
}

/**
 * The part of BullMQ's Job a processor uses. moveToDelayed and updateData record what they were
 * asked; attemptsMade is advanced by runAttempt as BullMQ would after a failed attempt.
 */
export class FakeJob<T> {
  attemptsMade = 0;
  readonly opts: { attempts: number };
  delayedUntil: number | undefined;
  readonly updates: T[] = [];

  constructor(
    public data: T,
    readonly id: string,
    attempts = 8,
  ) {
    this.opts = { attempts };
  }

  async moveToDelayed(timestamp: number, _token?: string): Promise<void> {
    this.delayedUntil = timestamp;
  }

  async updateData(data: T): Promise<void> {
    this.updates.push(data);
    this.data = data;
  }

  asJob(): Job<T> {
    return this as unknown as Job<T>;
  }
}

export type AttemptOutcome<R> =
  | { readonly status: 'completed'; readonly value: R }
  | { readonly status: 'delayed' }
  | { readonly status: 'failed'; readonly error: Error; readonly retried: boolean };

/** One attempt of a job, ended as BullMQ would end it. */
export async function runAttempt<T, R>(
  processor: (job: Job<T>, token?: string) => Promise<R>,
  job: FakeJob<T>,
): Promise<AttemptOutcome<R>> {
  try {
    return { status: 'completed', value: await processor(job.asJob(), 'token') };
  } catch (error) {
    if (error instanceof DelayedError) return { status: 'delayed' };
    job.attemptsMade++;
    const retried = !(error instanceof UnrecoverableError) && job.attemptsMade < job.opts.attempts;
    return { status: 'failed', error: error as Error, retried };
  }
}

/**
 * Runs `attempt` as BullMQ retries a job: again after a retryable failure (gossip settles during
 * the backoff), at most `attempts` times. Returns the errors seen on the way.
 */
export async function retryLikeBullmq<R>(
  cluster: MemoryCluster,
  attempt: () => Promise<R>,
  attempts = 8,
): Promise<{ value: R; errors: Error[] }> {
  const errors: Error[] = [];
  for (let made = 1; ; made++) {
    try {
      return { value: await attempt(), errors };
    } catch (error) {
      errors.push(error as Error);
      if (!isRetryable(error) || made >= attempts) throw error;
      cluster.settle();
    }
  }
}
