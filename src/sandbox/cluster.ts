/**
 * A real Redis Cluster of loopback server processes (redis-server or valkey-server).
 *
 * It is built the way `redis-cli --cluster create` builds one (the same slot split, a distinct config
 * epoch per node, then CLUSTER REPLICATE), with one difference that only changes how soon it is ready:
 * redis-cli has each node MEET the first one and lets gossip introduce the rest, polling once a
 * second; here every pair of nodes MEETs directly, and a node added later is MET by every node, so
 * nobody waits for gossip to introduce anyone. Roles still spread by gossip, and nothing here trusts
 * what it asked for: every operation ends by polling CLUSTER INFO and CLUSTER NODES on every
 * responsive node until they agree, within a deadline.
 */
import type { ConnectionOptions } from 'node:tls';
import {
  type ClusterNodeEntry,
  parseClusterNodes,
  parseInfoField,
  SLOT_COUNT,
  slotOwners,
} from './cluster-nodes.js';
import type { NodeTarget } from './dataset.js';
import { requireRedisBinaries, type ServerIdentity } from './redis-binaries.js';
import {
  type AclUser,
  RedisProcess,
  redisUrl,
  SANDBOX_HOST,
  sleep,
  withAdminConnection,
} from './redis-process.js';
import type { SandboxCertificates } from './tls-certs.js';

/**
 * Exactly what slotfleet sends to cluster nodes, as ACL rules (docs/operations.md lists the same): the
 * CLUSTER subcommands it reads topology and moves slots with (SHARDS: the endpoint type, asked only of
 * clusters that announce hostnames), MIGRATE on the source (alone for a big
 * key, else inside the batch script, EVALSHA or EVAL, which also calls MEMORY USAGE and TIME), and on the
 * target what MIGRATE ... AUTH2 runs there as this user (SELECT, RESTORE-ASKING); PING, INFO
 * (ioredis' ready check), DBSIZE (cluster detail), CLIENT SETNAME (connection names).
 */
export const SLOTFLEET_ACL_RULES = [
  '~*',
  'resetchannels',
  '-@all',
  '+cluster|nodes',
  '+cluster|info',
  '+cluster|setslot',
  '+cluster|getkeysinslot',
  '+cluster|countkeysinslot',
  '+cluster|addslots',
  '+cluster|shards',
  '+migrate',
  '+evalsha',
  '+eval',
  '+memory|usage',
  '+time',
  '+dump',
  '+asking',
  '+restore-asking',
  '+select',
  '+ping',
  '+info',
  '+dbsize',
  '+client|setname',
].join(' ');

/**
 * What the atomic engine adds on Valkey 9 (Redis 7.0 and Valkey 8 refuse these names in ACL
 * SETUSER): the planner reads every master's server slot migrations, the engine starts and cancels
 * them. The source logs in to the target with its masteruser/masterauth for the snapshot, as a
 * replica would: that user needs +cluster|syncslots.
 */
export const SLOTFLEET_ATOMIC_ACL_RULES = [
  '+cluster|getslotmigrations',
  '+cluster|migrateslots',
  '+cluster|cancelslotmigrations',
].join(' ');

export interface SandboxClusterOptions {
  /** Masters, at least 3 (as `redis-cli --cluster create` requires). @defaultValue 3 */
  masters?: number;
  /** @defaultValue 1 */
  replicasPerMaster?: number;
  /** Applied to every node as `requirepass` and `masterauth`. */
  password?: string;
  /**
   * ACL mode instead of `password`: the `default` user is off on every node, and this user is the
   * one replication (`masteruser`) and every sandbox connection use.
   */
  aclUser?: AclUser;
  /** More users on every node (with `aclUser`), e.g. `{ ..., rules: SLOTFLEET_ACL_RULES }`. */
  extraAclUsers?: readonly AclUser[];
  /** `cluster-node-timeout`: how long a silent node takes to be flagged failing. @defaultValue 5000 */
  clusterNodeTimeoutMs?: number;
  /** Deadline for the cluster to agree after creation. @defaultValue 30000 */
  readyTimeoutMs?: number;
  /** More redis.conf directives on every node (e.g. `cluster-announce-hostname`), written last. */
  extraConfig?: Record<string, string>;
  /**
   * TLS-only nodes with these certificates (RedisProcessOptions.tls): clients, the cluster bus,
   * replication and MIGRATE all use TLS, and every address the cluster gives out is a TLS port.
   */
  tls?: SandboxCertificates;
}

