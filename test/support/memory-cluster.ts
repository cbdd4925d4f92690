/**
 * A Redis Cluster in memory behind ClusterPort, for unit tests of the slot engine. It keeps what the
 * state machine of src/shared/domain/slot-migration.ts relies on, with Redis 7.0's rules (cluster.c
 * function names in the comments), and nothing else: no sockets, no persistence, no failure detection.
 *
 * Each node has its own opinion, as real nodes do:
 *   - itself: master, or replica of a master; its config epoch and current epoch; its IMPORTING and
 *     MIGRATING slots; the keys it holds (name -> value and expiry), per slot;
 *   - the others: the owner of every slot, and each node's role, master and config epoch as it last
 *     heard them (clusterState.slots and clusterState.nodes).
 * readSlotView renders the node's CLUSTER NODES text (clusterGenNodeDescription) and reads it with
 * the domain's own parser, so the engine sees exactly what the ioredis adapter would give it.
 *
 * Propagation. A command changes the node it is sent to, nothing more. The others hear of it by
 * gossip: gossip() delivers every node's PING (its role, master, epochs and the slots it claims) to
 * every other node, applying clusterProcessPacket's rules: role switches, clusterUpdateSlotsConfigWith
 * (a claim with a higher config epoch wins, except on a node importing the slot; a master that loses
 * a slot holding keys deletes them, "dirty slots"), the UPDATE sent back to a sender claiming slots
 * another node owns with a higher epoch, and config epoch collisions. Two broadcasts are delivered at
 * once, because Redis sends them at once: SETSLOT NODE of an imported slot (clusterBroadcastPong
 * after the epoch bump) and a failover's promotion (clusterFailoverReplaceYourMaster). Besides, a
 * timer runs a gossip round every gossipEveryMs (default 5; 0: never, tests call gossip()). Every
 * command here answers in the same tick, so the timer fires only while a caller sleeps (the engine
 * waiting for epochs or an owner, a test between two attempts), never inside a run of commands.
 *
 * Replication is synchronous: every write to a master's keys is applied to its replicas at once, and
 * a node that becomes a replica takes a copy of its new master's keys (a full resync).
 *
 * Errors are Redis reply texts (as ioredis hands them over) passed through the adapter's own
 * mapRedisError, with the context the adapter gives ("SETSLOT 5 NODE <id> on 127.0.0.1:7001"), so the
 * engine gets the same SlotfleetError codes as from real nodes. Faults on demand: failNext().
 */
import { createHash } from 'node:crypto';
import calculateSlot from 'cluster-key-slot';
import { mapRedisError } from '../../src/shared/cluster/error-map.js';
import type {
  BatchLimits,
  ClusterPort,
  MigrateBatchResult,
  MigrateOptions,
  NodeAddress,
} from '../../src/shared/cluster/port.js';
import { MAX_SCRIPT_BATCH_KEYS } from '../../src/shared/cluster/slot-commands.js';
import type { NodeRef } from '../../src/shared/domain/plan.js';
import { SLOT_COUNT } from '../../src/shared/domain/slots.js';
import { indexSlotViews, type SlotView, type SlotViewIndex } from '../../src/shared/domain/topology.js';

export type ValueType = 'string' | 'list' | 'set' | 'hash' | 'zset';

/**
 * A key's value. content stands for the data; encoding only changes the DUMP payload, as RESTORE may
 * pick another encoding for the same data (a small hash as listpack or hashtable).
 */
export interface MemoryValue {
  readonly type: ValueType;
  readonly content: string;
  readonly encoding?: string;
}

export interface StoredKey {
  readonly name: Buffer;
  readonly value: MemoryValue;
  /** Absolute time (Date.now() ms) the key expires at; null: no TTL. MIGRATE carries it over. */
  readonly expiresAtMs: number | null;
}

export type Role = 'master' | 'replica';

/** The ClusterPort methods, by name: what faults and hooks attach to. */
export type PortMethod = keyof ClusterPort;

/** Replies a fault can make a command fail with. */
export const FaultReply = {
  BusyKey: 'BUSYKEY',
  IoError: 'IOERR',
  TryAgain: 'TRYAGAIN',
  ClusterDown: 'CLUSTERDOWN',
  ReadOnly: 'READONLY',
  Connection: 'CONNECTION',
} as const;
export type FaultReply = (typeof FaultReply)[keyof typeof FaultReply];

export interface FaultOptions {
  /** How many calls fail. @defaultValue 1 */
  readonly times?: number;
  /** Only calls sent to this node (id). */
  readonly nodeId?: string;
  /** Only calls about this slot. */
  readonly slot?: number;
  /**
   * IOERR of a MIGRATE only: the target restored this many of the keys before the source gave up
   * waiting, so they exist on both nodes (what makes the next MIGRATE of them answer BUSYKEY).
   */
  readonly restoredKeys?: number;
}

/** One call of a ClusterPort method, as hooks and the call log see it. */
export interface PortCall {
  readonly method: PortMethod;
  readonly node: NodeAddress;
  readonly slot?: number;
  /** The n-th call of this method since the cluster was made (1 for the first). */
  readonly count: number;
  /** MIGRATE only: the keys named, and the options. */
  readonly keys?: number;
  readonly timeoutMs?: number;
  readonly replace?: boolean;
}

export type CallHook = (call: PortCall) => void | Promise<void>;

export interface MemoryClusterOptions {
  readonly masters?: number;
  readonly replicasPerMaster?: number;
  /** A gossip round on a timer, every this many ms; 0: only when gossip() is called. @defaultValue 5 */
  readonly gossipEveryMs?: number;
  /** The first node's port; the others follow. @defaultValue 7000 */
  readonly firstPort?: number;
}

/** The writes of the port: what a re-run of a finished slot must not send. */
export const WRITE_METHODS: readonly PortMethod[] = [
  'setSlotImporting',
  'setSlotMigrating',
  'setSlotNode',
  'setSlotStable',
  'addSlot',
  'migrate',
  'migrateNextBatch',
];

const HOST = '127.0.0.1';

