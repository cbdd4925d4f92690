/**
 * Migration records in the control Redis. A record holds the request, the plan, each slot's step,
 * per-slot errors and counters. Keys:
 *   <prefix>:migration:<id>          hash: id, cluster, request, plan, createdAt, updatedAt, keysMoved, slotsTotal,
 *                                          control, and the limits set (maxKeysPerSecond, maxBytesPerSecond, batchKeys)
 *   <prefix>:migration:<id>:slots    hash: slot -> step
 *   <prefix>:migration:<id>:errors   hash: slot -> {"code","message","at"}
 *   <prefix>:migrations              zset: id scored by creation time, newest last
 *   <prefix>:active-slots:<cluster>  hash: slot -> id of the migration that holds it until it ends
 *   <prefix>:idempotency:<key>       string: {"bodyHash","migrationId"} for 24 h
 * Credentials never enter a record: requests name clusters, plans name node addresses.
 */
import type { Redis } from 'ioredis';
import {
  countSteps,
  LIMIT_NAMES,
  type LimitName,
  type LimitsPatch,
  MigrationControl,
  MigrationEngine,
  type MigrationLimits,
  type MigrationState,
  migrationState,
  type SlotStepCounts,
} from '../domain/migration.js';
import type { SlotMove } from '../domain/plan.js';
import { SlotStep } from '../domain/slot-migration.js';
import { formatSlotRanges } from '../domain/slots.js';
import { nodeAddress } from '../domain/topology.js';

export interface SlotError {
  readonly slot: number;
  readonly code: string;
  readonly message: string;
  readonly at: string;
}

export interface PlanGroup {
  readonly source: string;
  readonly target: string;
  readonly sourceId: string;
  readonly targetId: string;
  readonly slots: string;
  readonly slotCount: number;
}

export interface MigrationRecord {
  readonly id: string;
  readonly cluster: string;
  /** What created it: migrations (explicit moves), rebalance, reshard, drain, fix. */
  readonly kind: string;
  readonly state: MigrationState;
  readonly control: MigrationControl;
  readonly slotsTotal: number;
  readonly slots: SlotStepCounts;
  readonly keysMoved: number;
  readonly plan: readonly PlanGroup[];
  readonly request: unknown;
  readonly errors: readonly SlotError[];
  readonly createdAt: string;
  readonly updatedAt: string;
  /** When the first slot left pending; null before. */
  readonly startedAt: string | null;
  /** The operator's limits; null: not set. */
  readonly limits: { readonly [name in LimitName]: number | null };
  /** How its slots move. Records written before engines existed: keys. */
  readonly engine: MigrationEngine;
}

/** What workers read between batches: the operator may change both on a running migration. */
export interface MigrationRuntime {
  readonly control: MigrationControl;
  readonly limits: MigrationLimits;
}

export function groupMoves(moves: readonly SlotMove[]): PlanGroup[] {
  const groups = new Map<string, { move: SlotMove; slots: number[] }>();
  for (const move of moves) {
    const key = `${move.source.id}>${move.target.id}`;
    const group = groups.get(key) ?? { move, slots: [] };
    group.slots.push(move.slot);
    groups.set(key, group);
  }
  return [...groups.values()].map(({ move, slots }) => ({
    source: nodeAddress(move.source),
    target: nodeAddress(move.target),
    sourceId: move.source.id,
    targetId: move.target.id,
    slots: formatSlotRanges(slots),
    slotCount: slots.length,
  }));
}

// A stalled job's late write must not turn an ended slot back into an open one. Ending a slot also
// releases its claim in the cluster's active-slots hash (if this migration holds it). Done clears the
// error an earlier attempt recorded for the slot, even when the slot was already done.
const SET_STEP_SCRIPT = `
if ARGV[2] == '${SlotStep.Done}' then redis.call('HDEL', KEYS[4], ARGV[1]) end
-- Keys moved count even when the step comes too late to be written: a migrate job's drained step
-- (sent without waiting) can arrive after another worker's finalizer wrote done, and its keys did move.
if tonumber(ARGV[5]) > 0 then redis.call('HINCRBY', KEYS[2], 'keysMoved', ARGV[5]) end
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current == '${SlotStep.Done}' or current == '${SlotStep.Cancelled}' then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], 'updatedAt', ARGV[3])
if ARGV[2] ~= '${SlotStep.Pending}' then redis.call('HSETNX', KEYS[2], 'startedAt', ARGV[3]) end
if ARGV[2] == '${SlotStep.Done}' or ARGV[2] == '${SlotStep.Failed}' or ARGV[2] == '${SlotStep.Cancelled}' then
  if redis.call('HGET', KEYS[3], ARGV[1]) == ARGV[4] then redis.call('HDEL', KEYS[3], ARGV[1]) end
end
return 1`;