export interface SandboxNode {
  id: string;
  host: string;
  port: number;
  role: 'master' | 'replica';
  masterId: string | null;
  slots: number;
  /** Flagged `fail` or `fail?` by the node the topology was read from. */
  failing: boolean;
}

export interface FailoverOptions {
  /** CLUSTER FAILOVER FORCE: do not wait for the master to agree (use when it is down or paused). */
  force?: boolean;
  /** @defaultValue 30000 */
  timeoutMs?: number;
  /**
   * Wait for every node to report cluster_state:ok afterwards. @defaultValue true. A failover of a
   * slot's source mid-migration leaves the target without an owner for that slot until the migration
   * closes its IMPORTING: a test that lets the migration go on must not wait for that here.
   */
  waitForConsensus?: boolean;
}

interface NodeView {
  node: RedisProcess;
  state: string;
  entries: ClusterNodeEntry[];
}

const POLL_INTERVAL_MS = 100;
const DEFAULT_TIMEOUT_MS = 30_000;
/** Redis aborts a manual failover after CLUSTER_MF_TIMEOUT (5 s); resend after that. */
const FAILOVER_RESEND_MS = 6000;
const MINIMUM_MASTERS = 3;

export class SandboxCluster {
  readonly nodes: RedisProcess[] = [];
  private readonly idsByPort = new Map<number, string>();
  private firstMasterPort = 0;

  readonly password: string | undefined;
  /** The ACL user sandbox connections log in as; undefined for the `default` user. */
  readonly username: string | undefined;

  private constructor(
    private readonly access: Pick<
      SandboxClusterOptions,
      'password' | 'aclUser' | 'extraAclUsers' | 'extraConfig' | 'tls'
    >,
    private readonly clusterNodeTimeoutMs: number,
  ) {
    this.password = access.aclUser?.password ?? access.password;
    this.username = access.aclUser?.username;
  }

  static async start(options: SandboxClusterOptions = {}): Promise<SandboxCluster> {
    const masterCount = options.masters ?? 3;
    const replicasPerMaster = options.replicasPerMaster ?? 1;
    if (!Number.isInteger(masterCount) || masterCount < MINIMUM_MASTERS) {
      throw new Error(
        `a sandbox cluster needs at least ${MINIMUM_MASTERS} masters (as redis-cli --cluster create does)`,
      );
    }
    if (!Number.isInteger(replicasPerMaster) || replicasPerMaster < 0) {
      throw new Error(`replicasPerMaster must be a non-negative integer, got ${replicasPerMaster}`);
    }
    await requireRedisBinaries();
    if (options.password !== undefined && options.aclUser !== undefined) {
      throw new Error('give a sandbox cluster either password or aclUser, not both');
    }
    const cluster = new SandboxCluster(
      {
        password: options.password,
        aclUser: options.aclUser,
        extraAclUsers: options.extraAclUsers,
        extraConfig: options.extraConfig,
        tls: options.tls,
      },
      options.clusterNodeTimeoutMs ?? 5000,
    );
    try {
      const started = await Promise.allSettled(
        Array.from({ length: masterCount * (1 + replicasPerMaster) }, () => cluster.startNode()),
      );
      const failure = started.find((result) => result.status === 'rejected');
      if (failure !== undefined) throw failure.reason;
      await Promise.all(cluster.nodes.map((node) => cluster.learnId(node)));
      await cluster.create(masterCount, options.readyTimeoutMs ?? DEFAULT_TIMEOUT_MS);
      await cluster.waitForConsensus(options.readyTimeoutMs ?? DEFAULT_TIMEOUT_MS);
      const topology = await cluster.topology();
      const firstMaster = topology
        .filter((entry) => entry.role === 'master' && entry.slots > 0)
        .sort((left, right) => left.port - right.port)[0];
      if (firstMaster === undefined) throw new Error('cluster has no master with slots after creation');
      cluster.firstMasterPort = firstMaster.port;
      await Promise.all(
        topology
          .filter((entry) => entry.role === 'replica')
          .map((entry) => cluster.waitForReplicaLink(entry.id, options.readyTimeoutMs ?? DEFAULT_TIMEOUT_MS)),
      );
      return cluster;
    } catch (error) {
      await cluster.stop();
      throw error;
    }
  }