/** What a node knows of another one (a clusterNode of its clusterState.nodes). */
interface PeerView {
  role: Role;
  masterId: string | null;
  configEpoch: number;
}

/** A PING's header: who sends, as what, with which epochs, claiming which slots. */
interface Ping {
  readonly senderId: string;
  readonly role: Role;
  readonly masterId: string | null;
  /** A replica advertises its master's config epoch. */
  readonly configEpoch: number;
  readonly currentEpoch: number;
  /** hdr->myslots: a master's slots, or a replica's master's, as the sender sees them. */
  readonly claimed: Uint8Array;
}

/** An UPDATE message: "node n owns these slots with this config epoch". */
interface Update {
  readonly nodeId: string;
  readonly configEpoch: number;
  readonly slots: Uint8Array;
}

/** A node's owners table read by owner: what CLUSTER NODES and the bus need of it. */
interface SlotTable {
  readonly version: number;
  readonly slotsByOwner: Map<string, Uint8Array>;
  readonly countByOwner: Map<string, number>;
  /** "0-5460 5462" tokens per owner (representSlotInfo). */
  readonly rangesByOwner: Map<string, string[]>;
  unassigned: number;
}

const NO_SLOTS = new Uint8Array(SLOT_COUNT);

class ReplyError extends Error {
  override name = 'ReplyError';
}

export class MemoryNode {
  role: Role;
  masterId: string | null;
  configEpoch: number;
  currentEpoch: number;
  /** slot -> node id, this node's IMPORTING and MIGRATING states (only it lists them). */
  readonly importing = new Map<number, string>();
  readonly migrating = new Map<number, string>();
  /** This node's clusterState.slots: who serves each slot, in its opinion. Written by setOwner. */
  readonly owners: readonly (string | null)[];
  /** Its opinion of the other nodes (clusterState.nodes). */
  readonly peers = new Map<string, PeerView>();
  /** Keys held, by slot, by name (latin1: one char per byte, so binary names map one to one). */
  readonly keys = new Map<number, Map<string, StoredKey>>();
  /** Bumped at every change of its configuration: CLUSTER NODES is rendered again, gossip is due. */
  version = 0;
  /** Bumped when owners change: the owners table is read again. */
  private ownersVersion = 0;
  private readonly ownerOfSlot: (string | null)[];
  private rendered: { version: number; text: string; index: SlotViewIndex } | undefined;
  private table: SlotTable | undefined;

  constructor(
    private readonly cluster: MemoryCluster,
    readonly id: string,
    readonly host: string,
    readonly port: number,
    role: Role,
    masterId: string | null,
    configEpoch: number,
    owners: readonly (string | null)[],
  ) {
    this.ownerOfSlot = [...owners];
    this.owners = this.ownerOfSlot;
    this.role = role;
    this.masterId = masterId;
    this.configEpoch = configEpoch;
    this.currentEpoch = configEpoch;
  }

  get address(): string {
    return `${this.host}:${this.port}`;
  }

  get ref(): NodeRef {
    return { id: this.id, host: this.host, port: this.port };
  }

  // --- what this node knows ------------------------------------------------------------------

  epochOf(nodeId: string): number {
    if (nodeId === this.id) return this.configEpoch;
    return this.peers.get(nodeId)?.configEpoch ?? 0;
  }

  roleOf(nodeId: string): Role | undefined {
    return nodeId === this.id ? this.role : this.peers.get(nodeId)?.role;
  }

  knows(nodeId: string): boolean {
    return nodeId === this.id || this.peers.has(nodeId);
  }

  /** Slots this node thinks nodeId serves (clusterNode.slots). Not to be changed by the caller. */
  slotsOf(nodeId: string): Uint8Array {
    return this.slotTable().slotsByOwner.get(nodeId) ?? NO_SLOTS;
  }

  slotCountOf(nodeId: string): number {
    return this.slotTable().countByOwner.get(nodeId) ?? 0;
  }

  /** cluster_state: fail while a slot is unassigned (cluster-require-full-coverage yes). */
  get stateOk(): boolean {
    return this.slotTable().unassigned === 0;
  }

  /** The owners table read by owner, in one pass over its runs, once per change of owners. */
  private slotTable(): SlotTable {
    if (this.table?.version === this.ownersVersion) return this.table;
    const table: SlotTable = {
      version: this.ownersVersion,
      slotsByOwner: new Map(),
      countByOwner: new Map(),
      rangesByOwner: new Map(),
      unassigned: 0,
    };
    for (let start = 0; start < SLOT_COUNT; ) {
      const owner = this.ownerOfSlot[start] ?? null;
      let end = start;
      while (end + 1 < SLOT_COUNT && this.ownerOfSlot[end + 1] === owner) end++;
      if (owner === null) {
        table.unassigned += end - start + 1;
      } else {
        let slots = table.slotsByOwner.get(owner);
        if (!slots) {
          slots = new Uint8Array(SLOT_COUNT);
          table.slotsByOwner.set(owner, slots);
        }
        slots.fill(1, start, end + 1);
        table.countByOwner.set(owner, (table.countByOwner.get(owner) ?? 0) + end - start + 1);
        const ranges = table.rangesByOwner.get(owner) ?? [];
        ranges.push(start === end ? `${start}` : `${start}-${end}`);
        table.rangesByOwner.set(owner, ranges);
      }
      start = end + 1;
    }
    this.table = table;
    return table;
  }

  /** clusterGetMaxEpoch: the highest config epoch this node knows, or its current epoch. */
  maxEpoch(): number {
    let max = Math.max(this.currentEpoch, this.configEpoch);
    for (const peer of this.peers.values()) max = Math.max(max, peer.configEpoch);
    return max;
  }

  // --- keys ------------------------------------------------------------------------------------

  slotKeys(slot: number): Map<string, StoredKey> {
    let keys = this.keys.get(slot);
    if (!keys) {
      keys = new Map();
      this.keys.set(slot, keys);
    }
    return keys;
  }

  /** A key as a read sees it: an expired key does not exist (lookupKey expires it). */
  lookup(name: Buffer): StoredKey | undefined {
    const stored = this.keys.get(keySlot(name))?.get(name.toString('latin1'));
    if (stored?.expiresAtMs != null && stored.expiresAtMs <= Date.now()) return undefined;
    return stored;
  }

