/**
 * Token buckets in the control Redis, shared by every worker of the fleet: one per migration,
 * source node and unit (keys, bytes). Keys:
 *   <prefix>:throttle:<migration id>:<source host:port>:keys    hash: tokens, at (ms, the server's clock)
 *   <prefix>:throttle:<migration id>:<source host:port>:bytes   the same, in bytes
 * A bucket holds at most one second's worth of its rate and starts full. Work is counted after it
 * is done (a MIGRATE batch cannot be undone), so a bucket may go below zero: the taker is told how
 * long until it is back at zero, and waits that long before its next round. A taker that comes
 * along meanwhile adds its own debt and waits longer, so the fleet together stays at the rate.
 */
import type { Redis } from 'ioredis';

/**
 * KEYS: the keys bucket, the bytes bucket. ARGV: keys per second (0: not limited), keys taken,
 * bytes per second (0: not limited), bytes taken. Returns the milliseconds until both buckets are
 * back at zero (0: go on now).
 * The server's clock (TIME), not the workers': hosts of a fleet disagree by more than a round lasts.
 * TIME in a script that writes needs effects replication, the only mode of Redis 7.
 * A bucket expires once it would be full again: a missing bucket is a full one.
 */
const TAKE_SCRIPT = `
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local waitMs = 0
for i = 1, 2 do
  local rate = tonumber(ARGV[i * 2 - 1])
  if rate > 0 then
    local state = redis.call('HMGET', KEYS[i], 'tokens', 'at')
    local tokens = tonumber(state[1]) or rate
    local at = tonumber(state[2]) or now
    tokens = math.min(rate, tokens + math.max(0, now - at) * rate / 1000) - tonumber(ARGV[i * 2])
    redis.call('HSET', KEYS[i], 'tokens', tostring(tokens), 'at', tostring(now))
    redis.call('PEXPIRE', KEYS[i], math.ceil((rate - tokens) * 1000 / rate) + 1000)
    if tokens < 0 then waitMs = math.max(waitMs, math.ceil(-tokens * 1000 / rate)) end
  end
end
return waitMs`;

/** A rate and what was taken from its bucket; a rate of undefined: not limited. */
export interface BucketTake {
  readonly perSecond: number | undefined;
  readonly taken: number;
}

interface ScriptCommands {
  slotfleetTakeTokens(...args: (string | number)[]): Promise<number>;
}

export class TokenBuckets {
  private readonly scripts: ScriptCommands;

  constructor(
    redis: Redis,
    private readonly prefix: string,
  ) {
    redis.defineCommand('slotfleetTakeTokens', { numberOfKeys: 2, lua: TAKE_SCRIPT });
    this.scripts = redis as unknown as ScriptCommands;
  }

  /**
   * Takes what a round moved from the source's buckets (0 to only look) and returns how many
   * milliseconds to wait before the next round.
   */
  take(migrationId: string, source: string, keys: BucketTake, bytes: BucketTake): Promise<number> {
    const key = `${this.prefix}:throttle:${migrationId}:${source}`;
    return this.scripts.slotfleetTakeTokens(
      `${key}:keys`,
      `${key}:bytes`,
      keys.perSecond ?? 0,
      keys.taken,
      bytes.perSecond ?? 0,
      bytes.taken,
    );
  }
}