// Claims every slot for one migration, or none: returns the slots (and holders) already claimed.
const CLAIM_SCRIPT = `
local held = redis.call('HMGET', KEYS[1], unpack(ARGV, 2))
local conflicts = {}
for i, holder in ipairs(held) do
  if holder then table.insert(conflicts, ARGV[i + 1]); table.insert(conflicts, holder) end
end
if #conflicts > 0 then return conflicts end
for i = 2, #ARGV do redis.call('HSET', KEYS[1], ARGV[i], ARGV[1]) end
return {}`;

// The atomic engine gathers a source -> target pair's slots into one server task: it takes the
// slots still pending (never started by anyone) and marks them migrating, so that two workers never
// put the same slot in two tasks. The asking jobs' own slots (ARGV[6..6+n)) are taken whatever their
// step, unless ended or claimed by another start less than the grace ago (that start is on its way to
// MIGRATESLOTS): their jobs know that no task holds them now (an earlier task failed, or its starter
// died before MIGRATESLOTS). Each slot taken is stamped with the time (KEYS[3]). Nothing is taken
// unless the operator lets the migration run: a paused or cancelled migration starts no task.
// ARGV: now (ISO), now (ms), grace (ms), limit, n, own slots..., candidates...
const CLAIM_FOR_TASK_SCRIPT = `
local control = redis.call('HGET', KEYS[2], 'control')
if control and control ~= '${MigrationControl.Run}' then return {} end
local nowMs = tonumber(ARGV[2])
local grace = tonumber(ARGV[3])
local limit = tonumber(ARGV[4])
local owned = tonumber(ARGV[5])
local taken = {}
local seen = {}
for i = 6, 5 + owned do
  local step = redis.call('HGET', KEYS[1], ARGV[i])
  local claimedAt = tonumber(redis.call('HGET', KEYS[3], ARGV[i]) or '0')
  local fresh = step == '${SlotStep.Migrating}' and nowMs - claimedAt < grace
  if step and not fresh and step ~= '${SlotStep.Done}' and step ~= '${SlotStep.Failed}' and step ~= '${SlotStep.Cancelled}' then
    taken[#taken + 1] = ARGV[i]
  end
  seen[ARGV[i]] = true
end
for i = 6 + owned, #ARGV do
  if #taken >= limit then break end
  if not seen[ARGV[i]] and redis.call('HGET', KEYS[1], ARGV[i]) == '${SlotStep.Pending}' then
    taken[#taken + 1] = ARGV[i]
  end
end
for _, slot in ipairs(taken) do
  redis.call('HSET', KEYS[1], slot, '${SlotStep.Migrating}')
  redis.call('HSET', KEYS[3], slot, ARGV[2])
end
if #taken > 0 then
  redis.call('HSET', KEYS[2], 'updatedAt', ARGV[1])
  redis.call('HSETNX', KEYS[2], 'startedAt', ARGV[1])
end
return taken`;

// Gives back claimed slots a start did not put in its task (cut by a limit): pending again, for the
// next start, unless something moved them on meanwhile.
const RELEASE_CLAIMS_SCRIPT = `
for i = 1, #ARGV do
  if redis.call('HGET', KEYS[1], ARGV[i]) == '${SlotStep.Migrating}' then
    redis.call('HSET', KEYS[1], ARGV[i], '${SlotStep.Pending}')
    redis.call('HDEL', KEYS[2], ARGV[i])
  end
end
return #ARGV`;

/** The stamp of a slot whose opener moved its keys and added its finalize job (OPENING_STATES_SCRIPT). */
const HANDED_ON_STAMP = '-1';