  countKeysInSlot(slot: number): number {
    return this.keys.get(slot)?.size ?? 0;
  }

  // --- CLUSTER NODES ---------------------------------------------------------------------------

  /** clusterGenNodesDescription: one line per known node; only myself lists its open slots. */
  clusterNodes(): string {
    return this.render().text;
  }

  slotView(slot: number): SlotView {
    return this.render().index.slotView(slot);
  }

  private render(): { version: number; text: string; index: SlotViewIndex } {
    if (this.rendered?.version === this.version) return this.rendered;
    const lines = this.cluster.nodes.map((node) => {
      const myself = node.id === this.id;
      const role = this.roleOf(node.id) ?? 'master';
      const masterId = myself ? this.masterId : (this.peers.get(node.id)?.masterId ?? null);
      const flags = `${myself ? 'myself,' : ''}${role === 'master' ? 'master' : 'slave'}`;
      // A replica is listed with its master's config epoch (clusterGenNodeDescription).
      const epoch = role === 'replica' && masterId !== null ? this.epochOf(masterId) : this.epochOf(node.id);
      const slots = this.slotTable().rangesByOwner.get(node.id) ?? [];
      const open = myself ? this.openSlotTokens() : [];
      return [
        `${node.id} ${node.address}@${node.port + 10_000} ${flags} ${role === 'replica' ? (masterId ?? '-') : '-'}`,
        `0 0 ${epoch} connected`,
        ...slots,
        ...open,
      ].join(' ');
    });
    const text = `${lines.join('\n')}\n`;
    this.rendered = { version: this.version, text, index: indexSlotViews(text) };
    return this.rendered;
  }

  private openSlotTokens(): string[] {
    const slots = [...new Set([...this.migrating.keys(), ...this.importing.keys()])].sort((a, b) => a - b);
    // A slot both migrating and importing is listed as migrating only.
    return slots.map((slot) => {
      const to = this.migrating.get(slot);
      return to !== undefined ? `[${slot}->-${to}]` : `[${slot}-<-${this.importing.get(slot)}]`;
    });
  }

  // --- CLUSTER SETSLOT, ADDSLOTS, BUMPEPOCH (clusterCommand) -----------------------------------
  // A refusal is thrown as the node's error reply.

  setSlotImporting(slot: number, sourceId: string): void {
    if (this.role === 'replica') throw new ReplyError('ERR Please use SETSLOT only with masters.');
    if (this.owners[slot] === this.id) throw new ReplyError(`ERR I'm already the owner of hash slot ${slot}`);
    if (!this.knows(sourceId)) throw new ReplyError(`ERR I don't know about node ${sourceId}`);
    if (this.roleOf(sourceId) === 'replica') throw new ReplyError('ERR Target node is not a master');
    this.importing.set(slot, sourceId);
    this.changed();
  }

  setSlotMigrating(slot: number, targetId: string): void {
    if (this.role === 'replica') throw new ReplyError('ERR Please use SETSLOT only with masters.');
    if (this.owners[slot] !== this.id) throw new ReplyError(`ERR I'm not the owner of hash slot ${slot}`);
    if (!this.knows(targetId)) throw new ReplyError(`ERR I don't know about node ${targetId}`);
    if (this.roleOf(targetId) === 'replica') throw new ReplyError('ERR Target node is not a master');
    this.migrating.set(slot, targetId);
    this.changed();
  }

  setSlotStable(slot: number): void {
    if (this.role === 'replica') throw new ReplyError('ERR Please use SETSLOT only with masters.');
    this.importing.delete(slot);
    this.migrating.delete(slot);
    this.changed();
  }

  setSlotNode(slot: number, ownerId: string): void {
    if (this.role === 'replica') throw new ReplyError('ERR Please use SETSLOT only with masters.');
    if (!this.knows(ownerId)) throw new ReplyError(`ERR Unknown node ${ownerId}`);
    if (this.roleOf(ownerId) === 'replica') throw new ReplyError('ERR Target node is not a master');
    const keys = this.countKeysInSlot(slot);
    // Giving away a slot of its own: only once it holds no key of it.
    if (this.owners[slot] === this.id && ownerId !== this.id && keys !== 0) {
      throw new ReplyError(
        `ERR Can't assign hashslot ${slot} to a different node while I still hold keys for this hash slot.`,
      );
    }
    // A MIGRATING slot without keys left is closed by the assignment.
    if (keys === 0) this.migrating.delete(slot);
    const slotWasMine = this.owners[slot] === this.id;
    this.setOwner(slot, ownerId);
    this.changed();
    // A master left without slots becomes a replica of the new owner (Redis 7.0,
    // cluster-allow-replica-migration yes).
    if (slotWasMine && ownerId !== this.id && this.slotCountOf(this.id) === 0) {
      this.setMaster(ownerId);
    }
    if (ownerId === this.id && this.importing.has(slot)) {
      // The import is closed with a new config epoch above every epoch this node knows, unless it
      // holds the highest already, so that its claim wins; then every node hears of it at once
      // (clusterBroadcastPong).
      this.bumpConfigEpochWithoutConsensus();
      this.importing.delete(slot);
      this.changed();
      this.cluster.broadcast(this);
    }
  }

  addSlot(slot: number): void {
    if (this.owners[slot] !== null) throw new ReplyError(`ERR Slot ${slot} is already busy`);
    this.setOwner(slot, this.id);
  }

  /** clusterBumpConfigEpochWithoutConsensus: unless this node already holds the highest epoch. */
  bumpConfigEpochWithoutConsensus(): boolean {
    if (this.configEpoch !== 0 && this.configEpoch === this.maxEpoch()) return false;
    this.currentEpoch = this.maxEpoch() + 1;
    this.configEpoch = this.currentEpoch;
    this.changed();
    return true;
  }

  // --- the cluster bus (clusterProcessPacket) --------------------------------------------------

