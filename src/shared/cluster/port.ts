/**
 * The cluster as the slot engine, the finalizer and the repairs see it: the slot commands they send
 * to one node at a time. The ioredis ClusterAdapter implements it against real nodes; the unit tests
 * implement it in memory. Everything above this interface knows nothing of connections, pipelines or
 * scripts, and nothing below it knows the slot state machine.
 */
import type { NodeRef } from '../domain/plan.js';
import type { ServerMigration } from '../domain/server-migrations.js';
import type { SlotView } from '../domain/topology.js';

/** Where a node listens: all a command needs to reach it. */
export type NodeAddress = Pick<NodeRef, 'host' | 'port'>;

export interface MigrateOptions {
  readonly timeoutMs: number;
  readonly replace?: boolean;
}

export interface BatchLimits {
  readonly maxKeys: number;
  /** Bytes per MIGRATE (MEMORY USAGE summed); 0: no limit. */
  readonly maxBytes: number;
}

export interface MigrateBatchResult {
  /** Keys in the batch (0 with more = false: the slot is empty on the source). */
  readonly keys: number;
  /** Keys MIGRATE sent: 0 when every one had expired meanwhile (+NOKEY). */
  readonly moved: number;
  /** MEMORY USAGE of the keys sent (0 without a byte budget: not measured). */
  readonly bytes: number;
  /** The slot may hold more keys on the source. */
  readonly more: boolean;
  /** The next key is bigger than the byte budget: nothing was sent; move it alone. */
  readonly bigKey?: { readonly name: Buffer; readonly bytes: number };
  /** When the source ran the batch, by its own clock (µs): it served nobody else in between. */
  readonly ranUs?: { readonly start: number; readonly end: number };
}

export interface ClusterPort {
  /** One node's opinion of one slot (owner, open state, epochs, the masters it knows). */
  readSlotView(node: NodeAddress, slot: number): Promise<SlotView>;
  countKeysInSlot(node: NodeAddress, slot: number): Promise<number>;
  /** Key names as Buffers: keys are binary-safe and must reach MIGRATE byte for byte. */
  getKeysInSlot(node: NodeAddress, slot: number, count: number): Promise<Buffer[]>;
  setSlotImporting(target: NodeAddress, slot: number, sourceId: string): Promise<void>;
  setSlotMigrating(source: NodeAddress, slot: number, targetId: string): Promise<void>;
  setSlotNode(node: NodeAddress, slot: number, ownerId: string): Promise<void>;
  setSlotStable(node: NodeAddress, slot: number): Promise<void>;
  /** CLUSTER ADDSLOTS for one slot no master serves (fix of an uncovered slot). */
  addSlot(node: NodeAddress, slot: number): Promise<void>;
  /**
   * MIGRATE of these keys: the source deletes a key only after the target acknowledged its RESTORE.
   * @returns the number of keys sent (0 when none of them existed any more: +NOKEY).
   */
  migrate(
    source: NodeAddress,
    target: NodeAddress,
    keys: readonly Buffer[],
    options: MigrateOptions,
  ): Promise<number>;
  /** Moves the next batch of the slot's keys, chosen on the source itself, within the limits. */
  migrateNextBatch(
    source: NodeAddress,
    target: NodeAddress,
    slot: number,
    limits: BatchLimits,
    options: MigrateOptions,
  ): Promise<MigrateBatchResult>;
  /**
   * DUMP of each key (null where the node has none). asking: the node is IMPORTING the slot, so each
   * DUMP is preceded by ASKING.
   */
  dumpKeys(
    node: NodeAddress,
    keys: readonly Buffer[],
    options: { asking: boolean },
  ): Promise<(Buffer | null)[]>;
  /**
   * Each key's value in a canonical form (null where the node has none): equal values give equal
   * strings even where their DUMP payloads differ (RESTORE may pick another encoding).
   */
  canonicalValues(
    node: NodeAddress,
    keys: readonly Buffer[],
    options: { asking: boolean },
  ): Promise<(string | null)[]>;

  /**
   * The server-side slot migrations the node lists (in progress and recently ended); undefined where
   * the server has no atomic slot migration (Redis 7.0, Valkey 8). Valkey 9: CLUSTER
   * GETSLOTMIGRATIONS. A second dialect (Redis 8.4's CLUSTER MIGRATION STATUS) would answer the same
   * shape.
   */
  serverMigrations(node: NodeAddress): Promise<readonly ServerMigration[] | undefined>;
  /**
   * Starts one server task moving these slots from source to target. Valkey 9: CLUSTER MIGRATESLOTS
   * on the source (Redis 8.4 would send CLUSTER MIGRATION IMPORT to the target: hence both ends).
   */
  startServerMigration(source: NodeRef, target: NodeRef, slots: readonly number[]): Promise<void>;
  /**
   * Cancels these tasks of the source (rolled back by the servers). Valkey 9's CLUSTER
   * CANCELSLOTMIGRATIONS cancels every task the source exports: callers pass them all.
   */
  cancelServerMigrations(source: NodeAddress, names: readonly string[]): Promise<void>;
}