// The keys engine's slots opened ahead by another slot's job (claimForTask with no own slots, which
// stamps each with the time): per slot, 1 while its opener holds it (stamped less than the grace
// ago: it may still be writing IMPORTING or MIGRATING for it, or moving its keys), 2 once the opener
// moved its keys and added its finalize job (stamp HANDED_ON), 0 otherwise. A slot answered 0 is
// closed to openers from now on (a pending one is marked migrating, and openers take only pending
// slots), so a slot that a job has begun to run itself is never opened by another.
// ARGV: now (ms), grace (ms), slots...
const OPENING_STATES_SCRIPT = `
local nowMs = tonumber(ARGV[1])
local grace = tonumber(ARGV[2])
local states = {}
for i = 3, #ARGV do
  local stamp = redis.call('HGET', KEYS[2], ARGV[i])
  local claimedAt = tonumber(stamp or '0')
  if stamp == '${HANDED_ON_STAMP}' then
    states[#states + 1] = 2
  elseif nowMs - claimedAt < grace then
    states[#states + 1] = 1
  else
    states[#states + 1] = 0
    if redis.call('HGET', KEYS[1], ARGV[i]) == '${SlotStep.Pending}' then
      redis.call('HSET', KEYS[1], ARGV[i], '${SlotStep.Migrating}')
    end
  end
end
return states`;

/** Where a slot opened ahead stands (SlotOpenings.openingStates). */
export const OpeningState = {
  /** No opener holds it: its own job runs it (and no opener can take it any more). */
  Free: 'free',
  /** Its opener may still be writing for it or moving its keys. */
  Held: 'held',
  /** Its opener moved its keys and added its finalize job: its own job has nothing left to do. */
  HandedOn: 'handed-on',
} as const;
export type OpeningState = (typeof OpeningState)[keyof typeof OpeningState];

const OPENING_STATES: readonly OpeningState[] = [OpeningState.Free, OpeningState.Held, OpeningState.HandedOn];

/** How long a slot claimed for a task is left to its claimer before another start may take it. */
export const TASK_CLAIM_GRACE_MS = 3_000;

const IDEMPOTENCY_TTL_SECONDS = 86_400;
/** Slots per CLAIM_SCRIPT call (Lua's unpack has a stack limit). */
const CLAIM_CHUNK = 4_000;

/** The store's Lua scripts, sent once and then called by SHA (ioredis defineCommand). */
interface ScriptCommands {
  slotfleetSetStep(...args: (string | number)[]): Promise<number>;
  slotfleetClaim(...args: (string | number)[]): Promise<string[]>;
  slotfleetClaimForTask(...args: (string | number)[]): Promise<string[]>;
  slotfleetReleaseClaims(...args: (string | number)[]): Promise<number>;
  slotfleetOpeningStates(...args: (string | number)[]): Promise<number[]>;
}

/**
 * What a slot's run writes to its migration's record: the part of the store the engine, the drain
 * and the processors need, so the unit tests can keep it in memory.
 */
export interface SlotRecords {
  /** @returns false when the slot had already ended done or cancelled: the step is not written (its keys moved still count). */
  setSlotStep(
    id: string,
    cluster: string,
    slot: number,
    step: SlotStep,
    keysMoved?: number,
  ): Promise<boolean>;
  addKeysMoved(id: string, keys: number): Promise<void>;
  recordSlotError(id: string, slot: number, error: { code: string; message: string }): Promise<void>;
}

/** What the atomic engine keeps of its server tasks in the migration's record. */
export interface ServerTaskRecords {
  /**
   * Takes slots for a new server task: `own` (the asking jobs' slots, unless ended) and, up to `limit`
   * in all, those of `candidates` still pending; marks them migrating. @returns the slots taken.
   */
  claimForTask(
    id: string,
    own: readonly number[],
    candidates: readonly number[],
    limit: number,
  ): Promise<number[]>;
  /** Gives back slots claimed but not put in a task: pending again for the next start. */
  releaseClaims(id: string, slots: readonly number[]): Promise<void>;
  /** The keys each slot held on its source when its task started: its keys moved once it is done. */
  recordTaskKeys(id: string, keys: ReadonlyMap<number, number>): Promise<void>;
  taskKeys(id: string, slots: readonly number[]): Promise<number[]>;
  /** The slot's recorded step (undefined: not a slot of this migration). */
  stepOf(id: string, slot: number): Promise<SlotStep | undefined>;
}

