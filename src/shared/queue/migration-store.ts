/**
 * Migration records in the control Redis. A record holds the request, the plan, each slot's step,
 * per-slot errors and counters. Keys:
 *   <prefix>:migration:<id>          hash: id, cluster, request, plan, createdAt, updatedAt, keysMoved, slotsTotal
 *   <prefix>:migration:<id>:slots    hash: slot -> step
 *   <prefix>:migration:<id>:errors   hash: slot -> {"code","message","at"}
 *   <prefix>:migrations              zset: id scored by creation time, newest last
 * Credentials never enter a record: requests name clusters, plans name node addresses.
 */
import type { Redis } from 'ioredis';
import { countSteps, type MigrationState, migrationState, type SlotStepCounts } from '../domain/migration.js';
import type { SlotMove } from '../domain/plan.js';
import { SlotStep } from '../domain/slot-migration.js';
import { formatSlotRanges } from '../domain/slots.js';

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
  readonly state: MigrationState;
  readonly slotsTotal: number;
  readonly slots: SlotStepCounts;
  readonly keysMoved: number;
  readonly plan: readonly PlanGroup[];
  readonly request: unknown;
  readonly errors: readonly SlotError[];
  readonly createdAt: string;
  readonly updatedAt: string;
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
    source: `${move.source.host}:${move.source.port}`,
    target: `${move.target.host}:${move.target.port}`,
    sourceId: move.source.id,
    targetId: move.target.id,
    slots: formatSlotRanges(slots),
    slotCount: slots.length,
  }));
}

// A stalled job's late write must not turn a done slot back into an open one.
const SET_STEP_SCRIPT = `
if redis.call('HGET', KEYS[1], ARGV[1]) == '${SlotStep.Done}' then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], 'updatedAt', ARGV[3])
return 1`;

export class MigrationStore {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
  ) {}

  private key(id: string, part?: 'slots' | 'errors'): string {
    return part ? `${this.prefix}:migration:${id}:${part}` : `${this.prefix}:migration:${id}`;
  }

  async create(input: {
    id: string;
    cluster: string;
    request: unknown;
    moves: readonly SlotMove[];
    now?: Date;
  }): Promise<void> {
    const now = (input.now ?? new Date()).toISOString();
    const multi = this.redis.multi();
    multi.hset(this.key(input.id), {
      id: input.id,
      cluster: input.cluster,
      request: JSON.stringify(input.request),
      plan: JSON.stringify(groupMoves(input.moves)),
      createdAt: now,
      updatedAt: now,
      keysMoved: 0,
      slotsTotal: input.moves.length,
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

  /** Records a slot's step; a slot that reached done is never moved back by a late writer. */
  async setSlotStep(id: string, slot: number, step: SlotStep): Promise<void> {
    await this.redis.eval(
      SET_STEP_SCRIPT,
      2,
      this.key(id, 'slots'),
      this.key(id),
      slot,
      step,
      new Date().toISOString(),
    );
  }

  async addKeysMoved(id: string, keys: number): Promise<void> {
    if (keys > 0) await this.redis.hincrby(this.key(id), 'keysMoved', keys);
  }

  async recordSlotError(id: string, slot: number, error: { code: string; message: string }): Promise<void> {
    const entry = JSON.stringify({ code: error.code, message: error.message, at: new Date().toISOString() });
    await this.redis.hset(this.key(id, 'errors'), slot, entry);
  }

  async clearSlotError(id: string, slot: number): Promise<void> {
    await this.redis.hdel(this.key(id, 'errors'), String(slot));
  }

  async get(id: string): Promise<MigrationRecord | null> {
    const [meta, steps, errors] = await Promise.all([
      this.redis.hgetall(this.key(id)),
      this.redis.hvals(this.key(id, 'slots')),
      this.redis.hgetall(this.key(id, 'errors')),
    ]);
    if (!meta.id) return null;
    const counts = countSteps(steps);
    return {
      id: meta.id,
      cluster: meta.cluster ?? '',
      state: migrationState(counts),
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
    };
  }

  async slotSteps(id: string): Promise<Map<number, string>> {
    const all = await this.redis.hgetall(this.key(id, 'slots'));
    return new Map(Object.entries(all).map(([slot, step]) => [Number(slot), step]));
  }
}
