/**
 * A control Redis behind Sentinel, on loopback: a master and a replica (AOF on, as startControlRedis
 * runs the control Redis) watched by three redis-sentinel processes, for tests of a control Redis
 * that fails over. A sentinel is a RedisProcess too: redis-sentinel is redis-server started under
 * that name, reading a config file it rewrites (so the file lives in the process's own directory).
 * The master group is set at runtime with SENTINEL MONITOR and SENTINEL SET, which the sentinels
 * persist themselves; the replica is attached with REPLICAOF the same way.
 *
 * Failover is fast on purpose: the master is down after 1 s without a reply
 * (down-after-milliseconds), and a failover that stalls is started again after 2 x 4 s
 * (failover-timeout). A SIGKILLed master is replaced within a few seconds.
 *
 * Replication is asynchronous: a write the master acknowledged and died before passing on to its
 * replica is gone after a failover. settleReplication() closes that window on purpose, for a test
 * that must count exactly.
 */
import { parseInfoField } from './cluster-nodes.js';
import { requireRedisBinaries } from './redis-binaries.js';
import { RedisProcess, SANDBOX_HOST, sleep, withAdminConnection } from './redis-process.js';

/** The Debian package that provides redis-sentinel. */
export const SENTINEL_INSTALL_HINT = 'sudo apt-get install redis-sentinel';

export interface SandboxSentinelsOptions {
  /** The master group's name. @defaultValue slotfleet-control */
  name?: string;
  /** `requirepass` of the master and the replica; the sentinels are given it (auth-pass). */
  password?: string;
  /** The sentinels' own `requirepass` (what SLOTFLEET_SENTINEL_PASSWORD gives slotfleet). */
  sentinelPassword?: string;
  /** @defaultValue 3 (quorum 2) */
  sentinels?: number;
  /** Sentinel's down-after-milliseconds. @defaultValue 1000 */
  downAfterMs?: number;
  /** Sentinel's failover-timeout in ms. @defaultValue 4000 */
  failoverTimeoutMs?: number;
  /** redis-sentinel, a name or a path. @defaultValue redis-sentinel */
  sentinelPath?: string;
  /** How long start and each wait for the sentinels may take. @defaultValue 30000 */
  timeoutMs?: number;
}

const DEFAULT_TIMEOUT_MS = 30_000;
const POLL_INTERVAL_MS = 100;

export class SandboxSentinels {
  private constructor(
    readonly name: string,
    /** The master and its replica, in start order; which is master changes with each failover. */
    readonly dataNodes: readonly RedisProcess[],
    readonly sentinels: readonly RedisProcess[],
    private readonly password: string | undefined,
    private readonly timeoutMs: number,
  ) {}

  /** Starts the master, its replica and the sentinels; resolves once every sentinel knows them all. */
  static async start(options: SandboxSentinelsOptions = {}): Promise<SandboxSentinels> {
    const sentinelPath = await requireSentinelBinary(options.sentinelPath ?? 'redis-sentinel');
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const name = options.name ?? 'slotfleet-control';
    const count = options.sentinels ?? 3;
    const started: RedisProcess[] = [];
    const startOne = async (start: () => Promise<RedisProcess>) => {
      const node = await start();
      started.push(node);
      return node;
    };
    try {
      const access = options.password === undefined ? {} : { password: options.password };
      const master = await startOne(() => RedisProcess.start({ appendonly: true, ...access }));
      const replica = await startOne(() => RedisProcess.start({ appendonly: true, ...access }));
      await replicate(replica, master, timeoutMs);
      const sentinels: RedisProcess[] = [];
      for (let index = 0; index < count; index++) {
        sentinels.push(
          await startOne(() =>
            RedisProcess.start({
              serverPath: sentinelPath,
              ...(options.sentinelPassword === undefined ? {} : { password: options.sentinelPassword }),
            }),
          ),
        );
      }
      const settings = [
        'down-after-milliseconds',
        String(options.downAfterMs ?? 1_000),
        'failover-timeout',
        String(options.failoverTimeoutMs ?? 4_000),
        ...(options.password === undefined ? [] : ['auth-pass', options.password]),
      ];
      const quorum = Math.floor(count / 2) + 1;
      for (const sentinel of sentinels) {
        await withAdminConnection(sentinel, async (connection) => {
          await connection.call('SENTINEL', 'MONITOR', name, SANDBOX_HOST, master.port, quorum);
          await connection.call('SENTINEL', 'SET', name, ...settings);
        });
      }
      const group = new SandboxSentinels(name, [master, replica], sentinels, options.password, timeoutMs);
      await group.waitUntilKnown();
      return group;
    } catch (error) {
      await Promise.allSettled(started.map((node) => node.stop()));
      await Promise.allSettled(started.map((node) => node.removeDir()));
      throw error;
    }
  }