  /**
   * A URL of the lowest-port master found at start-up; if that process is no longer
   * responsive, of any responsive node, so a client can still discover the cluster.
   */
  get seedUrl(): string {
    const seed = this.seedNode();
    return redisUrl(seed.port, this.password, SANDBOX_HOST, this.username, this.tls !== undefined);
  }

  /**
   * The seed node of `seedUrl` as parts, with the TLS options a client needs (a URL cannot carry a CA):
   * what seedDataset and verifyDataset take for a TLS cluster.
   */
  get seedTarget(): NodeTarget {
    const seed = this.seedNode();
    return {
      host: SANDBOX_HOST,
      port: seed.port,
      ...(this.username !== undefined ? { username: this.username } : {}),
      ...(this.password !== undefined ? { password: this.password } : {}),
      ...(this.tls !== undefined ? { tls: this.tls } : {}),
    };
  }

  /** Node TLS options for clients of a TLS cluster (the CA, the client certificate); else undefined. */
  get tls(): ConnectionOptions | undefined {
    return this.nodes[0]?.tls;
  }

  /** Which server the nodes run, as the first one reported it (INFO server): `valkey 9.1.2`. */
  get server(): ServerIdentity {
    const first = this.nodes[0];
    if (first === undefined) throw new Error('sandbox cluster has no nodes');
    return first.server;
  }

  /** Startup nodes for an ioredis `Cluster`: every responsive node. */
  startupNodes(): Array<{ host: string; port: number }> {
    return this.nodes
      .filter((node) => node.isResponsive)
      .map((node) => ({ host: node.host, port: node.port }));
  }

  /** Every pid started by this cluster, including restarted incarnations. */
  startedPids(): number[] {
    return this.nodes.flatMap((node) => node.pidHistory);
  }

  /** The topology as CLUSTER NODES on the first responsive node reports it, sorted by port. */
  async topology(): Promise<SandboxNode[]> {
    let lastError: unknown;
    for (const node of this.nodes.filter((candidate) => candidate.isResponsive)) {
      try {
        const entries = await this.readNodes(node);
        return entries
          .filter((entry) => !entry.joining)
          .map((entry) => ({
            id: entry.id,
            host: entry.host,
            port: entry.port,
            role: entry.role,
            masterId: entry.masterId,
            slots: entry.slots,
            failing: entry.failing,
          }))
          .sort((left, right) => left.port - right.port);
      } catch (error) {
        lastError = error;
      }
    }
    throw new Error('no responsive node could report the cluster topology', { cause: lastError });
  }

  async masters(): Promise<SandboxNode[]> {
    return (await this.topology()).filter((node) => node.role === 'master');
  }

  async replicasOf(masterId: string): Promise<SandboxNode[]> {
    return (await this.topology()).filter((node) => node.role === 'replica' && node.masterId === masterId);
  }

  /** The process behind a node id or port. */
  process(idOrPort: string | number): RedisProcess {
    const port = typeof idOrPort === 'number' ? idOrPort : this.portOf(idOrPort);
    const node = this.nodes.find((candidate) => candidate.port === port);
    if (node === undefined)
      throw new Error(`no sandbox node with ${typeof idOrPort === 'number' ? 'port' : 'id'} ${idOrPort}`);
    return node;
  }

  /** The node id of a process started by this cluster. */
  idOf(node: RedisProcess | number): string {
    const port = typeof node === 'number' ? node : node.port;
    const id = this.idsByPort.get(port);
    if (id === undefined) throw new Error(`no sandbox node id known for port ${port}`);
    return id;
  }

  async addEmptyMaster(timeoutMs = DEFAULT_TIMEOUT_MS): Promise<{ id: string; process: RedisProcess }> {
    const [added] = await this.addEmptyMasters(1, timeoutMs);
    return added!;
  }