  ping(): Ping {
    const master = this.role === 'master' ? this.id : this.masterId;
    return {
      senderId: this.id,
      role: this.role,
      masterId: this.masterId,
      configEpoch: master === null ? this.configEpoch : this.epochOf(master),
      currentEpoch: this.currentEpoch,
      claimed: master === null ? new Uint8Array(SLOT_COUNT) : this.slotsOf(master),
    };
  }

  processPing(ping: Ping): void {
    const sender = this.peers.get(ping.senderId);
    if (!sender) return;
    if (ping.currentEpoch > this.currentEpoch) {
      this.currentEpoch = ping.currentEpoch;
      this.changed();
    }
    if (ping.configEpoch > sender.configEpoch) {
      sender.configEpoch = ping.configEpoch;
      this.changed();
    }
    // Role switches.
    if (ping.role === 'master') {
      this.setNodeAsMaster(ping.senderId);
    } else {
      if (sender.role === 'master') {
        // A master turned into a replica: it serves nothing any more (clusterDelNodeSlots).
        for (let slot = 0; slot < SLOT_COUNT; slot++) {
          if (this.owners[slot] === ping.senderId) this.setOwner(slot, null);
        }
        sender.role = 'replica';
        this.changed();
      }
      if (ping.masterId !== null && this.knows(ping.masterId) && sender.masterId !== ping.masterId) {
        sender.masterId = ping.masterId;
        this.changed();
      }
    }
    const senderMaster = sender.role === 'master' ? ping.senderId : sender.masterId;
    const dirty = senderMaster !== null && !sameSlots(this.slotsOf(senderMaster), ping.claimed);
    // 1) A master claiming slots we see otherwise: maybe take its claim.
    if (sender.role === 'master' && dirty) {
      this.updateSlotsConfigWith(ping.senderId, ping.configEpoch, ping.claimed);
    }
    // 2) It claims a slot we know a higher epoch owns: tell it, with an UPDATE about that owner.
    if (dirty) {
      for (let slot = 0; slot < SLOT_COUNT; slot++) {
        if (!ping.claimed[slot]) continue;
        const owner = this.owners[slot] ?? null;
        if (owner === null || owner === ping.senderId) continue;
        if (this.epochOf(owner) > ping.configEpoch) {
          this.cluster.deliverUpdate(ping.senderId, {
            nodeId: owner,
            configEpoch: this.epochOf(owner),
            slots: this.slotsOf(owner),
          });
          break;
        }
      }
    }
    // Two masters with one config epoch: the one with the smaller id takes a new one
    // (clusterHandleConfigEpochCollision).
    if (
      this.role === 'master' &&
      sender.role === 'master' &&
      ping.configEpoch === this.configEpoch &&
      sender.configEpoch === this.configEpoch &&
      ping.senderId > this.id
    ) {
      this.currentEpoch += 1;
      this.configEpoch = this.currentEpoch;
      this.changed();
    }
  }

  processUpdate(update: Update): void {
    const node = this.peers.get(update.nodeId);
    if (!node || node.configEpoch >= update.configEpoch) return;
    this.setNodeAsMaster(update.nodeId);
    node.configEpoch = update.configEpoch;
    this.changed();
    this.updateSlotsConfigWith(update.nodeId, update.configEpoch, update.slots);
  }

  /**
   * clusterUpdateSlotsConfigWith: a claim rebinds a slot that is unassigned or owned with a lower
   * config epoch, except while this node imports it. A master that loses its last slot becomes a
   * replica of the claimant; one that keeps others deletes the keys of the slots it lost.
   */
  private updateSlotsConfigWith(senderId: string, senderEpoch: number, claimed: Uint8Array): void {
    if (senderId === this.id) return;
    const currentMaster = this.role === 'master' ? this.id : this.masterId;
    const dirtySlots: number[] = [];
    let newMaster: string | null = null;
    for (let slot = 0; slot < SLOT_COUNT; slot++) {
      if (!claimed[slot]) continue;
      const owner = this.owners[slot] ?? null;
      if (owner === senderId) continue;
      if (this.importing.has(slot)) continue;
      if (owner === null || this.epochOf(owner) < senderEpoch) {
        if (owner === this.id && this.countKeysInSlot(slot) > 0) dirtySlots.push(slot);
        if (owner === currentMaster) newMaster = senderId;
        this.setOwner(slot, senderId);
      }
    }
    if (newMaster !== null && currentMaster !== null && this.slotCountOf(currentMaster) === 0) {
      this.setMaster(newMaster);
    } else {
      for (const slot of dirtySlots) this.cluster.deleteKeysInSlot(this, slot);
    }
  }

  private setNodeAsMaster(nodeId: string): void {
    const peer = this.peers.get(nodeId);
    if (!peer || peer.role === 'master') return;
    peer.role = 'master';
    peer.masterId = null;
    this.changed();
  }

  /** clusterSetMaster: becomes a replica; its open slots close; its keys are its master's (resync). */
  setMaster(masterId: string): void {
    this.role = 'replica';
    this.masterId = masterId;
    this.importing.clear();
    this.migrating.clear();
    this.changed();
    this.cluster.resync(this);
  }

  /** clusterFailoverReplaceYourMaster, after winning the election with a new epoch. */
  replaceYourMaster(): void {
    const oldMaster = this.masterId;
    if (this.role === 'master' || oldMaster === null) throw new Error(`${this.address} is not a replica`);
    this.currentEpoch = this.maxEpoch() + 1;
    this.configEpoch = this.currentEpoch;
    this.role = 'master';
    this.masterId = null;
    for (let slot = 0; slot < SLOT_COUNT; slot++) {
      if (this.owners[slot] === oldMaster) this.setOwner(slot, this.id);
    }
    this.changed();
  }

  /** clusterAddSlot / clusterDelSlot in this node's table (null: unassigned). */
  setOwner(slot: number, nodeId: string | null): void {
    if (this.ownerOfSlot[slot] === nodeId) return;
    this.ownerOfSlot[slot] = nodeId;
    this.ownersVersion++;
    this.changed();
  }

  changed(): void {
    this.version++;
  }
}

/**
 * The cluster: its nodes, the routing of each port call to the node it names, MIGRATE between two
 * nodes, replication, gossip, faults and hooks.
 */
