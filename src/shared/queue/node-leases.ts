/**
 * Caps on the slots in flight per cluster node, shared by every worker process through the control
 * Redis. MIGRATE is synchronous: the source's event loop serves nobody else until the target has
 * restored the batch, so the fleet bounds how many slots drain from one source (and into one
 * target) at once, however many workers and however much concurrency it runs.
 *
 * A slot being drained holds one lease on its source and one on its target, taken together or not
 * at all. A lease is a member of a per-node sorted set scored by its expiry (the control Redis'
 * clock, so workers' clocks do not matter):
 *   <prefix>:node-leases:<cluster>:source:<node id>   zset: holder -> expiry ms
 *   <prefix>:node-leases:<cluster>:target:<node id>   zset: holder -> expiry ms
 * Every acquire first drops expired members: the leases of a worker that died (SIGKILL, lost host)
 * free themselves LEASE_TTL_MS after its last renewal; a live holder renews every LEASE_RENEW_MS.
 * Each set expires with its last lease, so nothing is left behind.
 *
 * A holder is one run of one job (job id and BullMQ's lock token): a stalled job run again while its
 * first run still drains counts twice, as it loads the nodes twice.
 */
import type { Redis } from 'ioredis';
import type { NodeRef } from '../domain/plan.js';
import type { Logger } from '../logger.js';
import type { Metrics } from '../metrics.js';

export const LeaseRole = { Source: 'source', Target: 'target' } as const;
export type LeaseRole = (typeof LeaseRole)[keyof typeof LeaseRole];

export interface NodeCaps {
  /** Slots in flight per source node across the fleet; 0: no cap. */
  readonly perSource: number;
  /** Slots in flight per target node across the fleet; 0: no cap. */
  readonly perTarget: number;
}

export interface LeaseRequest {
  readonly cluster: string;
  readonly source: NodeRef;
  readonly target: NodeRef;
  /** Unique per run of a job, e.g. `${jobId}@${lockToken}`. */
  readonly holder: string;
}

/** What the acquire script saw, once it was done: leases held on each node, ours included. */
export interface LeaseCounts {
  readonly acquired: boolean;
  readonly sourceSlotsInFlight: number;
  readonly targetSlotsInFlight: number;
}

export interface NodeLease extends LeaseCounts {
  readonly acquired: true;
  /** How long acquire waited for it. */
  readonly waitedMs: number;
  /** Gives both leases back; safe to call more than once, never rejects. */
  release(): Promise<void>;
}

export interface NodeLeasesOptions {
  /** @defaultValue LEASE_TTL_MS */
  readonly ttlMs?: number;
  /** @defaultValue LEASE_RENEW_MS */
  readonly renewEveryMs?: number;
  /** How long acquire() retries before it gives up. @defaultValue ACQUIRE_WAIT_MS */
  readonly waitMs?: number;
  /** Fed with the leases this process holds, by node and role. */
  readonly inFlight?: Metrics['nodeSlotsInFlight'];
}

/** A lease not renewed for this long is dropped by the next acquire on its node. */
export const LEASE_TTL_MS = 30_000;
export const LEASE_RENEW_MS = 10_000;
/**
 * How long acquire() waits for busy nodes. Bounded: a job waiting here holds a unit of its worker's
 * concurrency that a job of another source -> target pair could use. A caller that got nothing
 * hands its job back to the queue for BUSY_RECHECK_MS.
 */
export const ACQUIRE_WAIT_MS = 1_000;
export const BUSY_RECHECK_MS = 250;
/** Retries of a refused acquire: backing off from the first to the last, with jitter. */
const FIRST_RETRY_MS = 10;
const MAX_RETRY_MS = 100;

