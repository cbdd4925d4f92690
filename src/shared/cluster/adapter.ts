/**
 * The cluster of one configured name, over ioredis: the ClusterPort the workers drive slots with,
 * plus the whole-cluster reads the API plans from. It only composes the three rooms that do the
 * work: NodeConnections (a connection per node and its command window), TopologyViews (CLUSTER
 * NODES shared and parsed once) and SlotCommands (the slot commands and the batch script).
 */
import type { RedisEndpoint } from '../config.js';
import { type KeyspaceDatabase, parseKeyspace } from '../domain/keyspace.js';
import type { ClusterSnapshot, NodeRef } from '../domain/plan.js';
import type { ServerMigration } from '../domain/server-migrations.js';
import type { SlotObservation } from '../domain/slot-migration.js';
import { type ClusterNode, type NodeView, nodeAddress, type SlotView } from '../domain/topology.js';
import type { Logger } from '../logger.js';
import { NodeConnections } from './connections.js';
import { type ObserveOptions, observeSlot } from './observe-slot.js';
import type { BatchLimits, ClusterPort, MigrateBatchResult, MigrateOptions, NodeAddress } from './port.js';
import { ServerMigrationCommands } from './server-migration-commands.js';
import { NODE_SCRIPTS, SlotCommands } from './slot-commands.js';
import { TopologyViews } from './topology-views.js';

export { UNCOUNTED_KEYS } from './observe-slot.js';
export type { MigrateBatchResult, MigrateOptions } from './port.js';
export { MAX_SCRIPT_BATCH_KEYS } from './slot-commands.js';

export interface ClusterAdapterOptions {
  /** Commands that get no reply within this time fail (a SIGSTOPped node must not hang a job forever). */
  readonly commandTimeoutMs: number;
  readonly logger?: Logger;
}

export class ClusterAdapter implements ClusterPort {
  private readonly connections: NodeConnections;
  private readonly views: TopologyViews;
  private readonly commands: SlotCommands;
  private readonly serverTasks: ServerMigrationCommands;

  constructor(
    readonly name: string,
    seed: RedisEndpoint,
    options: ClusterAdapterOptions,
  ) {
    this.connections = new NodeConnections(name, seed, { ...options, scripts: NODE_SCRIPTS });
    this.views = new TopologyViews(name, seed, this.connections, options.logger);
    this.commands = new SlotCommands(seed, this.connections, options.commandTimeoutMs);
    this.serverTasks = new ServerMigrationCommands(this.connections);
  }

  /** CLUSTER NODES of one node, parsed. */
  readView(node: NodeAddress): Promise<NodeView> {
    return this.views.readView(node);
  }

  /** A view from the seed node, or from any node seen before if the seed does not answer. */
  readAnyView(): Promise<NodeView> {
    return this.views.readAnyView();
  }

  /** The seed's node list plus every reachable master's own open slots. */
  snapshot(): Promise<ClusterSnapshot> {
    return this.views.snapshot();
  }

  /** The masters reachable according to a fresh view, for finalization and checks. */
  masters(): Promise<ClusterNode[]> {
    return this.views.masters();
  }

  readSlotView(node: NodeAddress, slot: number): Promise<SlotView> {
    return this.views.readSlotView(node, slot);
  }

  /** What the source and the target (and, when asked, every other master) say about one slot. */
  observeSlot(
    slot: number,
    source: NodeRef,
    target: NodeRef,
    options: ObserveOptions,
  ): Promise<SlotObservation> {
    return observeSlot(this, slot, source, target, options);
  }

  /** cluster_state of every reachable master (CLUSTER INFO), by host:port. */
  async clusterStates(): Promise<Map<string, string>> {
    const masters = await this.masters();
    const states = await Promise.all(
      masters.map(async (master) => {
        const info = String(
          await this.connections.run(master, 'CLUSTER INFO', (redis) => redis.call('CLUSTER', 'INFO')),
        );
        return [nodeAddress(master), /cluster_state:(\w+)/.exec(info)?.[1] ?? 'unknown'] as const;
      }),
    );
    return new Map(states);
  }

