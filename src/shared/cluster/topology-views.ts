/**
 * CLUSTER NODES, read and parsed as little as possible. Redis 7.0 builds that reply from all 16384
 * slots on every call and dozens of slot jobs ask each node at once, so the reads of a node are
 * shared (one in flight, one queued for everyone who asks meanwhile), and each text is parsed once,
 * whoever reads it: the whole view for planning, and a slot index built from it for the slot jobs.
 *
 * Every node address the process uses comes from these parses (plans, job payloads, the masters a
 * slot job assigns the slot on), so they all follow one endpoint type: once a reply names a
 * hostname, the cluster's cluster-preferred-endpoint-type is asked once (CLUSTER SHARDS) and kept
 * for the life of the process. A cluster without hostnames is never asked: the type changes nothing.
 */

import type { RedisEndpoint } from '../config.js';
import type { ClusterSnapshot } from '../domain/plan.js';
import { snapshotFromViews } from '../domain/plan.js';
import {
  announcesHostname,
  type ClusterNode,
  EndpointType,
  endpointTypeFromShards,
  NodeRole,
  type NodeView,
  nodeAddress,
  parseClusterNodes,
  type SlotView,
  type SlotViewIndex,
  slotViewIndex,
} from '../domain/topology.js';
import { ErrorCode, SlotfleetError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { NodeConnections } from './connections.js';
import { mapRedisError } from './error-map.js';
import type { NodeAddress } from './port.js';

/** A node's CLUSTER NODES reads: the one awaiting its reply, and the one waiting to be sent. */
interface NodesReads {
  answering?: Promise<void>;
  queued?: Promise<string>;
}

export class TopologyViews {
  private readonly nodesReads = new Map<string, NodesReads>();
  /**
   * The last CLUSTER NODES text per address and its parse, stored before anything is awaited: every
   * reader of a shared read resumes with the same text, and one that found no entry while another's
   * parse was still waiting (for the endpoint type) parsed it again. Mid-rebalance a text parsed
   * by every job waiting on it was a third of a worker's CPU (docs/performance.md).
   */
  private readonly parsedViews = new Map<string, { text: string; view: Promise<NodeView> }>();
  /** The slot index of each parse above, built once per parse. */
  private readonly slotIndexes = new WeakMap<NodeView, SlotViewIndex>();
  private knownAddresses: NodeAddress[];
  /** The cluster's endpoint type, once a reply named a hostname and it was asked (see endpointTypeFor). */
  private endpointType: EndpointType | undefined;
  private askingEndpointType: Promise<EndpointType> | undefined;

  constructor(
    private readonly clusterName: string,
    private readonly seed: RedisEndpoint,
    private readonly connections: NodeConnections,
    private readonly logger?: Logger,
  ) {
    this.knownAddresses = [{ host: seed.host, port: seed.port }];
  }

  /** The first address to try for a command that any node can answer. */
  get anyAddress(): NodeAddress {
    return this.knownAddresses[0]!;
  }

  /** CLUSTER NODES of one node, parsed. */
  async readView(node: NodeAddress): Promise<NodeView> {
    return this.parsedView(node, await this.clusterNodesText(node));
  }

  /** One node's opinion of one slot (owner, open state, epochs), read cheaply from CLUSTER NODES. */
  async readSlotView(node: NodeAddress, slot: number): Promise<SlotView> {
    const view = await this.readView(node);
    let index = this.slotIndexes.get(view);
    if (!index) {
      index = slotViewIndex(view);
      this.slotIndexes.set(view, index);
    }
    return index.slotView(slot);
  }

  /** The parse of a node's text: the one stored when the text is the one parsed last. */
  private parsedView(node: NodeAddress, text: string): Promise<NodeView> {
    const key = nodeAddress(node);
    const parsed = this.parsedViews.get(key);
    if (parsed?.text === text) return parsed.view;
    const entry = {
      text,
      view: this.endpointTypeFor(node, text).then((endpointType) => parseClusterNodes(text, endpointType)),
    };
    this.parsedViews.set(key, entry);
    // A failed parse (the endpoint type unanswered, a malformed text) is not kept: the next read asks again.
    entry.view.catch(() => {
      if (this.parsedViews.get(key) === entry) this.parsedViews.delete(key);
    });
    return entry.view;
  }

  /** A view from the seed node, or from any node seen before if the seed does not answer. */
  async readAnyView(): Promise<NodeView> {
    let lastError: unknown;
    for (const address of this.knownAddresses) {
      try {
        const view = await this.readView(address);
        this.knownAddresses = uniqueAddresses([
          address,
          ...view.nodes.filter((node) => !node.failed).map((node) => ({ host: node.host, port: node.port })),
          { host: this.seed.host, port: this.seed.port },
        ]);
        return view;
      } catch (error) {
        lastError = error;
      }
    }
    throw mapRedisError(lastError, `cluster ${this.clusterName}: no node answered CLUSTER NODES`);
  }

  /** The masters reachable according to a fresh view, for finalization and checks. */
  async masters(): Promise<ClusterNode[]> {
    const view = await this.readAnyView();
    return view.nodes.filter((node) => node.role === NodeRole.Master && !node.failed);
  }

  /** The seed's node list plus every reachable master's own open slots. */
  async snapshot(): Promise<ClusterSnapshot> {
    const seedView = await this.readAnyView();
    const masters = seedView.nodes.filter((node) => node.role === NodeRole.Master && !node.failed);
    const views = await Promise.all(masters.map((master) => this.readView(master)));
    return snapshotFromViews(seedView, views);
  }

  /**
   * How to address the nodes this text lists. Asked of the node that wrote the first text naming a
   * hostname, once: a plan and the jobs it enqueues must name each node alike, and the type is a
   * setting operators choose when they deploy. CLUSTER SHARDS rather than CONFIG GET, which an ACL
   * user for slot moves should not have; a node that refuses it (an ACL user without
   * +cluster|shards, a renamed command) leaves the ips, as slotfleet used before it read hostnames.
   */
  private async endpointTypeFor(node: NodeAddress, text: string): Promise<EndpointType> {
    if (this.endpointType !== undefined) return this.endpointType;
    if (!announcesHostname(text)) return EndpointType.Ip;
    this.askingEndpointType ??= this.askEndpointType(node).finally(() => {
      this.askingEndpointType = undefined;
    });
    return this.askingEndpointType;
  }

  private async askEndpointType(node: NodeAddress): Promise<EndpointType> {
    let endpointType: EndpointType;
    try {
      endpointType = endpointTypeFromShards(
        await this.connections.run(node, 'CLUSTER SHARDS', (redis) => redis.call('CLUSTER', 'SHARDS')),
      );
      this.logger?.info(
        { endpointType, node: nodeAddress(node) },
        'nodes announce hostnames: addressing them as cluster-preferred-endpoint-type says',
      );
    } catch (error) {
      // Unanswered: the next read asks again.
      if (error instanceof SlotfleetError && error.code === ErrorCode.Connection) throw error;
      endpointType = EndpointType.Ip;
      this.logger?.warn(
        { err: (error as Error).message, node: nodeAddress(node) },
        'nodes announce hostnames but CLUSTER SHARDS was refused: addressing them by ip whatever ' +
          "cluster-preferred-endpoint-type says (give slotfleet's user +cluster|shards)",
      );
    }
    this.endpointType = endpointType;
    return endpointType;
  }

  /**
   * CLUSTER NODES of one node, shared: the requests made before a read is written share it. That is
   * still a fresh read for each of them: it is answered after every command whose reply they had
   * already seen.
   */
  private clusterNodesText(node: NodeAddress): Promise<string> {
    const key = nodeAddress(node);
    let reads = this.nodesReads.get(key);
    if (!reads) {
      reads = {};
      this.nodesReads.set(key, reads);
    }
    const state = reads;
    if (state.queued) return state.queued;
    // One read in flight per node: the next one leaves when it is answered, for everyone who asked
    // meanwhile. Under load a node's view is then built once per round trip, not once per slot job.
    const previous = state.answering ?? Promise.resolve();
    const read: Promise<string> = previous.then(() => {
      const sent = this.connections
        .run(node, 'CLUSTER NODES', (redis) => {
          // Written now: whoever asks from here on needs a read that leaves later.
          if (state.queued === read) state.queued = undefined;
          return redis.call('CLUSTER', 'NODES');
        })
        .then(String);
      state.answering = sent.then(
        () => undefined,
        () => undefined,
      );
      return sent;
    });
    state.queued = read;
    const forget = () => {
      if (state.queued === read) state.queued = undefined;
    };
    read.then(forget, forget);
    return read;
  }
}

function uniqueAddresses(addresses: NodeAddress[]): NodeAddress[] {
  const seen = new Set<string>();
  return addresses.filter((address) => {
    const key = nodeAddress(address);
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}