// Both leases or neither. KEYS: source set, target set. ARGV: holder, ttl ms, source cap, target
// cap (0: none). Returns {acquired 0/1, leases on the source, leases on the target}. A holder that
// already has its leases (a retried call whose reply was lost) gets them again, refreshed.
const ACQUIRE_SCRIPT = `
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local counts = {}
local fits = true
for i = 1, 2 do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
  counts[i] = redis.call('ZCARD', KEYS[i])
  local cap = tonumber(ARGV[i + 2])
  if cap > 0 and counts[i] >= cap and not redis.call('ZSCORE', KEYS[i], ARGV[1]) then fits = false end
end
if not fits then return {0, counts[1], counts[2]} end
for i = 1, 2 do
  counts[i] = counts[i] + redis.call('ZADD', KEYS[i], now + tonumber(ARGV[2]), ARGV[1])
  redis.call('PEXPIRE', KEYS[i], ARGV[2])
end
return {1, counts[1], counts[2]}`;

// A running slot counts whether or not its lease lapsed meanwhile (a control Redis outage longer
// than the TTL): renewing puts it back. Returns 1 when a lease had lapsed.
const RENEW_SCRIPT = `
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local lapsed = 0
for i = 1, 2 do
  if redis.call('ZADD', KEYS[i], now + tonumber(ARGV[2]), ARGV[1]) == 1 then lapsed = 1 end
  redis.call('PEXPIRE', KEYS[i], ARGV[2])
end
return lapsed`;

interface ScriptCommands {
  slotfleetLeaseAcquire(...args: (string | number)[]): Promise<[number, number, number]>;
  slotfleetLeaseRenew(...args: (string | number)[]): Promise<number>;
}