  /** DBSIZE of each node, or null for a node that did not answer. */
  dbSizes(nodes: readonly NodeAddress[]): Promise<(number | null)[]> {
    return Promise.all(
      nodes.map((node) =>
        this.connections
          .run(node, 'DBSIZE', (redis) => redis.dbsize())
          .then(
            (size) => size,
            () => null,
          ),
      ),
    );
  }

  /**
   * The databases holding keys on each node (INFO keyspace), in the order of `nodes`. Valkey 9
   * clusters may use databases other than 0 (`cluster-databases`); a node that fails to answer fails
   * the read.
   */
  databasesWithKeys(nodes: readonly NodeAddress[]): Promise<KeyspaceDatabase[][]> {
    return Promise.all(
      nodes.map(async (node) =>
        parseKeyspace(
          String(await this.connections.run(node, 'INFO keyspace', (redis) => redis.info('keyspace'))),
        ),
      ),
    );
  }

  countKeysInSlot(node: NodeAddress, slot: number): Promise<number> {
    return this.commands.countKeysInSlot(node, slot);
  }

  /** COUNTKEYSINSLOT for many slots of one node, pipelined. */
  countKeysInSlots(node: NodeAddress, slots: readonly number[]): Promise<number[]> {
    return Promise.all(slots.map((slot) => this.countKeysInSlot(node, slot)));
  }

  getKeysInSlot(node: NodeAddress, slot: number, count: number): Promise<Buffer[]> {
    return this.commands.getKeysInSlot(node, slot, count);
  }

  setSlotImporting(target: NodeAddress, slot: number, sourceId: string): Promise<void> {
    return this.commands.setSlot(target, slot, 'IMPORTING', sourceId);
  }

  setSlotMigrating(source: NodeAddress, slot: number, targetId: string): Promise<void> {
    return this.commands.setSlot(source, slot, 'MIGRATING', targetId);
  }

  setSlotNode(node: NodeAddress, slot: number, ownerId: string): Promise<void> {
    return this.commands.setSlot(node, slot, 'NODE', ownerId);
  }

  setSlotStable(node: NodeAddress, slot: number): Promise<void> {
    return this.commands.setSlotStable(node, slot);
  }

  addSlot(node: NodeAddress, slot: number): Promise<void> {
    return this.commands.addSlot(node, slot);
  }

  migrate(
    source: NodeAddress,
    target: NodeAddress,
    keys: readonly Buffer[],
    options: MigrateOptions,
  ): Promise<number> {
    return this.commands.migrate(source, target, keys, options);
  }

  migrateNextBatch(
    source: NodeAddress,
    target: NodeAddress,
    slot: number,
    limits: BatchLimits,
    options: MigrateOptions,
  ): Promise<MigrateBatchResult> {
    return this.commands.migrateNextBatch(source, target, slot, limits, options);
  }

  dumpKeys(
    node: NodeAddress,
    keys: readonly Buffer[],
    options: { asking: boolean },
  ): Promise<(Buffer | null)[]> {
    return this.commands.dumpKeys(node, keys, options);
  }

  canonicalValues(
    node: NodeAddress,
    keys: readonly Buffer[],
    options: { asking: boolean },
  ): Promise<(string | null)[]> {
    return this.commands.canonicalValues(node, keys, options);
  }

  serverMigrations(node: NodeAddress): Promise<readonly ServerMigration[] | undefined> {
    return this.serverTasks.list(node);
  }

  startServerMigration(source: NodeRef, target: NodeRef, slots: readonly number[]): Promise<void> {
    return this.serverTasks.start(source, slots, target.id);
  }

  cancelServerMigrations(source: NodeAddress): Promise<void> {
    return this.serverTasks.cancelAll(source);
  }

  async ping(): Promise<void> {
    await this.connections.run(this.views.anyAddress, 'PING', (redis) => redis.ping());
  }

  close(): Promise<void> {
    return this.connections.close();
  }
}
