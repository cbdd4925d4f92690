/**
 * The pace of each source node (src/shared/domain/pacing.ts), shared by every worker process through
 * the control Redis:
 *   <prefix>:pace:<cluster>:<node id>   hash: version, slots, batches, batchKeys, latencyMs (the worst client
 *                                       wait of the window that set it), at (ms, control Redis clock)
 * Workers decide a new pace from what they measured and write it only if nobody wrote one since they
 * read theirs (version) and the last one is a window old: one decision per window per node,
 * fleet-wide, whichever worker reports first. The others adopt it from the reply. A hash left alone
 * for PACE_TTL_MS goes away, so a node's next migration starts slow again (pacing.ts initialPace).
 */
import type { Redis } from 'ioredis';
import { PACE_WINDOW_MS, type Pace } from '../domain/pacing.js';

export interface StoredPace extends Pace {
  /** How many decisions were stored; a worker's decision counts only if it was made from the latest. */
  readonly version: number;
  /** The worst client wait measured in the window that set this pace. */
  readonly latencyMs: number;
}

/** An idle node's pace is forgotten after this. */
export const PACE_TTL_MS = 10 * 60_000;

// KEYS: the pace hash. ARGV: version the decision was made from, slots, batches, batchKeys,
// latencyMs, window ms, ttl ms. Returns {version, slots, batches, batchKeys, latencyMs} as stored.
const DECIDE_SCRIPT = `
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local version = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
local at = tonumber(redis.call('HGET', KEYS[1], 'at') or '0')
if version == tonumber(ARGV[1]) and now - at >= tonumber(ARGV[6]) then
  version = version + 1
  redis.call('HSET', KEYS[1], 'version', version, 'slots', ARGV[2], 'batches', ARGV[3],
    'batchKeys', ARGV[4], 'latencyMs', ARGV[5], 'at', now)
end
if version > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[7]) end
return redis.call('HMGET', KEYS[1], 'version', 'slots', 'batches', 'batchKeys', 'latencyMs')`;

interface ScriptCommands {
  slotfleetPaceDecide(...args: (string | number)[]): Promise<(string | null)[]>;
}

export class PaceStore {
  private readonly scripts: ScriptCommands;

  constructor(
    redis: Redis,
    private readonly prefix: string,
  ) {
    redis.defineCommand('slotfleetPaceDecide', { numberOfKeys: 1, lua: DECIDE_SCRIPT });
    this.scripts = redis as unknown as ScriptCommands;
  }

  key(cluster: string, nodeId: string): string {
    return `${this.prefix}:pace:${cluster}:${nodeId}`;
  }

  /**
   * Stores a pace decided from version `basedOn`, unless another decision was stored since or less
   * than a window ago. Undefined: no pace is stored for the node (a decision with basedOn 0 stores one).
   */
  async decide(
    cluster: string,
    nodeId: string,
    basedOn: number,
    pace: Pace,
    latencyMs: number,
  ): Promise<StoredPace | undefined> {
    const reply = await this.scripts.slotfleetPaceDecide(
      this.key(cluster, nodeId),
      basedOn,
      pace.slots,
      pace.batches,
      pace.batchKeys,
      Math.round(latencyMs * 1000) / 1000,
      PACE_WINDOW_MS,
      PACE_TTL_MS,
    );
    return parseStored(reply);
  }
}

function parseStored([version, slots, batches, batchKeys, latencyMs]: (string | null)[]):
  | StoredPace
  | undefined {
  if (version === null || version === undefined) return undefined;
  return {
    version: Number(version),
    slots: Number(slots),
    batches: Number(batches),
    batchKeys: Number(batchKeys),
    latencyMs: Number(latencyMs),
  };
}