  /** Adds `count` empty masters at once: they start side by side and join in one wait. */
  async addEmptyMasters(
    count: number,
    timeoutMs = DEFAULT_TIMEOUT_MS,
  ): Promise<{ id: string; process: RedisProcess }[]> {
    const added = await Promise.all(Array.from({ length: count }, () => this.startNode()));
    const ids = await Promise.all(added.map((node) => this.learnId(node)));
    await this.meet(added, timeoutMs);
    await this.waitForConsensus(timeoutMs);
    return added.map((node, index) => ({ id: ids[index]!, process: node }));
  }

  async addReplica(
    masterId: string,
    timeoutMs = DEFAULT_TIMEOUT_MS,
  ): Promise<{ id: string; process: RedisProcess }> {
    const node = await this.startNode();
    const id = await this.learnId(node);
    await this.meet([node], timeoutMs);
    // CLUSTER REPLICATE needs the new node to know the master, i.e. the MEET to have spread.
    await this.waitForConsensus(timeoutMs);
    await withAdminConnection(node, (connection) => connection.cluster('REPLICATE', masterId));
    const others = this.nodes.filter((other) => other !== node && other.isResponsive);
    await this.announce([node], others, timeoutMs);
    await this.waitUntil(timeoutMs, `node ${id} to replicate ${masterId}`, async () => {
      const views = await this.readViews();
      for (const view of views) {
        const entry = view.entries.find((candidate) => candidate.id === id);
        if (entry?.role !== 'replica' || entry.masterId !== masterId) {
          return `node ${describe(view.node)} sees ${id} as ${entry ? `${entry.role} of ${entry.masterId}` : 'unknown'}`;
        }
      }
      return null;
    });
    await this.waitForReplicaLink(id, timeoutMs);
    await this.waitForConsensus(timeoutMs);
    return { id, process: node };
  }

  /**
   * Promotes one responsive replica of `masterId` and waits until every responsive node agrees.
   * Returns the new master's id.
   */
  async failover(masterId: string, options: FailoverOptions = {}): Promise<string> {
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const replicas = (await this.replicasOf(masterId)).filter(
      (replica) => !replica.failing && this.process(replica.id).isResponsive,
    );
    const replica = replicas[0];
    if (replica === undefined)
      throw new Error(`master ${masterId} has no responsive replica to fail over to`);
    const replicaProcess = this.process(replica.id);
    const oldMaster = this.nodes.find((node) => this.idsByPort.get(node.port) === masterId);
    // A manual failover waits for the replica to match the master's offset; without a link it times out.
    if (!options.force) await this.waitForReplicaLink(replica.id, timeoutMs);

    let sentAt = 0;
    await this.waitUntil(timeoutMs, `replica ${replica.id} to take over from ${masterId}`, async () => {
      if (Date.now() - sentAt >= FAILOVER_RESEND_MS) {
        sentAt = Date.now();
        await withAdminConnection(replicaProcess, (connection) =>
          options.force ? connection.cluster('FAILOVER', 'FORCE') : connection.cluster('FAILOVER'),
        ).catch((error: unknown) => {
          // "You should send CLUSTER FAILOVER to a replica": the promotion already happened.
          if (!(error instanceof Error && /to a replica/i.test(error.message))) throw error;
        });
      }
      for (const view of await this.readViews()) {
        const promoted = view.entries.find((entry) => entry.id === replica.id);
        if (promoted?.role !== 'master')
          return `node ${describe(view.node)} still sees ${replica.id} as a replica`;
        if (oldMaster?.isResponsive) {
          const demoted = view.entries.find((entry) => entry.id === masterId);
          if (demoted?.role !== 'replica')
            return `node ${describe(view.node)} still sees ${masterId} as a master`;
        }
      }
      return null;
    });
    if (options.waitForConsensus !== false) await this.waitForConsensus(timeoutMs);
    return replica.id;
  }

