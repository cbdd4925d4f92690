/**
 * What only the API process reports to Prometheus, read when it is scraped: the jobs of each queue
 * by BullMQ state, and the keys each running migration still has to move, with its state (an alert
 * on keys that stop falling must tell a paused migration from a stuck one). Workers leave these out,
 * so a fleet of N workers does not report one queue N times.
 *
 * One reading serves every scrape for REFRESH_MS, however many Prometheus servers ask, and a scrape
 * waits at most READ_DEADLINE_MS for a new one: a slow cluster delays the numbers, not the scrape.
 * A number that cannot be read is left out (no sample), never reported as a stale or zero value.
 */
import { migrationHasEnded } from '../shared/domain/migration.js';
import type { Logger } from '../shared/logger.js';
import { createMetrics, type Metrics } from '../shared/metrics.js';
import { type RemainingKeysDeps, remainingKeys } from './remaining-keys.js';

/** The part of a BullMQ Queue this module uses. */
export interface CountedQueue {
  readonly name: string;
  getJobCounts(): Promise<Record<string, number>>;
}

export interface ApiMetricsSources extends RemainingKeysDeps {
  readonly queues: readonly CountedQueue[];
  readonly log: Logger;
}

export interface MetricsPage {
  readonly contentType: string;
  readonly text: string;
}

/** How long one reading of the queues and the clusters serves scrapes. @defaultValue 2000 */
export const REFRESH_MS = 2_000;
/** A scrape waits this long for a new reading, then answers with the previous one. */
const READ_DEADLINE_MS = 3_000;
/** Migrations looked at, newest first: an older one still running is not reported. */
const RECENT_MIGRATIONS = 50;

export class ApiMetrics {
  readonly metrics: Metrics = createMetrics();
  private reading: Promise<void> | undefined;
  private readAt = Number.NEGATIVE_INFINITY;
  /** keys_remaining label sets the last reading set, by migration id. */
  private reported = new Map<string, { cluster: string; migration: string }>();
  /** migration_state label sets the last reading set, by migration id. */
  private reportedStates = new Map<string, { cluster: string; migration: string; state: string }>();
  /** Migrations seen ended: their records are not read again. */
  private ended = new Set<string>();

  constructor(
    private readonly sources: ApiMetricsSources,
    private readonly refreshMs = REFRESH_MS,
  ) {}

  /** The exposition text of the API process, after a fresh enough reading. */
  async render(): Promise<MetricsPage> {
    if (this.reading === undefined && Date.now() - this.readAt >= this.refreshMs) {
      this.reading = this.read().finally(() => {
        this.reading = undefined;
        this.readAt = Date.now();
      });
    }
    if (this.reading !== undefined) {
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, READ_DEADLINE_MS);
      });
      await Promise.race([this.reading, deadline]);
      clearTimeout(timer);
    }
    const registry = this.metrics.registry;
    return { contentType: registry.contentType, text: await registry.metrics() };
  }

  private async read(): Promise<void> {
    await Promise.all([this.readQueues(), this.readRemainingKeys()]);
  }

  private async readQueues(): Promise<void> {
    const { queueJobs } = this.metrics;
    try {
      const counts = await Promise.all(this.sources.queues.map((queue) => queue.getJobCounts()));
      queueJobs.reset();
      this.sources.queues.forEach((queue, index) => {
        for (const [state, jobs] of Object.entries(counts[index] ?? {})) {
          queueJobs.set({ queue: queue.name, state }, jobs);
        }
      });
    } catch (error) {
      queueJobs.reset();
      this.sources.log.warn({ err: (error as Error).message }, 'metrics: cannot read queue counts');
    }
  }

  private async readRemainingKeys(): Promise<void> {
    const { keysRemaining, migrationState } = this.metrics;
    const next = new Map<string, { cluster: string; migration: string }>();
    const nextStates = new Map<string, { cluster: string; migration: string; state: string }>();
    try {
      const { ids } = await this.sources.store.list(RECENT_MIGRATIONS);
      this.ended = new Set(ids.filter((id) => this.ended.has(id)));
      for (const id of ids) {
        if (this.ended.has(id)) continue;
        const record = await this.sources.store.get(id);
        if (record === null) continue;
        if (migrationHasEnded(record.state)) {
          this.ended.add(id);
          continue;
        }
        const state = { cluster: record.cluster, migration: record.id, state: record.state };
        const before = this.reportedStates.get(id);
        if (before && before.state !== state.state) migrationState.remove(before);
        migrationState.set(state, 1);
        nextStates.set(record.id, state);
        const keys = await remainingKeys(this.sources, record);
        if (keys === null) continue;
        const labels = { cluster: record.cluster, migration: record.id };
        keysRemaining.set(labels, keys);
        next.set(record.id, labels);
      }
    } catch (error) {
      this.sources.log.warn({ err: (error as Error).message }, 'metrics: cannot read migrations');
    }
    for (const [id, labels] of this.reported) if (!next.has(id)) keysRemaining.remove(labels);
    this.reported = next;
    for (const [id, labels] of this.reportedStates) if (!nextStates.has(id)) migrationState.remove(labels);
    this.reportedStates = nextStates;
  }
}