  /** SLOTFLEET_CONTROL_URL: redis+sentinel://[:password@]every sentinel/name (their password apart). */
  get url(): string {
    const auth = this.password === undefined ? '' : `:${encodeURIComponent(this.password)}@`;
    const sentinels = this.sentinels.map((sentinel) => `${sentinel.host}:${sentinel.port}`).join(',');
    return `redis+sentinel://${auth}${sentinels}/${encodeURIComponent(this.name)}`;
  }

  /** Every pid this group spawned, restarts included. */
  startedPids(): number[] {
    return [...this.dataNodes, ...this.sentinels].flatMap((node) => node.pidHistory);
  }

  /** The data node on `port`. */
  process(port: number): RedisProcess {
    const node = this.dataNodes.find((candidate) => candidate.port === port);
    if (node === undefined) throw new Error(`no data node of ${this.name} on port ${port}`);
    return node;
  }

  /** The master the first responsive sentinel names. */
  async master(): Promise<RedisProcess> {
    let lastError: unknown;
    for (const sentinel of this.sentinels.filter((candidate) => candidate.isResponsive)) {
      try {
        return this.process(await this.masterPortOf(sentinel));
      } catch (error) {
        lastError = error;
      }
    }
    throw new Error(`no sentinel of ${this.name} names a master`, { cause: lastError });
  }

  /** SIGKILLs the master, as a crash: no shutdown, no last writes. Returns the node killed. */
  async killMaster(): Promise<RedisProcess> {
    const master = await this.master();
    await master.kill();
    return master;
  }

  /** SENTINEL FAILOVER: promotes the replica while the master is up. Resolves with the new master. */
  async failover(): Promise<RedisProcess> {
    const before = await this.master();
    const sentinel = this.sentinels.find((candidate) => candidate.isResponsive);
    if (sentinel === undefined) throw new Error(`no sentinel of ${this.name} is running`);
    await withAdminConnection(sentinel, (connection) => connection.call('SENTINEL', 'FAILOVER', this.name));
    return this.waitForNewMaster(before.port);
  }

  /**
   * Waits until every running sentinel names the same master, other than `formerPort`, and that node
   * says role:master; returns it.
   */
  async waitForNewMaster(formerPort: number): Promise<RedisProcess> {
    const deadline = Date.now() + this.timeoutMs;
    let seen = 'nothing yet';
    while (Date.now() < deadline) {
      try {
        const ports = await Promise.all(
          this.sentinels.filter((node) => node.isResponsive).map((node) => this.masterPortOf(node)),
        );
        const port = ports[0];
        seen = `sentinels name ${ports.join(', ')}`;
        if (port !== undefined && port !== formerPort && ports.every((each) => each === port)) {
          const candidate = this.process(port);
          const role = await withAdminConnection(candidate, async (connection) =>
            parseInfoField(await connection.info('replication'), 'role'),
          );
          if (role === 'master') return candidate;
          seen += `, ${port} says role:${role}`;
        }
      } catch (error) {
        seen = error instanceof Error ? error.message : String(error);
      }
      await sleep(POLL_INTERVAL_MS);
    }
    throw new Error(`${this.name}: no new master after ${formerPort} within ${this.timeoutMs} ms (${seen})`);
  }

  /**
   * Pauses the master's writes (CLIENT PAUSE WRITE, for `pauseMs`) and waits until every replica
   * attached to it has processed its whole replication stream: a kill right after loses no write
   * the master acknowledged. Clients' writes wait meanwhile, unanswered.
   */
  async settleReplication(pauseMs = 10_000): Promise<void> {
    const master = await this.master();
    const masterOffset = await withAdminConnection(master, async (connection) => {
      await connection.call('CLIENT', 'PAUSE', pauseMs, 'WRITE');
      return Number(parseInfoField(await connection.info('replication'), 'master_repl_offset'));
    });
    const replicas = this.dataNodes.filter((node) => node !== master && node.isResponsive);
    const deadline = Date.now() + Math.min(pauseMs, this.timeoutMs);
    for (const replica of replicas) {
      let offset = -1;
      while (offset < masterOffset) {
        if (Date.now() > deadline) {
          throw new Error(
            `replica ${replica.port} at offset ${offset} of master ${master.port}'s ${masterOffset}`,
          );
        }
        const info = await withAdminConnection(replica, (connection) => connection.info('replication'));
        offset =
          parseInfoField(info, 'master_port') === String(master.port)
            ? Number(parseInfoField(info, 'slave_repl_offset'))
            : -1;
        if (offset < masterOffset) await sleep(10);
      }
    }
  }