  /**
   * Leaves `slot` the way redis-cli's clusterManagerMoveSlot leaves it when it dies after its first
   * MIGRATE: IMPORTING on the target, MIGRATING on the source, `keys` keys already on the target.
   * For tests of fix. @returns the number of keys moved.
   */
  async interruptMove(slot: number, sourceId: string, targetId: string, keys = 1): Promise<number> {
    const source = this.process(sourceId).client();
    const target = this.process(targetId).client();
    try {
      await target.call('CLUSTER', 'SETSLOT', slot, 'IMPORTING', sourceId);
      await source.call('CLUSTER', 'SETSLOT', slot, 'MIGRATING', targetId);
      const names = (await source.call('CLUSTER', 'GETKEYSINSLOT', slot, keys)) as string[];
      if (names.length > 0) {
        const auth =
          this.password === undefined
            ? []
            : this.username === undefined
              ? ['AUTH', this.password]
              : ['AUTH2', this.username, this.password];
        await source.call(
          'MIGRATE',
          SANDBOX_HOST,
          this.process(targetId).port,
          '',
          0,
          5000,
          ...auth,
          'KEYS',
          ...names,
        );
      }
      return names.length;
    } finally {
      source.disconnect();
      target.disconnect();
    }
  }

  /**
   * Waits until every responsive node reports cluster_state:ok, maps all 16384 slots to the
   * same owners, knows every other responsive node, and flags none of them fail or pfail.
   */
  async waitForConsensus(timeoutMs = DEFAULT_TIMEOUT_MS): Promise<void> {
    await this.waitUntil(timeoutMs, 'cluster consensus', () => this.consensusProblem());
  }

  async stopNode(idOrPort: string | number): Promise<void> {
    await this.process(idOrPort).stop();
  }

  async killNode(idOrPort: string | number): Promise<void> {
    await this.process(idOrPort).kill();
  }

  pauseNode(idOrPort: string | number): void {
    this.process(idOrPort).pause();
  }

  resumeNode(idOrPort: string | number): void {
    this.process(idOrPort).resume();
  }

  /** Restarts a node on the same port; it rejoins from its nodes.conf, without data (no persistence). */
  async restartNode(idOrPort: string | number): Promise<void> {
    await this.process(idOrPort).restart();
  }

  /** Stops every process this cluster started and deletes their directories. Safe to call twice. */
  async stop(): Promise<void> {
    await Promise.all(this.nodes.map((node) => node.stop()));
    await Promise.all(this.nodes.map((node) => node.removeDir()));
  }

  private async startNode(): Promise<RedisProcess> {
    const node = await RedisProcess.start({
      cluster: true,
      ...this.access,
      clusterNodeTimeoutMs: this.clusterNodeTimeoutMs,
    });
    this.nodes.push(node);
    return node;
  }

  /**
   * What `redis-cli --cluster create` does (clusterManagerCommandCreate), but for the MEETs: the first
   * `masterCount` nodes take redis-cli's slot split, every node gets its own config epoch (1, 2, ...)
   * while it still knows only itself, and the rest replicate the masters in turn once they know them.
   */
  private async create(masterCount: number, timeoutMs: number): Promise<void> {
    const masters = this.nodes.slice(0, masterCount);
    const replicas = this.nodes.slice(masterCount);
    // SET-CONFIG-EPOCH only works on a node that knows no other: before any MEET. Distinct epochs
    // spare the masters an epoch collision to resolve (what redis-cli's "Assign a different config
    // epoch to each node" is for).
    await Promise.all(
      this.nodes.map((node, index) =>
        withAdminConnection(node, (connection) => connection.cluster('SET-CONFIG-EPOCH', index + 1)),
      ),
    );
    await Promise.all(
      masters.map((node, index) => {
        const { first, last } = redisCliSlotRange(index, masterCount);
        return withAdminConnection(node, (connection) => connection.cluster('ADDSLOTSRANGE', first, last));
      }),
    );
    await this.meetPairs(
      this.nodes.flatMap((node, index) => this.nodes.slice(index + 1).map((other) => [node, other] as const)),
    );
    // CLUSTER REPLICATE needs the replica to know its master by id: every handshake done first.
    await this.waitForHandshakes(timeoutMs);
    await this.announce(masters, this.nodes, timeoutMs);
    await Promise.all(
      replicas.map((node, index) =>
        withAdminConnection(node, (connection) =>
          connection.cluster('REPLICATE', this.idOf(masters[index % masterCount]!)),
        ),
      ),
    );
    await this.announce(replicas, this.nodes, timeoutMs);
  }