export class NodeLeases {
  private readonly scripts: ScriptCommands;
  private readonly ttlMs: number;
  private readonly renewEveryMs: number;
  private readonly waitMs: number;
  /** acquire() calls of this process sleeping on a node, woken when this process frees a lease there. */
  private readonly sleepers = new Map<string, Set<() => void>>();

  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    private readonly caps: NodeCaps,
    private readonly options: NodeLeasesOptions = {},
  ) {
    this.ttlMs = options.ttlMs ?? LEASE_TTL_MS;
    this.renewEveryMs = options.renewEveryMs ?? LEASE_RENEW_MS;
    this.waitMs = options.waitMs ?? ACQUIRE_WAIT_MS;
    redis.defineCommand('slotfleetLeaseAcquire', { numberOfKeys: 2, lua: ACQUIRE_SCRIPT });
    redis.defineCommand('slotfleetLeaseRenew', { numberOfKeys: 2, lua: RENEW_SCRIPT });
    this.scripts = redis as unknown as ScriptCommands;
  }

  key(cluster: string, role: LeaseRole, nodeId: string): string {
    return `${this.prefix}:node-leases:${cluster}:${role}:${nodeId}`;
  }

  private keysOf(request: LeaseRequest): [string, string] {
    return [
      this.key(request.cluster, LeaseRole.Source, request.source.id),
      this.key(request.cluster, LeaseRole.Target, request.target.id),
    ];
  }

  /** One atomic attempt: both leases or neither. Starts no renewal: acquire() is for slot jobs. */
  async tryAcquire(request: LeaseRequest): Promise<LeaseCounts> {
    const [acquired, sourceSlotsInFlight, targetSlotsInFlight] = await this.scripts.slotfleetLeaseAcquire(
      ...this.keysOf(request),
      request.holder,
      this.ttlMs,
      this.caps.perSource,
      this.caps.perTarget,
    );
    return { acquired: acquired === 1, sourceSlotsInFlight, targetSlotsInFlight };
  }

  /** Extends both leases by the TTL (puts back one that lapsed). True when one had lapsed. */
  async renew(request: LeaseRequest): Promise<boolean> {
    return (
      (await this.scripts.slotfleetLeaseRenew(...this.keysOf(request), request.holder, this.ttlMs)) === 1
    );
  }

  /** Gives both leases back; idempotent, and never touches another holder's lease. */
  async release(request: LeaseRequest): Promise<void> {
    const [sourceKey, targetKey] = this.keysOf(request);
    await this.redis.multi().zrem(sourceKey, request.holder).zrem(targetKey, request.holder).exec();
  }

  /** Leases currently held on a node in a role, expired ones not counted. */
  async slotsInFlight(cluster: string, role: LeaseRole, nodeId: string): Promise<number> {
    const now = await this.redis.time();
    const nowMs = Number(now[0]) * 1000 + Math.floor(Number(now[1]) / 1000);
    return this.redis.zcount(this.key(cluster, role, nodeId), `(${nowMs}`, '+inf');
  }

  /**
   * Both leases for a slot job, waiting up to waitMs for them (retrying with backoff, at once when
   * this process frees a lease on one of the nodes), renewed until released. Undefined when the
   * nodes stayed busy: the caller hands the job back to the queue instead of holding on to it.
   */
  async acquire(request: LeaseRequest, log: Logger): Promise<NodeLease | undefined> {
    const startedAt = Date.now();
    let retryMs = FIRST_RETRY_MS;
    for (;;) {
      const counts = await this.tryAcquire(request);
      const waitedMs = Date.now() - startedAt;
      if (counts.acquired) {
        log.debug(
          {
            sourceSlotsInFlight: counts.sourceSlotsInFlight,
            targetSlotsInFlight: counts.targetSlotsInFlight,
            waitedMs,
          },
          'node leases taken',
        );
        return this.hold(request, { ...counts, acquired: true }, waitedMs, log);
      }
      const leftMs = this.waitMs - waitedMs;
      if (leftMs <= 0) {
        log.debug(
          {
            sourceSlotsInFlight: counts.sourceSlotsInFlight,
            targetSlotsInFlight: counts.targetSlotsInFlight,
            caps: this.caps,
            waitedMs,
          },
          'source or target at its cap of slots in flight',
        );
        return undefined;
      }
      await this.sleep(request, Math.min(leftMs, retryMs * (0.5 + Math.random() / 2)));
      retryMs = Math.min(retryMs * 2, MAX_RETRY_MS);
    }
  }

  private hold(
    request: LeaseRequest,
    counts: LeaseCounts & { acquired: true },
    waitedMs: number,
    log: Logger,
  ): NodeLease {
    const labels = (role: LeaseRole) => {
      const node = role === LeaseRole.Source ? request.source : request.target;
      return { cluster: request.cluster, node: `${node.host}:${node.port}`, role };
    };
    for (const role of Object.values(LeaseRole)) this.options.inFlight?.inc(labels(role));
    let renewing: Promise<void> | undefined;
    const timer = setInterval(() => {
      // A renewal waiting for a reconnecting control Redis is not followed by another.
      renewing ??= this.renew(request)
        .then(
          (lapsed) => {
            if (lapsed)
              log.warn({ ttlMs: this.ttlMs }, 'node lease had lapsed (control Redis away?): taken again');
          },
          (error: Error) => log.warn({ err: error.message }, 'renewing node leases'),
        )
        .finally(() => {
          renewing = undefined;
        });
    }, this.renewEveryMs);
    timer.unref();
    let released: Promise<void> | undefined;
    return {
      ...counts,
      waitedMs,
      release: () => {
        released ??= (async () => {
          clearInterval(timer);
          await renewing;
          try {
            await this.release(request);
          } catch (error) {
            log.warn(
              { err: (error as Error).message, ttlMs: this.ttlMs },
              'releasing node leases: they lapse by themselves',
            );
          }
          for (const role of Object.values(LeaseRole)) this.options.inFlight?.dec(labels(role));
          this.wake(request);
        })();
        return released;
      },
    };
  }

  private sleep(request: LeaseRequest, ms: number): Promise<void> {
    return new Promise((resolve) => {
      const keys = this.keysOf(request);
      const done = () => {
        clearTimeout(timer);
        for (const key of keys) {
          const sleeping = this.sleepers.get(key);
          sleeping?.delete(done);
          if (sleeping?.size === 0) this.sleepers.delete(key);
        }
        resolve();
      };
      const timer = setTimeout(done, ms);
      for (const key of keys) {
        let sleeping = this.sleepers.get(key);
        if (!sleeping) {
          sleeping = new Set();
          this.sleepers.set(key, sleeping);
        }
        sleeping.add(done);
      }
    });
  }

  /**
   * One lease freed on each node: the longest sleeper of each tries at once. Waking them all would
   * send the control Redis one doomed attempt per sleeper.
   */
  private wake(request: LeaseRequest): void {
    for (const key of this.keysOf(request)) {
      const longest = this.sleepers.get(key)?.values().next().value;
      longest?.();
    }
  }
}