  /**
   * Starts a stopped or killed data node again as a replica of the current master (a restarted
   * master would otherwise come up a master with its old data until the sentinels convert it).
   */
  async restartAsReplica(node: RedisProcess): Promise<void> {
    const master = await this.master();
    if (master === node) throw new Error(`${node.port} is ${this.name}'s master`);
    await node.restart();
    await replicate(node, master, this.timeoutMs);
  }

  /** Stops the sentinels first (no failover while the data nodes go), then the data nodes. */
  async stop(): Promise<void> {
    await Promise.all(this.sentinels.map((node) => node.stop()));
    await Promise.all(this.dataNodes.map((node) => node.stop()));
    await Promise.all([...this.sentinels, ...this.dataNodes].map((node) => node.removeDir()));
  }

  private async masterPortOf(sentinel: RedisProcess): Promise<number> {
    const reply = await withAdminConnection(sentinel, (connection) =>
      connection.call('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', this.name),
    );
    if (!Array.isArray(reply) || reply.length !== 2) {
      throw new Error(`sentinel ${sentinel.port} knows no master ${this.name}`);
    }
    return Number(reply[1]);
  }

  /** Every sentinel sees the master up, its replica and every other sentinel (hello messages, ~2 s). */
  private async waitUntilKnown(): Promise<void> {
    const deadline = Date.now() + this.timeoutMs;
    let problem = 'nothing asked yet';
    while (Date.now() < deadline) {
      problem = '';
      for (const sentinel of this.sentinels) {
        const reply = (await withAdminConnection(sentinel, (connection) =>
          connection.call('SENTINEL', 'MASTER', this.name),
        )) as string[];
        const fields = new Map<string, string>();
        for (let index = 0; index + 1 < reply.length; index += 2)
          fields.set(reply[index]!, reply[index + 1]!);
        const others = Number(fields.get('num-other-sentinels'));
        const replicas = Number(fields.get('num-slaves'));
        if (fields.get('flags') !== 'master' || others !== this.sentinels.length - 1 || replicas < 1) {
          problem += `sentinel ${sentinel.port}: flags ${fields.get('flags')}, ${others} other sentinels, ${replicas} replicas; `;
        }
      }
      if (problem === '') return;
      await sleep(POLL_INTERVAL_MS);
    }
    throw new Error(`the sentinels of ${this.name} did not find each other: ${problem}`);
  }
}

/** REPLICAOF, then waits for the link to be up (the first sync done). */
async function replicate(replica: RedisProcess, master: RedisProcess, timeoutMs: number): Promise<void> {
  await withAdminConnection(replica, (connection) => connection.call('REPLICAOF', master.host, master.port));
  const deadline = Date.now() + timeoutMs;
  let status: string | undefined;
  while (Date.now() < deadline) {
    const info = await withAdminConnection(replica, (connection) => connection.info('replication'));
    status = parseInfoField(info, 'master_link_status');
    if (status === 'up') return;
    await sleep(POLL_INTERVAL_MS);
  }
  throw new Error(
    `replica ${replica.port} of ${master.port}: link ${status ?? 'unknown'} after ${timeoutMs} ms`,
  );
}

/** redis-sentinel's path, or a failure naming the package that provides it. */
async function requireSentinelBinary(nameOrPath: string): Promise<string> {
  try {
    // The same lookup as the server's (PATH, /usr/bin, /usr/local/bin; 7.0 or newer): it is one.
    return (await requireRedisBinaries({ serverPath: nameOrPath })).serverPath;
  } catch (error) {
    throw new Error(
      `${nameOrPath} is missing or unusable, and the Sentinel sandbox needs it: install it with ${SENTINEL_INSTALL_HINT}`,
      { cause: error },
    );
  }
}