  private async learnId(node: RedisProcess): Promise<string> {
    const id = await withAdminConnection(node, (connection) => connection.cluster('MYID'));
    this.idsByPort.set(node.port, id);
    return id;
  }

  /**
   * Every responsive node MEETs each new one (the new ones each other once), so they are known
   * everywhere without waiting for gossip; then the others announce themselves to the new ones.
   */
  private async meet(added: readonly RedisProcess[], timeoutMs: number): Promise<void> {
    const others = this.nodes.filter((node) => !added.includes(node) && node.isResponsive);
    if (others.length === 0) throw new Error('no responsive node to introduce the new node');
    await this.meetPairs(
      added.flatMap((node, index) =>
        [...others, ...added.slice(0, index)].map((introducer) => [introducer, node] as const),
      ),
    );
    await this.waitForHandshakes(timeoutMs);
    await this.announce(others, added, timeoutMs);
  }

  /** CLUSTER MEET, sent to the first node of each pair, of the second. */
  private async meetPairs(pairs: readonly (readonly [RedisProcess, RedisProcess])[]): Promise<void> {
    await Promise.all(
      pairs.map(([from, to]) =>
        withAdminConnection(from, (connection) => connection.cluster('MEET', to.host, to.port)),
      ),
    );
  }

  /**
   * Until every responsive node knows every other one by its id, and none still waits for an
   * answer to a MEET (a handshake) from one of them.
   */
  private async waitForHandshakes(timeoutMs: number): Promise<void> {
    const responsive = this.nodes.filter((node) => node.isResponsive);
    const addresses = new Set(responsive.map(describe));
    await this.waitUntil(timeoutMs, 'every node to know every other', async () => {
      for (const view of await this.readViews()) {
        for (const node of responsive) {
          const entry = view.entries.find((candidate) => candidate.id === this.idOf(node));
          if (entry === undefined || entry.joining)
            return `node ${describe(view.node)} does not know node ${describe(node)} yet`;
        }
        const pending = view.entries.filter(
          (entry) => entry.joining && addresses.has(`${entry.host}:${entry.port}`),
        );
        if (pending.length > 0) return `node ${describe(view.node)} has ${pending.length} MEETs unanswered`;
      }
      return null;
    });
  }

  /**
   * A MEET to a node that already knows the sender makes it read the sender's header at once: the
   * slots it serves, its role and master (cluster.c drops the extra handshake when the answer names
   * a known node). Otherwise that waits for their next ping, up to half the node timeout, and a fresh
   * master that has not heard of enough slot owners within its first 2 s also reports
   * cluster_state:fail for a node timeout more (its rejoin delay after being in a minority).
   */
  private async announce(
    from: readonly RedisProcess[],
    to: readonly RedisProcess[],
    timeoutMs: number,
  ): Promise<void> {
    await this.meetPairs(
      from.flatMap((sender) => to.filter((node) => node !== sender).map((node) => [sender, node] as const)),
    );
    await this.waitForHandshakes(timeoutMs);
  }

  /** The lowest-port master found at start-up; if it is no longer responsive, any responsive node. */
  private seedNode(): RedisProcess {
    const first = this.nodes.find((node) => node.port === this.firstMasterPort);
    const seed = first?.isResponsive ? first : (this.nodes.find((node) => node.isResponsive) ?? first);
    if (seed === undefined) throw new Error('sandbox cluster has no nodes');
    return seed;
  }

  private portOf(id: string): number {
    for (const [port, knownId] of this.idsByPort) if (knownId === id) return port;
    throw new Error(`no sandbox node with id ${id}`);
  }

  private async readNodes(node: RedisProcess): Promise<ClusterNodeEntry[]> {
    const text = await withAdminConnection(node, (connection) => connection.cluster('NODES'));
    return parseClusterNodes(String(text));
  }

  private async readViews(): Promise<NodeView[]> {
    return Promise.all(
      this.nodes
        .filter((node) => node.isResponsive)
        .map((node) =>
          withAdminConnection(node, async (connection) => {
            const [info, nodes] = await Promise.all([
              connection.cluster('INFO'),
              connection.cluster('NODES'),
            ]);
            return {
              node,
              state: parseInfoField(info, 'cluster_state') ?? 'unknown',
              entries: parseClusterNodes(String(nodes)),
            };
          }).catch((error: unknown) => {
            throw new Error(`node ${describe(node)} did not answer: ${errorMessage(error)}`, {
              cause: error,
            });
          }),
        ),
    );
  }

