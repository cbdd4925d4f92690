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
 *
 * Waiting does not spin. A refused acquire() sleeps until a lease on one of its nodes is freed: in
 * this process (release() wakes the sleeper waiting longest on either node at once) or in another
 * one (the release script PUBLISHes the two set keys on <prefix>:node-leases:freed, and every
 * process wakes its own longest sleeper of them). A woken sleeper that is refused again, while the node it was woken
 * for still has room (its other node is the full one), passes the wake on to the next sleeper of that
 * node, so a free source -> target pair starts at once. A sleeper also looks again every
 * RECHECK_MS: a safety net for a wake lost with the subscriber connection and for the leases of a
 * dead worker, which free themselves without a release.
 */
import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { NodeRef } from '../domain/plan.js';
import { nodeAddress } from '../domain/topology.js';
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
  /** The caps for this request, asked at every attempt (a paced source's cap moves); default: the leases' own. */
  readonly caps?: () => NodeCaps;
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
  /** How long a sleeping acquire() waits for a wake before it looks again. @defaultValue RECHECK_MS */
  readonly recheckMs?: number;
  /** Fed with the leases this process holds, by node and role. */
  readonly inFlight?: Metrics['nodeSlotsInFlight'];
  /** Counts this process' attempts, taken or refused. */
  readonly attempts?: Metrics['leaseAttempts'];
}

/** What a caller of acquire() hears while it waits. */
export interface AcquireHooks {
  /** The first attempt was refused: the caller is about to sleep until a lease frees. */
  readonly onWait?: () => void;
  /** The wait is over (leases taken, or the leases were closed); called once after onWait. */
  readonly onWaitEnd?: () => void;
}

/** A lease not renewed for this long is dropped by the next acquire on its node. */
export const LEASE_TTL_MS = 30_000;
export const LEASE_RENEW_MS = 10_000;
/** A sleeper's safety-net look, when no release woke it (see the module comment). */
export const RECHECK_MS = 2_000;
/** How long a slot job handed back at shutdown waits in BullMQ's delayed set. */
export const BUSY_RECHECK_MS = 250;

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

// KEYS: source set, target set. ARGV: holder, channel, message. Only a release that freed something
// wakes the fleet's sleepers. Returns the leases freed.
const RELEASE_SCRIPT = `
local freed = redis.call('ZREM', KEYS[1], ARGV[1]) + redis.call('ZREM', KEYS[2], ARGV[1])
if freed > 0 then redis.call('PUBLISH', ARGV[2], ARGV[3]) end
return freed`;

interface ScriptCommands {
  slotfleetLeaseAcquire(...args: (string | number)[]): Promise<[number, number, number]>;
  slotfleetLeaseRenew(...args: (string | number)[]): Promise<number>;
  slotfleetLeaseRelease(...args: (string | number)[]): Promise<number>;
}

/**
 * One acquire() between two attempts. Enlisted before its attempt is sent, so that a lease freed
 * while the attempt is on its way wakes it (it then tries again at once) and is not lost.
 */
interface Sleeper {
  /** Order of enlisting: a passed-on wake goes only to those enlisted before it began. */
  readonly since: number;
  readonly keys: readonly string[];
  /** The stamp of the wake that came while the attempt was on its way. */
  wokenBy?: number;
  /** Set while asleep: ends the sleep (stamp: the wake's, none for a recheck or close()). */
  resolve?: (stamp?: number) => void;
}