export class MemoryCluster implements ClusterPort {
  readonly nodes: MemoryNode[] = [];
  /** Every port call, in order. */
  readonly calls: PortCall[] = [];
  private readonly faults: (FaultOptions & { method: PortMethod; reply: FaultReply; left: number })[] = [];
  private readonly hooks: { when: 'before' | 'after'; method: PortMethod; hook: CallHook }[] = [];
  private readonly callCounts = new Map<PortMethod, number>();
  /** Nodes cut off the cluster bus: they neither send nor hear gossip. */
  private readonly isolated = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  /** Pairs (sender, receiver) and the versions at their last delivery: nothing new, nothing sent. */
  private readonly delivered = new Map<string, string>();

  constructor(options: MemoryClusterOptions = {}) {
    const masters = options.masters ?? 3;
    const replicas = options.replicasPerMaster ?? 1;
    const firstPort = options.firstPort ?? 7000;
    const ids = Array.from({ length: masters * (1 + replicas) }, (_, index) => nodeId(firstPort + index));
    // Masters own equal ranges with config epochs 1..n, as redis-cli --cluster create leaves them
    // (its ranges: clusterManagerCommandCreate).
    const owners: string[] = [];
    const perMaster = SLOT_COUNT / masters;
    for (let index = 0, first = 0; index < masters; index++) {
      const last = index === masters - 1 ? SLOT_COUNT - 1 : Math.round(index * perMaster + perMaster - 1);
      for (let slot = first; slot <= last; slot++) owners.push(ids[index]!);
      first = last + 1;
    }
    ids.forEach((id, index) => {
      const isMaster = index < masters;
      const masterId = isMaster ? null : ids[index % masters]!;
      const epoch = isMaster ? index + 1 : 0;
      const role = isMaster ? 'master' : 'replica';
      this.nodes.push(new MemoryNode(this, id, HOST, firstPort + index, role, masterId, epoch, owners));
    });
    for (const node of this.nodes) {
      for (const other of this.nodes) {
        if (other === node) continue;
        node.peers.set(other.id, {
          role: other.role,
          masterId: other.masterId,
          configEpoch: other.configEpoch,
        });
      }
      node.currentEpoch = masters;
    }
    const every = options.gossipEveryMs ?? 5;
    if (every > 0) {
      this.timer = setInterval(() => this.gossip(), every);
      this.timer.unref();
    }
  }