/**
 * The keys engine's slots opened ahead of their own jobs (SLOTFLEET_OPEN_SLOTS_TOGETHER): an opener
 * claims them (ServerTaskRecords.claimForTask, which stamps each) and says when its writes were
 * answered; a slot is assigned or dropped only once no opener may still be writing for it. On
 * Valkey, an IMPORTING that reaches the target while its SETSLOT NODE waits for a replica leaves that
 * replica IMPORTING for good (test/integration/setslot-replication.test.ts).
 */
export interface SlotOpenings {
  /** The opener gives these slots back: their own jobs run them. */
  openingsAnswered(id: string, slots: readonly number[]): Promise<void>;
  /** The opener still holds these slots (it stamps them again, so the grace runs from now). */
  renewOpenings(id: string, slots: readonly number[]): Promise<void>;
  /** The opener moved these slots' keys and added their finalize job. */
  handOn(id: string, slots: readonly number[]): Promise<void>;
  /** Where each slot stands; a Free one can no longer be claimed by an opener. */
  openingStates(id: string, slots: readonly number[]): Promise<OpeningState[]>;
  /** The slots an opener may still be writing for (Held); the others are closed to openers. */
  openingsInFlight(id: string, slots: readonly number[]): Promise<number[]>;
}

export class MigrationStore implements SlotRecords, ServerTaskRecords, SlotOpenings {
  private readonly scripts: ScriptCommands;

  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
  ) {
    redis.defineCommand('slotfleetSetStep', { numberOfKeys: 4, lua: SET_STEP_SCRIPT });
    redis.defineCommand('slotfleetClaim', { numberOfKeys: 1, lua: CLAIM_SCRIPT });
    redis.defineCommand('slotfleetClaimForTask', { numberOfKeys: 3, lua: CLAIM_FOR_TASK_SCRIPT });
    redis.defineCommand('slotfleetReleaseClaims', { numberOfKeys: 2, lua: RELEASE_CLAIMS_SCRIPT });
    redis.defineCommand('slotfleetOpeningStates', { numberOfKeys: 2, lua: OPENING_STATES_SCRIPT });
    this.scripts = redis as unknown as ScriptCommands;
  }

  private key(id: string, part?: 'slots' | 'errors' | 'task-keys' | 'task-claims'): string {
    return part ? `${this.prefix}:migration:${id}:${part}` : `${this.prefix}:migration:${id}`;
  }

  private activeKey(cluster: string): string {
    return `${this.prefix}:active-slots:${cluster}`;
  }

  /**
   * Claims the slots for a migration. Returns the slots another active migration holds (and by
   * which), claiming nothing, or an empty list when every slot is now this migration's.
   */
  async claimSlots(
    cluster: string,
    migrationId: string,
    slots: readonly number[],
  ): Promise<{ slot: number; migrationId: string }[]> {
    const conflicts: { slot: number; migrationId: string }[] = [];
    const claimed: number[] = [];
    if (slots.length === 0) return conflicts;
    for (let start = 0; start < slots.length; start += CLAIM_CHUNK) {
      const chunk = slots.slice(start, start + CLAIM_CHUNK);
      const reply = await this.scripts.slotfleetClaim(this.activeKey(cluster), migrationId, ...chunk);
      for (let i = 0; i < reply.length; i += 2)
        conflicts.push({ slot: Number(reply[i]), migrationId: reply[i + 1]! });
      if (conflicts.length > 0) break;
      claimed.push(...chunk);
    }
    if (conflicts.length > 0) await this.releaseSlots(cluster, migrationId, claimed);
    return conflicts;
  }

  /** slot -> id of the active migration holding it, for the given slots that are held. */
  async holdersOf(cluster: string, slots: readonly number[]): Promise<Map<number, string>> {
    const holders = new Map<number, string>();
    for (let start = 0; start < slots.length; start += CLAIM_CHUNK) {
      const chunk = slots.slice(start, start + CLAIM_CHUNK);
      const held = await this.redis.hmget(this.activeKey(cluster), ...chunk.map(String));
      chunk.forEach((slot, index) => {
        const holder = held[index];
        if (holder) holders.set(slot, holder);
      });
    }
    return holders;
  }

  /** slot -> id of the migration holding it, for every slot a migration has not ended. */
  async activeSlots(cluster: string): Promise<Map<number, string>> {
    const held = await this.redis.hgetall(this.activeKey(cluster));
    return new Map(Object.entries(held).map(([slot, holder]) => [Number(slot), holder]));
  }

  async releaseSlots(cluster: string, migrationId: string, slots: readonly number[]): Promise<void> {
    if (slots.length === 0) return;
    const held = await this.redis.hmget(this.activeKey(cluster), ...slots.map(String));
    const mine = slots.filter((_, index) => held[index] === migrationId);
    if (mine.length > 0) await this.redis.hdel(this.activeKey(cluster), ...mine.map(String));
  }

  /**
   * Reserves an Idempotency-Key. Returns null when the key is new (the caller goes on and calls
   * completeIdempotencyKey), or what was stored for it before.
   */
  async reserveIdempotencyKey(
    key: string,
    bodyHash: string,
  ): Promise<{ bodyHash: string; migrationId: string | null } | null> {
    const redisKey = `${this.prefix}:idempotency:${key}`;
    const value = JSON.stringify({ bodyHash, migrationId: null });
    const set = await this.redis.set(redisKey, value, 'EX', IDEMPOTENCY_TTL_SECONDS, 'NX');
    if (set === 'OK') return null;
    const stored = await this.redis.get(redisKey);
    return stored ? (JSON.parse(stored) as { bodyHash: string; migrationId: string | null }) : null;
  }

  async completeIdempotencyKey(key: string, bodyHash: string, migrationId: string): Promise<void> {
    const value = JSON.stringify({ bodyHash, migrationId });
    await this.redis.set(`${this.prefix}:idempotency:${key}`, value, 'EX', IDEMPOTENCY_TTL_SECONDS);
  }

  async forgetIdempotencyKey(key: string): Promise<void> {
    await this.redis.del(`${this.prefix}:idempotency:${key}`);
  }

  async create(input: {
    id: string;
    cluster: string;
    kind: string;
    request: unknown;
    moves: readonly SlotMove[];
    limits?: MigrationLimits;
    /** @defaultValue MigrationEngine.Keys */
    engine?: MigrationEngine;
    now?: Date;
  }): Promise<void> {
    const now = (input.now ?? new Date()).toISOString();
    const multi = this.redis.multi();
    multi.hset(this.key(input.id), {
      id: input.id,
      cluster: input.cluster,
      kind: input.kind,
      control: MigrationControl.Run,
      request: JSON.stringify(input.request),
      plan: JSON.stringify(groupMoves(input.moves)),
      createdAt: now,
      updatedAt: now,
      keysMoved: 0,
      slotsTotal: input.moves.length,
      engine: input.engine ?? MigrationEngine.Keys,
      ...limitFields(input.limits ?? {}),
    });
    if (input.moves.length > 0) {
      const steps: (string | number)[] = [];
      for (const move of input.moves) steps.push(move.slot, SlotStep.Pending);
      multi.hset(this.key(input.id, 'slots'), ...steps);
    }
    multi.zadd(`${this.prefix}:migrations`, Date.parse(now), input.id);
    await multi.exec();
  }

  async exists(id: string): Promise<boolean> {
    return (await this.redis.exists(this.key(id))) === 1;
  }

  /**
   * Records a slot's step; an ended slot is never reopened by a late writer (see SET_STEP_SCRIPT).
   * Done also clears the slot's recorded error.
   * @param keysMoved keys moved since the last count, added to the record's keysMoved with the step.
   * @returns false when the slot had already ended done or cancelled: the step is not written, but keysMoved still counts.
   */
  async setSlotStep(
    id: string,
    cluster: string,
    slot: number,
    step: SlotStep,
    keysMoved = 0,
  ): Promise<boolean> {
    const written = await this.scripts.slotfleetSetStep(
      this.key(id, 'slots'),
      this.key(id),
      this.activeKey(cluster),
      this.key(id, 'errors'),
      slot,
      step,
      new Date().toISOString(),
      id,
      keysMoved,
    );
    return written === 1;
  }

  async setControl(id: string, control: MigrationControl): Promise<void> {
    await this.redis.hset(this.key(id), 'control', control, 'updatedAt', new Date().toISOString());
  }

  /** The control and the limits in one read (workers ask for both between batches). */
  async runtime(id: string): Promise<MigrationRuntime> {
    const [control, ...limits] = await this.redis.hmget(this.key(id), 'control', ...LIMIT_NAMES);
    return {
      control: (control as MigrationControl | null) ?? MigrationControl.Run,
      limits: Object.fromEntries(
        LIMIT_NAMES.flatMap((name, index) => {
          const value = parseLimit(limits[index]);
          return value === null ? [] : [[name, value]];
        }),
      ),
    };
  }

  /** Sets the limits given as numbers, clears those given as null, keeps the others. */
  async setLimits(id: string, patch: LimitsPatch): Promise<void> {
    const cleared = LIMIT_NAMES.filter((name) => patch[name] === null);
    const multi = this.redis.multi();
    multi.hset(this.key(id), { ...limitFields(patch), updatedAt: new Date().toISOString() });
    if (cleared.length > 0) multi.hdel(this.key(id), ...cleared);
    await multi.exec();
  }

  /** Newest first; `before` is the creation time (ms) of the last item of the previous page. */
  async list(limit: number, before?: number): Promise<{ ids: string[]; next: number | null }> {
    const max = before === undefined ? '+inf' : `(${before}`;
    const rows = await this.redis.zrevrangebyscore(
      `${this.prefix}:migrations`,
      max,
      '-inf',
      'WITHSCORES',
      'LIMIT',
      0,
      limit,
    );
    const ids: string[] = [];
    let last: number | null = null;
    for (let i = 0; i < rows.length; i += 2) {
      ids.push(rows[i]!);
      last = Number(rows[i + 1]);
    }
    return { ids, next: ids.length === limit ? last : null };
  }

  async addKeysMoved(id: string, keys: number): Promise<void> {
    if (keys > 0) await this.redis.hincrby(this.key(id), 'keysMoved', keys);
  }

  async recordSlotError(id: string, slot: number, error: { code: string; message: string }): Promise<void> {
    const entry = JSON.stringify({ code: error.code, message: error.message, at: new Date().toISOString() });
    await this.redis.hset(this.key(id, 'errors'), slot, entry);
  }

  async get(id: string): Promise<MigrationRecord | null> {
    const [meta, steps, errors] = await Promise.all([
      this.redis.hgetall(this.key(id)),
      this.redis.hvals(this.key(id, 'slots')),
      this.redis.hgetall(this.key(id, 'errors')),
    ]);
    if (!meta.id) return null;
    const counts = countSteps(steps);
    const control = (meta.control as MigrationControl | undefined) ?? MigrationControl.Run;
    return {
      id: meta.id,
      cluster: meta.cluster ?? '',
      kind: meta.kind ?? 'migrations',
      state: migrationState(counts, control),
      control,
      slotsTotal: Number(meta.slotsTotal ?? 0),
      slots: counts,
      keysMoved: Number(meta.keysMoved ?? 0),
      plan: JSON.parse(meta.plan ?? '[]') as PlanGroup[],
      request: JSON.parse(meta.request ?? 'null'),
      errors: Object.entries(errors)
        .map(([slot, text]) => ({ slot: Number(slot), ...(JSON.parse(text) as Omit<SlotError, 'slot'>) }))
        .sort((a, b) => a.slot - b.slot),
      createdAt: meta.createdAt ?? '',
      updatedAt: meta.updatedAt ?? '',
      startedAt: meta.startedAt ?? null,
      limits: {
        maxKeysPerSecond: parseLimit(meta.maxKeysPerSecond),
        maxBytesPerSecond: parseLimit(meta.maxBytesPerSecond),
        batchKeys: parseLimit(meta.batchKeys),
        maxClientLatencyMs: parseLimit(meta.maxClientLatencyMs),
      },
      engine: (meta.engine as MigrationEngine | undefined) ?? MigrationEngine.Keys,
    };
  }

  async claimForTask(
    id: string,
    own: readonly number[],
    candidates: readonly number[],
    limit: number,
  ): Promise<number[]> {
    // Lua's unpack() and argument counts are bounded: a task never needs more than a chunk.
    const owned = own.slice(0, CLAIM_CHUNK);
    const nowMs = Date.now();
    const taken = await this.scripts.slotfleetClaimForTask(
      this.key(id, 'slots'),
      this.key(id),
      this.key(id, 'task-claims'),
      new Date(nowMs).toISOString(),
      nowMs,
      TASK_CLAIM_GRACE_MS,
      limit,
      owned.length,
      ...owned,
      ...candidates.slice(0, CLAIM_CHUNK),
    );
    return taken.map(Number);
  }

  async releaseClaims(id: string, slots: readonly number[]): Promise<void> {
    for (let start = 0; start < slots.length; start += CLAIM_CHUNK) {
      await this.scripts.slotfleetReleaseClaims(
        this.key(id, 'slots'),
        this.key(id, 'task-claims'),
        ...slots.slice(start, start + CLAIM_CHUNK),
      );
    }
  }

  async openingsAnswered(id: string, slots: readonly number[]): Promise<void> {
    if (slots.length > 0) await this.redis.hdel(this.key(id, 'task-claims'), ...slots.map(String));
  }

  async renewOpenings(id: string, slots: readonly number[]): Promise<void> {
    await this.stampOpenings(id, slots, String(Date.now()));
  }

  async handOn(id: string, slots: readonly number[]): Promise<void> {
    await this.stampOpenings(id, slots, HANDED_ON_STAMP);
  }

  async openingStates(id: string, slots: readonly number[]): Promise<OpeningState[]> {
    const states: OpeningState[] = [];
    for (let start = 0; start < slots.length; start += CLAIM_CHUNK) {
      const reply = await this.scripts.slotfleetOpeningStates(
        this.key(id, 'slots'),
        this.key(id, 'task-claims'),
        Date.now(),
        TASK_CLAIM_GRACE_MS,
        ...slots.slice(start, start + CLAIM_CHUNK),
      );
      states.push(...reply.map((code) => OPENING_STATES[Number(code)]!));
    }
    return states;
  }

  async openingsInFlight(id: string, slots: readonly number[]): Promise<number[]> {
    const states = await this.openingStates(id, slots);
    return slots.filter((_, index) => states[index] === OpeningState.Held);
  }

  private async stampOpenings(id: string, slots: readonly number[], stamp: string): Promise<void> {
    if (slots.length === 0) return;
    await this.redis.hset(this.key(id, 'task-claims'), ...slots.flatMap((slot) => [slot, stamp]));
  }

  async recordTaskKeys(id: string, keys: ReadonlyMap<number, number>): Promise<void> {
    if (keys.size === 0) return;
    const fields: (string | number)[] = [];
    for (const [slot, count] of keys) fields.push(slot, count);
    await this.redis.hset(this.key(id, 'task-keys'), ...fields);
  }

  async taskKeys(id: string, slots: readonly number[]): Promise<number[]> {
    if (slots.length === 0) return [];
    const counts = await this.redis.hmget(this.key(id, 'task-keys'), ...slots.map(String));
    return counts.map((count) => Number(count ?? 0));
  }

  async stepOf(id: string, slot: number): Promise<SlotStep | undefined> {
    return ((await this.redis.hget(this.key(id, 'slots'), String(slot))) ?? undefined) as
      | SlotStep
      | undefined;
  }

  /** Each slot's recorded step (only SET_STEP_SCRIPT and create() write them, always a SlotStep). */
  async slotSteps(id: string): Promise<Map<number, SlotStep>> {
    const all = await this.redis.hgetall(this.key(id, 'slots'));
    return new Map(Object.entries(all).map(([slot, step]) => [Number(slot), step as SlotStep]));
  }
}

/** The hash fields of the limits given as numbers. */
function limitFields(limits: LimitsPatch): Record<string, number> {
  return Object.fromEntries(
    LIMIT_NAMES.flatMap((name) => {
      const value = limits[name];
      return typeof value === 'number' ? [[name, value]] : [];
    }),
  );
}

function parseLimit(text: string | null | undefined): number | null {
  const value = Number(text ?? undefined);
  return Number.isSafeInteger(value) && value > 0 ? value : null;
}