  private async consensusProblem(): Promise<string | null> {
    const views = await this.readViews();
    if (views.length === 0) return 'no responsive node';
    const responsiveIds = views.map((view) => this.idOf(view.node));
    let reference: { view: NodeView; owners: Array<string | null> } | undefined;
    for (const view of views) {
      const where = describe(view.node);
      if (view.state !== 'ok') return `node ${where} reports cluster_state:${view.state}`;
      for (const id of responsiveIds) {
        const entry = view.entries.find((candidate) => candidate.id === id);
        if (entry === undefined || entry.joining)
          return `node ${where} does not know node ${this.label(id)} yet`;
        if (entry.failing) return `node ${where} flags node ${this.label(id)} as ${entry.flags.join(',')}`;
      }
      const owners = slotOwners(view.entries);
      if (reference === undefined) {
        const unowned = owners.indexOf(null);
        if (unowned !== -1) return `node ${where} has no owner for slot ${unowned}`;
        reference = { view, owners };
        continue;
      }
      for (let slot = 0; slot < SLOT_COUNT; slot++) {
        if (owners[slot] !== reference.owners[slot]) {
          return `node ${where} maps slot ${slot} to ${owners[slot]} but node ${describe(reference.view.node)} maps it to ${reference.owners[slot]}`;
        }
      }
      for (const id of responsiveIds) {
        const mine = view.entries.find((candidate) => candidate.id === id);
        const theirs = reference.view.entries.find((candidate) => candidate.id === id);
        if (mine?.role !== theirs?.role || mine?.masterId !== theirs?.masterId) {
          return `node ${where} sees ${this.label(id)} as ${mine?.role} of ${mine?.masterId} but node ${describe(reference.view.node)} sees ${theirs?.role} of ${theirs?.masterId}`;
        }
      }
    }
    return null;
  }

  private async waitForReplicaLink(replicaId: string, timeoutMs: number): Promise<void> {
    const replica = this.process(replicaId);
    await this.waitUntil(timeoutMs, `replica ${this.label(replicaId)} to sync with its master`, async () => {
      const info = await withAdminConnection(replica, (connection) => connection.info('replication'));
      const linkStatus = parseInfoField(info, 'master_link_status');
      return linkStatus === 'up' ? null : `master_link_status:${linkStatus ?? 'absent'}`;
    });
  }

  /** Polls `check` (null means done, a string says what is still wrong) until the deadline. */
  private async waitUntil(
    timeoutMs: number,
    goal: string,
    check: () => Promise<string | null>,
  ): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let problem = 'not checked yet';
    while (Date.now() < deadline) {
      try {
        const current = await check();
        if (current === null) return;
        problem = current;
      } catch (error) {
        problem = errorMessage(error);
      }
      await sleep(POLL_INTERVAL_MS);
    }
    throw new Error(`timed out after ${timeoutMs} ms waiting for ${goal}: ${problem}`);
  }

  private label(id: string): string {
    const port = [...this.idsByPort].find(([, knownId]) => knownId === id)?.[0];
    return port === undefined ? id : `${id} (${SANDBOX_HOST}:${port})`;
  }
}

/**
 * The slots redis-cli gives the master at `index` of `masterCount` (clusterManagerCommandCreate): an
 * equal share rounded to the nearest slot as it goes, the last master taking the remainder. For 3:
 * 0-5460, 5461-10922, 10923-16383.
 */
export function redisCliSlotRange(index: number, masterCount: number): { first: number; last: number } {
  const perMaster = SLOT_COUNT / masterCount;
  let first = 0;
  let cursor = 0;
  for (let master = 0; ; master++) {
    let last = Math.round(cursor + perMaster - 1);
    if (last > SLOT_COUNT - 1 || master === masterCount - 1) last = SLOT_COUNT - 1;
    if (last < first) last = first;
    if (master === index) return { first, last };
    first = last + 1;
    cursor += perMaster;
  }
}

function describe(node: RedisProcess): string {
  return `${node.host}:${node.port}`;
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