  /** Stops the gossip timer. */
  close(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  // --- looking at it -------------------------------------------------------------------------

  node(idOrPort: string | number): MemoryNode {
    const found = this.nodes.find((node) => node.id === idOrPort || node.port === idOrPort);
    if (!found) throw new Error(`no node ${idOrPort}`);
    return found;
  }

  /** Nodes that are masters in their own opinion. */
  masters(): MemoryNode[] {
    return this.nodes.filter((node) => node.role === 'master');
  }

  replicasOf(masterId: string): MemoryNode[] {
    return this.nodes.filter((node) => node.role === 'replica' && node.masterId === masterId);
  }

  /** The master that serves a slot, in its own opinion (the first one claiming it). */
  ownerOf(slot: number): MemoryNode {
    const owner = this.masters().find((node) => node.owners[slot] === node.id);
    if (!owner) throw new Error(`no master claims slot ${slot}`);
    return owner;
  }

  /**
   * Everything that is not as expected once gossip has settled: a node (replicas included) naming
   * another owner for one of these slots, or holding one of them open.
   */
  disagreements(expectedOwners: ReadonlyMap<number, string>): string[] {
    this.settle();
    const problems: string[] = [];
    for (const node of this.nodes) {
      for (const [slot, owner] of expectedOwners) {
        const seen = node.owners[slot];
        if (seen !== owner) problems.push(`${node.address} sees slot ${slot} owned by ${seen}, not ${owner}`);
        const importing = node.importing.get(slot);
        if (importing) problems.push(`${node.address} imports slot ${slot} from ${importing}`);
        const migrating = node.migrating.get(slot);
        if (migrating) problems.push(`${node.address} migrates slot ${slot} to ${migrating}`);
      }
    }
    return problems;
  }

  // --- data ----------------------------------------------------------------------------------

  /** Writes a key on the master serving its slot (and its replicas), as a client would. */
  set(name: string | Buffer, value: MemoryValue, options: { ttlMs?: number } = {}): StoredKey {
    const key = typeof name === 'string' ? Buffer.from(name) : name;
    const stored: StoredKey = {
      name: key,
      value,
      expiresAtMs: options.ttlMs === undefined ? null : Date.now() + options.ttlMs,
    };
    this.writeKey(this.ownerOf(keySlot(key)), stored);
    return stored;
  }

  /** RESTORE ... REPLACE on one node directly (ASKING): a key planted where a test wants it. */
  plant(nodeId: string, stored: StoredKey): void {
    this.writeKey(this.node(nodeId), stored);
  }

  /** A master's write, applied to its replicas too (synchronous replication). */
  writeKey(node: MemoryNode, stored: StoredKey): void {
    for (const holder of [node, ...this.replicasOf(node.id)]) {
      holder.slotKeys(keySlot(stored.name)).set(stored.name.toString('latin1'), stored);
    }
  }

  deleteKey(node: MemoryNode, name: Buffer): void {
    for (const holder of [node, ...this.replicasOf(node.id)]) {
      holder.keys.get(keySlot(name))?.delete(name.toString('latin1'));
    }
  }

  /** delKeysInSlot, propagated to the node's replicas. */
  deleteKeysInSlot(node: MemoryNode, slot: number): void {
    for (const holder of [node, ...this.replicasOf(node.id)]) holder.keys.delete(slot);
  }

  /** A full resync: the replica's keys become a copy of its master's. */
  resync(replica: MemoryNode): void {
    const master = this.nodes.find((node) => node.id === replica.masterId);
    replica.keys.clear();
    for (const [slot, keys] of master?.keys ?? []) replica.keys.set(slot, new Map(keys));
  }

  // --- cluster events ------------------------------------------------------------------------

  /**
   * A replica takes over from its master (CLUSTER FAILOVER): it holds the master's keys already,
   * wins the election with an epoch above every one it knows, claims its master's slots and tells
   * every node at once. The old master hears that its slots are claimed with a higher epoch and
   * becomes a replica of it, closing its open slots. Nothing else is told until the next gossip.
   * @returns the promoted node.
   */
  failover(replicaId: string): MemoryNode {
    const replica = this.node(replicaId);
    replica.replaceYourMaster();
    this.broadcast(replica);
    return replica;
  }

  /** CLUSTER BUMPEPOCH on one node: nobody hears of it until the next gossip. */
  bumpEpoch(nodeId: string): boolean {
    return this.node(nodeId).bumpConfigEpochWithoutConsensus();
  }

  /** Cuts a node off the cluster bus (commands still reach it); healed after forMs if given. */
  isolate(nodeId: string, options: { forMs?: number } = {}): void {
    this.isolated.add(nodeId);
    if (options.forMs !== undefined) setTimeout(() => this.heal(nodeId), options.forMs).unref();
  }

  heal(nodeId: string): void {
    this.isolated.delete(nodeId);
  }

  /** One round: every node's PING to every other node, each processed on arrival. */
  gossip(): void {
    for (const sender of this.nodes) {
      for (const receiver of this.nodes) {
        if (receiver !== sender) this.deliverPing(sender, receiver);
      }
    }
  }

  /** Gossip rounds until nothing changes any more (at most 50). */
  settle(): void {
    for (let round = 0; round < 50; round++) {
      const before = this.nodes.map((node) => node.version).join();
      this.gossip();
      if (this.nodes.map((node) => node.version).join() === before) return;
    }
  }

  /** A PING from this node to every other node at once (clusterBroadcastPong). */
  broadcast(sender: MemoryNode): void {
    for (const receiver of this.nodes) if (receiver !== sender) this.deliverPing(sender, receiver, true);
  }

  deliverUpdate(receiverId: string, update: Update): void {
    if (this.isolated.has(receiverId)) return;
    this.node(receiverId).processUpdate(update);
  }

  private deliverPing(sender: MemoryNode, receiver: MemoryNode, always = false): void {
    if (this.isolated.has(sender.id) || this.isolated.has(receiver.id)) return;
    // Processing is a function of both nodes' configurations: unchanged ones need no new delivery.
    const pair = `${sender.id}>${receiver.id}`;
    const versions = `${sender.version}/${receiver.version}`;
    if (!always && this.delivered.get(pair) === versions) return;
    receiver.processPing(sender.ping());
    this.delivered.set(pair, `${sender.version}/${receiver.version}`);
  }

  // --- faults and hooks ----------------------------------------------------------------------

  /** The next call(s) of a method (to a node, about a slot) fail with this reply. */
  failNext(method: PortMethod, reply: FaultReply, options: FaultOptions = {}): void {
    this.faults.push({ ...options, method, reply, left: options.times ?? 1 });
  }

  /** Runs a hook before (or after) every call of a method; returns a function removing it. */
  on(when: 'before' | 'after', method: PortMethod, hook: CallHook): () => void {
    const entry = { when, method, hook };
    this.hooks.push(entry);
    return () => {
      const index = this.hooks.indexOf(entry);
      if (index >= 0) this.hooks.splice(index, 1);
    };
  }

  /** Calls of the given methods so far. */
  callsOf(...methods: PortMethod[]): PortCall[] {
    return this.calls.filter((call) => methods.includes(call.method));
  }

  // --- ClusterPort ---------------------------------------------------------------------------

  readSlotView(address: NodeAddress, slot: number): Promise<SlotView> {
    return this.command('readSlotView', address, { slot }, 'CLUSTER NODES', (node) => node.slotView(slot));
  }

  countKeysInSlot(address: NodeAddress, slot: number): Promise<number> {
    return this.command('countKeysInSlot', address, { slot }, `COUNTKEYSINSLOT ${slot}`, (node) =>
      node.countKeysInSlot(slot),
    );
  }

  getKeysInSlot(address: NodeAddress, slot: number, count: number): Promise<Buffer[]> {
    return this.command('getKeysInSlot', address, { slot }, `GETKEYSINSLOT ${slot}`, (node) =>
      keysInSlot(node, slot, count).map((stored) => stored.name),
    );
  }

  setSlotImporting(address: NodeAddress, slot: number, sourceId: string): Promise<void> {
    const what = `SETSLOT ${slot} IMPORTING ${sourceId}`;
    return this.command('setSlotImporting', address, { slot }, what, (node) =>
      node.setSlotImporting(slot, sourceId),
    );
  }

  setSlotMigrating(address: NodeAddress, slot: number, targetId: string): Promise<void> {
    const what = `SETSLOT ${slot} MIGRATING ${targetId}`;
    return this.command('setSlotMigrating', address, { slot }, what, (node) =>
      node.setSlotMigrating(slot, targetId),
    );
  }

  setSlotNode(address: NodeAddress, slot: number, ownerId: string): Promise<void> {
    return this.command('setSlotNode', address, { slot }, `SETSLOT ${slot} NODE ${ownerId}`, (node) =>
      node.setSlotNode(slot, ownerId),
    );
  }

  setSlotStable(address: NodeAddress, slot: number): Promise<void> {
    return this.command('setSlotStable', address, { slot }, `SETSLOT ${slot} STABLE`, (node) =>
      node.setSlotStable(slot),
    );
  }

  addSlot(address: NodeAddress, slot: number): Promise<void> {
    return this.command('addSlot', address, { slot }, `ADDSLOTS ${slot}`, (node) => node.addSlot(slot));
  }

  async migrate(
    source: NodeAddress,
    target: NodeAddress,
    keys: readonly Buffer[],
    options: MigrateOptions,
  ): Promise<number> {
    if (keys.length === 0) return 0;
    const what = `MIGRATE ${keys.length} keys to ${target.host}:${target.port}`;
    const on = { slot: keySlot(keys[0]!), target, keys: keys.length, ...migrateOptions(options) };
    return this.command('migrate', source, on, what, (node) => {
      const present = keys.map((name) => node.lookup(name)).filter((stored) => stored !== undefined);
      return this.migrateKeys(node, target, present, options) === 'NOKEY' ? 0 : keys.length;
    });
  }

  /** The batch script of slot-commands.ts (MIGRATE_BATCH_SCRIPT), step by step, on the source. */
  migrateNextBatch(
    source: NodeAddress,
    target: NodeAddress,
    slot: number,
    limits: BatchLimits,
    options: MigrateOptions,
  ): Promise<MigrateBatchResult> {
    const count = Math.min(limits.maxKeys, MAX_SCRIPT_BATCH_KEYS);
    const what = `MIGRATE of up to ${count} keys of slot ${slot} to ${target.host}:${target.port}`;
    const on = { slot, target, ...migrateOptions(options) };
    return this.command('migrateNextBatch', source, on, what, (node) => {
      const began = Date.now() * 1000;
      const keys = keysInSlot(node, slot, count);
      if (keys.length === 0) return { keys: 0, moved: 0, bytes: 0, more: false };
      let more = keys.length === count;
      let batch = keys;
      let bytes = 0;
      if (limits.maxBytes > 0) {
        batch = [];
        for (const stored of keys) {
          const size = memoryUsage(stored);
          if (size > limits.maxBytes && batch.length === 0) {
            return { keys: 0, moved: 0, bytes: 0, more: true, bigKey: { name: stored.name, bytes: size } };
          }
          if (bytes + size > limits.maxBytes) {
            more = true;
            break;
          }
          bytes += size;
          batch.push(stored);
        }
      }
      // GETKEYSINSLOT does not expire keys; MIGRATE skips those that expired meanwhile (+NOKEY).
      const present = batch.filter((stored) => node.lookup(stored.name) !== undefined);
      const moved = this.migrateKeys(node, target, present, options) === 'NOKEY' ? 0 : batch.length;
      return {
        keys: batch.length,
        moved,
        bytes: moved > 0 ? bytes : 0,
        more,
        ranUs: { start: began, end: Date.now() * 1000 },
      };
    });
  }

  dumpKeys(address: NodeAddress, keys: readonly Buffer[], options: { asking: boolean }) {
    return this.command('dumpKeys', address, {}, `DUMP of ${keys.length} keys`, (node) =>
      keys.map((name) => {
        this.refuseRead(node, name, options.asking);
        const stored = node.lookup(name);
        return stored ? dumpPayload(stored.value) : null;
      }),
    );
  }

  canonicalValues(address: NodeAddress, keys: readonly Buffer[], options: { asking: boolean }) {
    return this.command('canonicalValues', address, {}, 'TYPE', (node) =>
      keys.map((name) => {
        this.refuseRead(node, name, options.asking);
        const stored = node.lookup(name);
        return stored ? JSON.stringify([stored.value.type, stored.value.content]) : null;
      }),
    );
  }

  // Redis 7.0 has no atomic slot migration: the listing is "none", the commands are unknown.
  serverMigrations(address: NodeAddress) {
    return this.command('serverMigrations', address, {}, 'CLUSTER GETSLOTMIGRATIONS', () => undefined);
  }

  startServerMigration(address: NodeAddress, _target: NodeAddress, slots: readonly number[]) {
    return this.command(
      'startServerMigration',
      address,
      {},
      `CLUSTER MIGRATESLOTS of ${slots.length} slots`,
      () => {
        throw new Error("ERR unknown subcommand 'MIGRATESLOTS'. Try CLUSTER HELP.");
      },
    );
  }

  cancelServerMigrations(address: NodeAddress) {
    return this.command('cancelServerMigrations', address, {}, 'CLUSTER CANCELSLOTMIGRATIONS', () => {
      throw new Error("ERR unknown subcommand 'CANCELSLOTMIGRATIONS'. Try CLUSTER HELP.");
    });
  }

  // --- how a command reaches a node ----------------------------------------------------------

  /**
   * One command to one node: logged, hooks run, a pending fault thrown, then the node's answer. An
   * error leaves through mapRedisError with the adapter's context ("<what> on <host:port>").
   */
  private async command<T>(
    method: PortMethod,
    address: NodeAddress,
    on: Pick<PortCall, 'slot' | 'keys' | 'timeoutMs' | 'replace'> & { target?: NodeAddress },
    what: string,
    run: (node: MemoryNode) => T,
  ): Promise<T> {
    const context = `${what} on ${address.host}:${address.port}`;
    const count = (this.callCounts.get(method) ?? 0) + 1;
    this.callCounts.set(method, count);
    const { target: _target, ...details } = on;
    const call: PortCall = { method, node: { host: address.host, port: address.port }, count, ...details };
    this.calls.push(call);
    for (const entry of this.hooks.filter((hook) => hook.when === 'before' && hook.method === method)) {
      await entry.hook(call);
    }
    let reply: T;
    try {
      const node = this.nodeAt(address);
      // A connection that cannot be made fails like a dropped one.
      if (!node) throw new Error(`connect ECONNREFUSED ${address.host}:${address.port}`);
      const fault = this.takeFault(method, node, on.slot);
      if (fault) this.throwFault(fault, node, on);
      reply = run(node);
    } catch (error) {
      throw mapRedisError(error, context);
    }
    for (const entry of this.hooks.filter((hook) => hook.when === 'after' && hook.method === method)) {
      await entry.hook(call);
    }
    return reply;
  }

  private nodeAt(address: NodeAddress): MemoryNode | undefined {
    return this.nodes.find((node) => node.host === address.host && node.port === address.port);
  }

  private takeFault(method: PortMethod, node: MemoryNode, slot: number | undefined) {
    const fault = this.faults.find(
      (candidate) =>
        candidate.method === method &&
        candidate.left > 0 &&
        (candidate.nodeId === undefined || candidate.nodeId === node.id) &&
        (candidate.slot === undefined || candidate.slot === slot),
    );
    if (fault) fault.left--;
    return fault;
  }

  private throwFault(
    fault: { reply: FaultReply; restoredKeys?: number },
    node: MemoryNode,
    on: { slot?: number; target?: NodeAddress },
  ): never {
    const { slot, target } = on;
    switch (fault.reply) {
      case FaultReply.BusyKey:
        // MIGRATE relays the target's refusal of RESTORE-ASKING.
        throw new ReplyError(
          `${target ? 'ERR Target instance replied with error: ' : ''}BUSYKEY Target key name already exists.`,
        );
      case FaultReply.IoError: {
        const holder = target && this.nodeAt(target);
        if (holder && slot !== undefined && fault.restoredKeys) {
          // The target restored these before the source gave up waiting: both nodes hold them now.
          for (const stored of keysInSlot(node, slot, fault.restoredKeys)) this.writeKey(holder, stored);
        }
        throw new ReplyError('IOERR error or timeout reading to target instance');
      }
      case FaultReply.TryAgain:
        throw new ReplyError('TRYAGAIN Multiple keys request during rehashing of slot');
      case FaultReply.ClusterDown:
        throw new ReplyError('CLUSTERDOWN The cluster is down');
      case FaultReply.ReadOnly:
        throw new ReplyError("READONLY You can't write against a read only replica.");
      case FaultReply.Connection:
        throw new Error('Connection is closed.');
      default: {
        const never: never = fault.reply;
        throw new Error(`unhandled fault: ${String(never)}`);
      }
    }
  }

  /**
   * migrateCommand: the keys that exist go to the target by RESTORE-ASKING, each deleted from the
   * source once the target accepted it; the first refusal is relayed as "Target instance replied
   * with error" (the keys accepted before and after it moved). MIGRATE is a write: a replica
   * refuses it.
   */
  private migrateKeys(
    source: MemoryNode,
    address: NodeAddress,
    present: readonly StoredKey[],
    options: MigrateOptions,
  ): number | 'NOKEY' {
    if (source.role === 'replica')
      throw new ReplyError("READONLY You can't write against a read only replica.");
    if (present.length === 0) return 'NOKEY';
    const target = this.nodeAt(address);
    if (!target) throw new ReplyError('IOERR error or timeout connecting to the client');
    let refusal: string | undefined;
    for (const stored of present) {
      const refused = this.restoreRefusal(target, stored, options.replace === true);
      if (refused !== undefined) {
        refusal ??= refused;
        continue;
      }
      this.writeKey(target, stored);
      this.deleteKey(source, stored.name);
    }
    if (refusal !== undefined) throw new ReplyError(`ERR Target instance replied with error: ${refusal}`);
    return present.length;
  }

  /**
   * Why a node refuses RESTORE-ASKING of a key (getNodeByQuery, then restoreCommand), or undefined:
   * it restores it. The key must be routed here, and must not exist unless REPLACE was given.
   */
  private restoreRefusal(node: MemoryNode, stored: StoredKey, replace: boolean): string | undefined {
    const redirected = this.redirect(node, stored.name, true);
    if (redirected !== undefined) return redirected;
    if (!replace && node.lookup(stored.name) !== undefined) return 'BUSYKEY Target key name already exists.';
    return undefined;
  }

  /** A read of one key (DUMP, TYPE...), refused with the redirection getNodeByQuery gives. */
  private refuseRead(node: MemoryNode, name: Buffer, asking: boolean): void {
    const redirected = this.redirect(node, name, asking);
    if (redirected !== undefined) throw new ReplyError(redirected);
  }

  /**
   * getNodeByQuery for a command on one key, in its order: a slot nobody serves, then a node whose
   * cluster is down (CLUSTERDOWN); a missing key of a slot the node owns and MIGRATES (ASK to the
   * target); a slot the node IMPORTS, asked with ASKING (served); a slot it does not own (MOVED).
   * Replicas are not READONLY clients here: a read there is MOVED to the owner too.
   */
  private redirect(node: MemoryNode, name: Buffer, asking: boolean): string | undefined {
    const slot = keySlot(name);
    const owner = node.owners[slot] ?? null;
    if (owner === null) return 'CLUSTERDOWN Hash slot not served';
    if (!node.stateOk) return 'CLUSTERDOWN The cluster is down';
    const migratingTo = owner === node.id ? node.migrating.get(slot) : undefined;
    if (migratingTo !== undefined && node.lookup(name) === undefined) {
      return `ASK ${slot} ${this.addressOf(migratingTo)}`;
    }
    if (migratingTo === undefined && node.importing.has(slot) && asking) return undefined;
    if (owner !== node.id) return `MOVED ${slot} ${this.addressOf(owner)}`;
    return undefined;
  }

  private addressOf(nodeId: string | null): string {
    return this.nodes.find((node) => node.id === nodeId)?.address ?? '?:0';
  }
}

// --- helpers --------------------------------------------------------------------------------------

function migrateOptions(options: MigrateOptions): Pick<PortCall, 'timeoutMs' | 'replace'> {
  return {
    timeoutMs: options.timeoutMs,
    ...(options.replace === undefined ? {} : { replace: options.replace }),
  };
}

export function keySlot(name: Buffer | string): number {
  return calculateSlot(typeof name === 'string' ? Buffer.from(name) : name);
}

/** A 40-hex-digit node id, the same for the same port in every run. */
function nodeId(port: number): string {
  return createHash('sha1').update(`memory-node-${port}`).digest('hex');
}

/** GETKEYSINSLOT: up to count keys of the slot, expired or not. */
function keysInSlot(node: MemoryNode, slot: number, count: number): StoredKey[] {
  const keys: StoredKey[] = [];
  for (const stored of node.keys.get(slot)?.values() ?? []) {
    if (keys.length >= count) break;
    keys.push(stored);
  }
  return keys;
}

/** MEMORY USAGE, roughly: the name, the value and a fixed overhead. */
export function memoryUsage(stored: StoredKey): number {
  return stored.name.length + Buffer.byteLength(stored.value.content) + 56;
}

function dumpPayload(value: MemoryValue): Buffer {
  return Buffer.from(JSON.stringify([value.type, value.encoding ?? 'default', value.content]));
}

function sameSlots(left: Uint8Array, right: Uint8Array): boolean {
  return Buffer.from(left.buffer, left.byteOffset, left.length).equals(
    Buffer.from(right.buffer, right.byteOffset, right.length),
  );
}