export class NodeLeases {
  private readonly scripts: ScriptCommands;
  private readonly ttlMs: number;
  private readonly renewEveryMs: number;
  private readonly recheckMs: number;
  /** This process' acquire() calls asleep on a node (set key), oldest first. */
  private readonly sleepers = new Map<string, Set<Sleeper>>();
  /**
   * Nodes (set keys) this process last saw at their cap, with no release since: a new acquire() for
   * one of them queues behind the sleepers already there instead of trying first.
   */
  private readonly knownFull = new Set<string>();
  /** Orders falls asleep and wakes (see Sleeper.since). */
  private clock = 0;
  /** Names this process in its own PUBLISHes, which its subscriber then ignores. */
  private readonly instance = randomUUID().slice(0, 8);
  private subscriber?: Redis;
  private subscribed?: Promise<void>;
  private closed = false;

  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    private readonly caps: NodeCaps,
    private readonly options: NodeLeasesOptions = {},
  ) {
    this.ttlMs = options.ttlMs ?? LEASE_TTL_MS;
    this.renewEveryMs = options.renewEveryMs ?? LEASE_RENEW_MS;
    this.recheckMs = options.recheckMs ?? RECHECK_MS;
    redis.defineCommand('slotfleetLeaseAcquire', { numberOfKeys: 2, lua: ACQUIRE_SCRIPT });
    redis.defineCommand('slotfleetLeaseRenew', { numberOfKeys: 2, lua: RENEW_SCRIPT });
    redis.defineCommand('slotfleetLeaseRelease', { numberOfKeys: 2, lua: RELEASE_SCRIPT });
    this.scripts = redis as unknown as ScriptCommands;
  }

  key(cluster: string, role: LeaseRole, nodeId: string): string {
    return `${this.prefix}:node-leases:${cluster}:${role}:${nodeId}`;
  }

  /** The channel every release that freed a lease publishes its two set keys on. */
  private get channel(): string {
    return `${this.prefix}:node-leases:freed`;
  }

  private capsList(request: LeaseRequest): [number, number] {
    const caps = request.caps?.() ?? this.caps;
    return [caps.perSource, caps.perTarget];
  }

  /** A node's cap rose (its pace): its oldest sleeper in this process tries at once. */
  wakeNode(cluster: string, role: LeaseRole, nodeId: string): void {
    this.wakeKeys([this.key(cluster, role, nodeId)]);
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
      ...this.capsList(request),
    );
    this.options.attempts?.inc({ result: acquired === 1 ? 'taken' : 'refused' });
    return { acquired: acquired === 1, sourceSlotsInFlight, targetSlotsInFlight };
  }

  /** Extends both leases by the TTL (puts back one that lapsed). True when one had lapsed. */
  async renew(request: LeaseRequest): Promise<boolean> {
    return (
      (await this.scripts.slotfleetLeaseRenew(...this.keysOf(request), request.holder, this.ttlMs)) === 1
    );
  }

  /**
   * Gives both leases back and wakes the fleet's sleepers on their nodes; idempotent, and never
   * touches another holder's lease.
   */
  async release(request: LeaseRequest): Promise<void> {
    const keys = this.keysOf(request);
    const message = [this.instance, ...keys].join('\n');
    await this.scripts.slotfleetLeaseRelease(...keys, request.holder, this.channel, message);
    this.wakeKeys(keys);
  }

  /** Leases currently held on a node in a role, expired ones not counted. */
  async slotsInFlight(cluster: string, role: LeaseRole, nodeId: string): Promise<number> {
    const now = await this.redis.time();
    const nowMs = Number(now[0]) * 1000 + Math.floor(Number(now[1]) / 1000);
    return this.redis.zcount(this.key(cluster, role, nodeId), `(${nowMs}`, '+inf');
  }

  /**
   * Both leases for a slot job, renewed until released. When a node is at its cap this sleeps until
   * a lease on it frees (see the module comment): no polling, and the caller is told (hooks) so that
   * the wait does not take a unit of its worker's concurrency. Undefined only after close().
   */
  async acquire(
    request: LeaseRequest,
    log: Logger,
    hooks: AcquireHooks = {},
  ): Promise<NodeLease | undefined> {
    const startedAt = Date.now();
    const keys = this.keysOf(request);
    const subscribed = this.subscribe(log);
    let waiting = false;
    /** The wake that ended the last sleep, if one did (not a recheck). */
    let wokenBy: number | undefined;
    try {
      for (;;) {
        if (this.closed) return undefined;
        if (!waiting && keys.some((key) => this.knownFull.has(key) && this.sleepers.has(key))) {
          // Others already wait for this node: behind them, woken in turn, instead of one more refusal.
          waiting = true;
          hooks.onWait?.();
          await subscribed;
          wokenBy = await this.sleep(keys);
          continue;
        }
        const sleeper = this.enlist(keys);
        let counts: LeaseCounts;
        try {
          counts = await this.tryAcquire(request);
        } finally {
          this.delist(sleeper);
        }
        const waitedMs = Date.now() - startedAt;
        if (counts.acquired) {
          // A wake meant for whoever could use the room: where room is left, the next one tries.
          const wake = sleeper.wokenBy ?? wokenBy;
          if (wake !== undefined) this.passOn(keys, counts, wake, this.capsList(request));
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
        this.noteFull(keys, counts, this.capsList(request));
        if (!waiting) {
          waiting = true;
          hooks.onWait?.();
          log.debug(
            {
              sourceSlotsInFlight: counts.sourceSlotsInFlight,
              targetSlotsInFlight: counts.targetSlotsInFlight,
              caps: this.caps,
            },
            'source or target at its cap of slots in flight: waiting for a lease to free',
          );
        }
        if (wokenBy !== undefined) this.passOn(keys, counts, wokenBy, this.capsList(request));
        if (sleeper.wokenBy !== undefined) {
          // A lease freed while the attempt was on its way: look again at once.
          wokenBy = sleeper.wokenBy;
          continue;
        }
        await subscribed;
        wokenBy = await this.sleep(keys);
      }
    } finally {
      if (waiting) hooks.onWaitEnd?.();
    }
  }

  /** Stops every sleeping acquire() (they return undefined) and closes the subscriber connection. */
  async close(): Promise<void> {
    this.closed = true;
    for (const sleeping of [...this.sleepers.values()])
      for (const sleeper of [...sleeping]) this.wake(sleeper);
    const subscriber = this.subscriber;
    this.subscriber = undefined;
    await subscriber?.quit().catch(() => subscriber.disconnect());
  }

  /** Subscribes once to the fleet's releases; a failure leaves the rechecks to do the work. */
  private subscribe(log: Logger): Promise<void> {
    this.subscribed ??= (async () => {
      const subscriber = this.redis.duplicate();
      this.subscriber = subscriber;
      // The control connection already reports outages; the subscriber reconnects and resubscribes.
      subscriber.on('error', () => undefined);
      subscriber.on('message', (_channel: string, message: string) => {
        const [instance, ...keys] = message.split('\n');
        if (instance !== this.instance) this.wakeKeys(keys);
      });
      try {
        await subscriber.subscribe(this.channel);
      } catch (error) {
        log.warn({ err: (error as Error).message }, 'subscribing to node lease releases: rechecking instead');
      }
    })();
    return this.subscribed;
  }

  private hold(
    request: LeaseRequest,
    counts: LeaseCounts & { acquired: true },
    waitedMs: number,
    log: Logger,
  ): NodeLease {
    const labels = (role: LeaseRole) => {
      const node = role === LeaseRole.Source ? request.source : request.target;
      return { cluster: request.cluster, node: nodeAddress(node), role };
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
            this.wakeKeys(this.keysOf(request));
          }
          for (const role of Object.values(LeaseRole)) this.options.inFlight?.dec(labels(role));
        })();
        return released;
      },
    };
  }

  private enlist(keys: readonly string[]): Sleeper {
    const sleeper: Sleeper = { since: ++this.clock, keys };
    for (const key of keys) {
      let sleeping = this.sleepers.get(key);
      if (!sleeping) {
        sleeping = new Set();
        this.sleepers.set(key, sleeping);
      }
      sleeping.add(sleeper);
    }
    return sleeper;
  }

  private delist(sleeper: Sleeper): void {
    for (const key of sleeper.keys) {
      const sleeping = this.sleepers.get(key);
      sleeping?.delete(sleeper);
      if (sleeping?.size === 0) this.sleepers.delete(key);
    }
  }

  /**
   * Sleeps until a wake on one of the keys, a recheck, or close().
   * @returns the stamp of the wake that ended the sleep; undefined for a recheck or close().
   */
  private sleep(keys: readonly string[]): Promise<number | undefined> {
    const sleeper = this.enlist(keys);
    return new Promise((resolve) => {
      const timer = setTimeout(() => this.wake(sleeper), this.recheckMs * (0.75 + Math.random() / 2));
      sleeper.resolve = (stamp) => {
        clearTimeout(timer);
        resolve(stamp);
      };
      if (this.closed) this.wake(sleeper);
    });
  }

  private wake(sleeper: Sleeper, stamp?: number): void {
    this.delist(sleeper);
    if (sleeper.resolve) sleeper.resolve(stamp);
    else sleeper.wokenBy ??= stamp;
  }

  /**
   * A lease freed on these nodes: the sleeper enlisted longest on either tries at once (one freed
   * lease, one attempt). Waking them all would send the control Redis one doomed attempt per sleeper.
   */
  private wakeKeys(keys: readonly string[]): void {
    for (const key of keys) this.knownFull.delete(key);
    const stamp = ++this.clock;
    this.wakeOldest(keys, stamp);
  }

  /**
   * A woken attempt was refused, or it succeeded and room is left. Where a node it was woken for
   * still has room, the next sleeper of that node that does not need the full one (if any), enlisted
   * since before the wake, tries instead: a sleeper that needs the full node would be refused too.
   */
  private passOn(
    keys: readonly [string, string],
    counts: LeaseCounts,
    stamp: number,
    [perSource, perTarget]: readonly [number, number],
  ): void {
    const room = [
      perSource === 0 || counts.sourceSlotsInFlight < perSource,
      perTarget === 0 || counts.targetSlotsInFlight < perTarget,
    ];
    this.wakeOldest(
      keys.filter((_, index) => room[index]),
      stamp,
      keys.filter((_, index) => !room[index]),
    );
  }

  /** Remembers which of the keys a refused attempt found at their cap. */
  private noteFull(
    keys: readonly [string, string],
    counts: LeaseCounts,
    caps: readonly [number, number],
  ): void {
    const inFlight = [counts.sourceSlotsInFlight, counts.targetSlotsInFlight];
    keys.forEach((key, index) => {
      if (caps[index]! > 0 && inFlight[index]! >= caps[index]!) this.knownFull.add(key);
    });
  }

  private wakeOldest(keys: readonly string[], stamp: number, fullKeys: readonly string[] = []): void {
    let oldest: Sleeper | undefined;
    for (const key of keys) {
      // Sets keep the order of enlisting: the first fitting one is that key's oldest.
      for (const sleeper of this.sleepers.get(key) ?? []) {
        if (sleeper.since >= stamp) break;
        if (fullKeys.some((full) => sleeper.keys.includes(full))) continue;
        if (oldest === undefined || sleeper.since < oldest.since) oldest = sleeper;
        break;
      }
    }
    if (oldest) this.wake(oldest, stamp);
  }
}
