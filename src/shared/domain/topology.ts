/**
 * Parsing CLUSTER NODES into data. Pure: the cluster adapter fetches the text, this module reads it.
 *
 * One CLUSTER NODES reply is one node's view of the cluster. Only the node itself ("myself") lists
 * its open slots: "[slot->-target]" while MIGRATING and "[slot-<-source]" while IMPORTING. So the
 * state of a slot migration can only be known by asking the source and the target themselves.
 *
 * A node's address is "ip:port@cport", followed by ",hostname" when it announces one
 * (cluster-announce-hostname, Redis 7.0+). Which of the two clients should use is the cluster's
 * cluster-preferred-endpoint-type, which CLUSTER NODES does not show: the parsers take it as an
 * argument (the adapter learns it from CLUSTER SHARDS, endpointTypeFromShards), and every address
 * they return (ClusterNode.host, SlotView.masters) is the one it names.
 */
import { ErrorCode, SlotfleetError } from '../errors.js';
import { SLOT_COUNT, type SlotRange } from './slots.js';

export const NodeRole = { Master: 'master', Replica: 'replica' } as const;
export type NodeRole = (typeof NodeRole)[keyof typeof NodeRole];

/**
 * cluster-preferred-endpoint-type: what a cluster tells its clients to reach a node by (CLUSTER
 * SLOTS, CLUSTER SHARDS, MOVED and ASK). Redis' default is ip.
 */
export const EndpointType = { Ip: 'ip', Hostname: 'hostname', UnknownEndpoint: 'unknown-endpoint' } as const;
export type EndpointType = (typeof EndpointType)[keyof typeof EndpointType];

export interface ClusterNode {
  readonly id: string;
  /** Where slotfleet reaches the node: its hostname or its ip, as endpointHost picks. */
  readonly host: string;
  /** The ip CLUSTER NODES lists for it (empty while a node has no address). */
  readonly ip: string;
  /** The hostname it announces; null when it announces none. */
  readonly hostname: string | null;
  readonly port: number;
  readonly busPort: number;
  readonly role: NodeRole;
  /** For a replica, the id of its master; null for masters. */
  readonly masterId: string | null;
  readonly flags: readonly string[];
  readonly myself: boolean;
  /** Flagged fail, fail?, noaddr or handshake: not a node to send work to. */
  readonly failed: boolean;
  readonly linkConnected: boolean;
  readonly configEpoch: number;
  readonly slots: readonly SlotRange[];
}

/** What one node says: every node it knows, and its own open slots. */
export interface NodeView {
  readonly myself: ClusterNode;
  readonly nodes: readonly ClusterNode[];
  /** slot -> id of the node this node is importing it from. */
  readonly importing: ReadonlyMap<number, string>;
  /** slot -> id of the node this node is migrating it to. */
  readonly migrating: ReadonlyMap<number, string>;
}

/**
 * Which address reaches a node. A node that announces no hostname is reached by its ip whatever the
 * type (Redis tells clients "?" for it then: there is nothing else to use). unknown-endpoint means the
 * clients should keep using the one address they were given (a load balancer in front of the
 * cluster); slotfleet must reach each node, and its ip is the address the other nodes use.
 */
export function endpointHost(
  node: { readonly ip: string; readonly hostname: string | null },
  endpointType: EndpointType,
): string {
  switch (endpointType) {
    case EndpointType.Hostname:
      return node.hostname ?? node.ip;
    case EndpointType.Ip:
    case EndpointType.UnknownEndpoint:
      return node.ip;
    default: {
      const never: never = endpointType;
      throw new Error(`unhandled endpoint type: ${never}`);
    }
  }
}

/** Whether some line of a CLUSTER NODES text names a hostname: only then does the endpoint type matter. */
export function announcesHostname(text: string): boolean {
  return HOSTNAME_IN_ADDRESS.test(text);
}

// The second field of a line: "ip:port@cport," then a hostname (an empty one, or an auxiliary
// "name=value" field of nodes.conf, is none).
const HOSTNAME_IN_ADDRESS = /^\S+ [^\s,]+,[^\s,=]+[\s,]/m;

/**
 * The endpoint type a node's CLUSTER SHARDS reply shows (RESP2: maps as flat [name, value, ...]
 * lists). Each node lists its "ip", its "hostname" when it has one, and the "endpoint" clients
 * should use: "" for unknown-endpoint, "?" for hostname where the node has none, else its hostname or
 * its ip. Without a node that tells them apart (no hostname anywhere), ip: the type changes nothing then.
 */
export function endpointTypeFromShards(reply: unknown): EndpointType {
  for (const shard of asList(reply)) {
    for (const node of asList(fieldsOf(shard).get('nodes'))) {
      const fields = fieldsOf(node);
      const endpoint = fields.get('endpoint');
      if (endpoint === undefined) continue;
      if (endpoint === null || String(endpoint) === '') return EndpointType.UnknownEndpoint;
      if (String(endpoint) === '?') return EndpointType.Hostname;
      const ip = String(fields.get('ip') ?? '');
      const hostname = String(fields.get('hostname') ?? '');
      if (hostname === '' || hostname === ip) continue;
      if (String(endpoint) === hostname) return EndpointType.Hostname;
      if (String(endpoint) === ip) return EndpointType.Ip;
    }
  }
  return EndpointType.Ip;
}

function asList(value: unknown): readonly unknown[] {
  return Array.isArray(value) ? value : [];
}

/** A RESP2 map (a flat [name, value, ...] list) by name. */
function fieldsOf(value: unknown): Map<string, unknown> {
  const list = asList(value);
  const fields = new Map<string, unknown>();
  for (let index = 0; index + 1 < list.length; index += 2) fields.set(String(list[index]), list[index + 1]);
  return fields;
}

/** @param endpointType how the cluster addresses its nodes. @defaultValue ip */
export function parseClusterNodes(text: string, endpointType: EndpointType = EndpointType.Ip): NodeView {
  const nodes: ClusterNode[] = [];
  const importing = new Map<number, string>();
  const migrating = new Map<number, string>();
  for (const line of text.split('\n')) {
    const trimmed = line.trim();
    if (trimmed === '') continue;
    const fields = trimmed.split(' ');
    const { id, address, flagText, master, epochText, linkState } = fixedFields(fields, trimmed);
    const { ip, hostname, port, busPort } = parseAddress(address);
    const flags = flagText.split(',');
    const myself = flags.includes('myself');
    const slots: SlotRange[] = [];
    for (let index = 8; index < fields.length; index++) {
      const token = fields[index]!;
      if (token.charCodeAt(0) === 91 /* [ */) {
        const open = /^\[(\d+)-([<>])-([0-9a-f]+)\]$/.exec(token);
        if (!open) throw malformed(`unexpected slot token "${token}"`);
        const slot = Number(open[1]);
        if (open[2] === '>') migrating.set(slot, open[3]!);
        else importing.set(slot, open[3]!);
        continue;
      }
      const range = slotRangeOf(token);
      if (!range) throw malformed(`unexpected slot token "${token}"`);
      slots.push(range);
    }
    nodes.push({
      id,
      host: endpointHost({ ip, hostname }, endpointType),
      ip,
      hostname,
      port,
      busPort,
      role: flags.includes('master') ? NodeRole.Master : NodeRole.Replica,
      masterId: master === '-' ? null : master,
      flags,
      myself,
      failed: isFlaggedFailing({ flags }) || isJoining({ flags }),
      linkConnected: linkState === 'connected',
      configEpoch: Number(epochText),
      slots,
    });
  }
  const self = nodes.find((node) => node.myself);
  if (!self) throw malformed('no line is flagged myself');
  return { myself: self, nodes, importing, migrating };
}

/**
 * "5461" or "0-5460", read by character: a reply mid-rebalance lists thousands of them, and a
 * regular expression per token was most of a worker's time spent parsing. Undefined if not one.
 */
function slotRangeOf(token: string): SlotRange | undefined {
  const dash = token.indexOf('-');
  const start = decimalIn(token, 0, dash < 0 ? token.length : dash);
  const end = dash < 0 ? start : decimalIn(token, dash + 1, token.length);
  return start < 0 || end < 0 ? undefined : { start, end };
}

/** The decimal number text[from, to) spells, or -1 when it is empty or holds anything else. */
function decimalIn(text: string, from: number, to: number): number {
  if (from >= to || to - from > 9) return -1;
  let value = 0;
  for (let index = from; index < to; index++) {
    const digit = text.charCodeAt(index) - 48;
    if (digit < 0 || digit > 9) return -1;
    value = value * 10 + digit;
  }
  return value;
}

/** Flagged `fail`, or `fail?` (pfail), by the node that wrote the line. */
export function isFlaggedFailing(node: Pick<ClusterNode, 'flags'>): boolean {
  return node.flags.includes('fail') || node.flags.includes('fail?');
}

/** Still in handshake, or without an address: not a member of the cluster yet. */
export function isJoining(node: Pick<ClusterNode, 'flags'>): boolean {
  return node.flags.includes('handshake') || node.flags.includes('noaddr');
}

/** What one node's CLUSTER NODES says about one slot: all a slot job needs to know from it. */
export interface SlotView {
  readonly myselfId: string;
  readonly myselfEpoch: number;
  /** False once the node became a replica (a master left without slots follows their new owner). */
  readonly myselfIsMaster: boolean;
  /** For a node that is a replica, the id of its master (after a failover: the promoted replica). */
  readonly myselfMasterId: string | null;
  readonly owner: string | null;
  readonly importingFrom: string | null;
  readonly migratingTo: string | null;
  /** node id -> config epoch, as this node last heard it. */
  readonly epochs: ReadonlyMap<string, number>;
  /** Masters this node knows that are not flagged failing, with their addresses. */
  readonly masters: readonly { readonly id: string; readonly host: string; readonly port: number }[];
}

/**
 * The part of CLUSTER NODES that concerns one slot, read without building the whole view. Slot jobs
 * ask this several times per slot, and a cluster mid-rebalance lists thousands of slot ranges: a
 * full parse per question made the fleet CPU-bound on parsing (profiled: 14 of 44 s).
 */
export function readSlotView(
  text: string,
  slot: number,
  endpointType: EndpointType = EndpointType.Ip,
): SlotView {
  let myselfId: string | null = null;
  let myselfEpoch = 0;
  let myselfIsMaster = false;
  let myselfMasterId: string | null = null;
  let owner: string | null = null;
  let importingFrom: string | null = null;
  let migratingTo: string | null = null;
  const epochs = new Map<string, number>();
  const masters: { id: string; host: string; port: number }[] = [];
  let lineStart = 0;
  while (lineStart < text.length) {
    let lineEnd = text.indexOf('\n', lineStart);
    if (lineEnd < 0) lineEnd = text.length;
    const line = text.slice(lineStart, lineEnd).trim();
    lineStart = lineEnd + 1;
    if (line === '') continue;
    // Eight fixed fields, then slot tokens.
    const fields: string[] = [];
    let cursor = 0;
    while (fields.length < 8 && cursor <= line.length) {
      const space = line.indexOf(' ', cursor);
      const fieldEnd = space < 0 ? line.length : space;
      fields.push(line.slice(cursor, fieldEnd));
      cursor = fieldEnd + 1;
    }
    const slotTokens = cursor < line.length ? line.slice(cursor) : '';
    const { id, address, flagText, master, epochText } = fixedFields(fields, line);
    const epoch = Number(epochText);
    epochs.set(id, epoch);
    const isMaster = flagText.includes('master');
    const isMyself = flagText.includes('myself');
    if (isMyself) {
      myselfId = id;
      myselfEpoch = epoch;
      myselfIsMaster = isMaster;
      myselfMasterId = master === '-' ? null : master;
    }
    const failing = /(^|,)(fail\??|noaddr|handshake)(,|$)/.test(flagText);
    if (isMaster && !failing) {
      const { ip, hostname, port } = parseAddress(address);
      masters.push({ id, host: endpointHost({ ip, hostname }, endpointType), port });
    }
    if (!isMaster || slotTokens === '') continue;
    if (isMyself) {
      const open = openSlotIn(slotTokens, slot);
      if (open?.direction === '>') migratingTo = open.peer;
      if (open?.direction === '<') importingFrom = open.peer;
    }
    if (owner === null && rangesContain(slotTokens, slot)) owner = id;
  }
  if (myselfId === null) throw malformed('no line is flagged myself');
  return {
    myselfId,
    myselfEpoch,
    myselfIsMaster,
    myselfMasterId,
    owner,
    importingFrom,
    migratingTo,
    epochs,
    masters,
  };
}

/**
 * One CLUSTER NODES text, parsed once, answering readSlotView for any slot. Dozens of slot jobs read
 * the same reply (the adapter shares one read per node and window), and a reply of a cluster mid-
 * rebalance lists thousands of ranges: scanning it once per slot was a tenth of a worker's CPU. The
 * masters' ranges are sorted once and searched by halves; filling a table of all 16384 slots per
 * reply instead was 4% of a worker's CPU in a rebalance, where most replies answer one or two slots.
 */
export interface SlotViewIndex {
  slotView(slot: number): SlotView;
}

export function indexSlotViews(text: string, endpointType: EndpointType = EndpointType.Ip): SlotViewIndex {
  return slotViewIndex(parseClusterNodes(text, endpointType));
}

/** The same index, from a view already parsed. */
export function slotViewIndex(view: NodeView): SlotViewIndex {
  const epochs: ReadonlyMap<string, number> = new Map(view.nodes.map((node) => [node.id, node.configEpoch]));
  const masters = view.nodes
    .filter((node) => node.role === NodeRole.Master && !node.failed)
    .map(({ id, host, port }) => ({ id, host, port }));
  const ownerOfSlot = slotOwnerLookup(view.nodes.filter((node) => node.role === NodeRole.Master));
  const { myself } = view;
  return {
    slotView(slot: number): SlotView {
      return {
        myselfId: myself.id,
        myselfEpoch: myself.configEpoch,
        myselfIsMaster: myself.role === NodeRole.Master,
        myselfMasterId: myself.masterId,
        owner: ownerOfSlot(slot),
        importingFrom: view.importing.get(slot) ?? null,
        migratingTo: view.migrating.get(slot) ?? null,
        epochs,
        masters,
      };
    },
  };
}

/**
 * The id of the first master listing a slot, or null. A node prints each master's ranges in slot
 * order, so each master's list is searched by halves as parsed, with no table or sort to build per
 * reply: a reply mid-rebalance lists thousands of ranges, and most replies answer one or two slots
 * (sorting every range of a 6,000-range reply cost about 1.5 ms; a table of 16384 owners allocated
 * 32 KB per reply). A list out of order, or overlapping itself, is sorted and merged first, and
 * masters are asked in their order, so the first master listing a slot wins should two overlap.
 */
function slotOwnerLookup(masters: readonly ClusterNode[]): (slot: number) => string | null {
  const sortedRanges = masters.map((node) =>
    node.slots.every((range, index) => index === 0 || range.start > node.slots[index - 1]!.end)
      ? node.slots
      : mergedRanges(node.slots),
  );
  return (slot) => {
    for (const [index, ranges] of sortedRanges.entries()) {
      if (sortedRangesHold(ranges, slot)) return masters[index]!.id;
    }
    return null;
  };
}

/** The same slots as ranges sorted by start that do not overlap. */
function mergedRanges(ranges: readonly SlotRange[]): SlotRange[] {
  const merged: SlotRange[] = [];
  for (const range of [...ranges].sort((a, b) => a.start - b.start)) {
    const last = merged.at(-1);
    if (last && range.start <= last.end)
      merged[merged.length - 1] = { start: last.start, end: Math.max(last.end, range.end) };
    else merged.push(range);
  }
  return merged;
}

/** Whether ranges sorted by start hold the slot: the last range starting at or before it. */
function sortedRangesHold(ranges: readonly SlotRange[], slot: number): boolean {
  let low = 0;
  let high = ranges.length - 1;
  let found = -1;
  while (low <= high) {
    const middle = (low + high) >> 1;
    if (ranges[middle]!.start <= slot) {
      found = middle;
      low = middle + 1;
    } else {
      high = middle - 1;
    }
  }
  return found >= 0 && slot <= ranges[found]!.end;
}

/** Whether "0-5460 5462 [93->-id]" covers the slot, scanning characters without allocating. */
function rangesContain(tokens: string, slot: number): boolean {
  let index = 0;
  const length = tokens.length;
  while (index < length) {
    if (tokens.charCodeAt(index) === 91 /* [ */) {
      index = tokens.indexOf(' ', index);
      if (index < 0) return false;
      index++;
      continue;
    }
    let start = 0;
    while (index < length && tokens.charCodeAt(index) >= 48 && tokens.charCodeAt(index) <= 57) {
      start = start * 10 + tokens.charCodeAt(index) - 48;
      index++;
    }
    let end = start;
    if (tokens.charCodeAt(index) === 45 /* - */) {
      index++;
      end = 0;
      while (index < length && tokens.charCodeAt(index) >= 48 && tokens.charCodeAt(index) <= 57) {
        end = end * 10 + tokens.charCodeAt(index) - 48;
        index++;
      }
    }
    if (slot >= start && slot <= end) return true;
    index++;
  }
  return false;
}

function openSlotIn(tokens: string, slot: number): { direction: '<' | '>'; peer: string } | null {
  const marker = `[${slot}-`;
  const at = tokens.indexOf(marker);
  if (at < 0) return null;
  const direction = tokens.charAt(at + marker.length) === '>' ? '>' : '<';
  return { direction, peer: tokens.slice(at + marker.length + 2, tokens.indexOf(']', at)) };
}

/** slot -> owner id (or null when no node serves it), as this view sees it. */
export function slotOwners(view: NodeView): (string | null)[] {
  return ownersOfSlots(view.nodes);
}

/** slotOwners for a list of nodes: a master listed later wins a slot two masters list. */
export function ownersOfSlots(
  nodes: readonly Pick<ClusterNode, 'id' | 'role' | 'slots'>[],
): (string | null)[] {
  const owners: (string | null)[] = new Array(SLOT_COUNT).fill(null);
  for (const node of nodes) {
    if (node.role !== NodeRole.Master) continue;
    for (const range of node.slots) {
      for (let slot = range.start; slot <= range.end; slot++) owners[slot] = node.id;
    }
  }
  return owners;
}

export function ownerOf(view: NodeView, slot: number): string | null {
  for (const node of view.nodes) {
    if (node.role !== NodeRole.Master) continue;
    for (const range of node.slots) if (slot >= range.start && slot <= range.end) return node.id;
  }
  return null;
}

export function slotCount(node: ClusterNode): number {
  return node.slots.reduce((sum, range) => sum + range.end - range.start + 1, 0);
}

export function nodeAddress(node: Pick<ClusterNode, 'host' | 'port'>): string {
  return `${node.host}:${node.port}`;
}

/**
 * Finds a node by id, id prefix (at least 8 characters, unique) or "host:port": the forms an
 * operator copies from CLUSTER NODES or redis-cli output. The host may be the address slotfleet
 * uses, the node's ip or its hostname, whichever the node is addressed by.
 */
export function findNode(nodes: readonly ClusterNode[], reference: string): ClusterNode | undefined {
  const wanted = reference.trim();
  const byAddress =
    nodes.find((node) => nodeAddress(node) === wanted) ??
    nodes.find((node) =>
      [node.ip, node.hostname].some((host) => host && nodeAddress({ host, port: node.port }) === wanted),
    );
  if (byAddress) return byAddress;
  const exact = nodes.find((node) => node.id === wanted);
  if (exact) return exact;
  if (wanted.length >= 8 && /^[0-9a-f]+$/.test(wanted)) {
    const matches = nodes.filter((node) => node.id.startsWith(wanted));
    if (matches.length === 1) return matches[0];
  }
  return undefined;
}

/** The eight fields every CLUSTER NODES line starts with. */
function fixedFields(fields: readonly string[], line: string) {
  if (fields.length < 8) throw malformed(`line has ${fields.length} fields: ${line}`);
  const [id, address, flagText, master, , , epochText, linkState] = fields as [
    string,
    string,
    string,
    string,
    string,
    string,
    string,
    string,
  ];
  return { id, address, flagText, master, epochText, linkState };
}

/**
 * ip:port@cport[,hostname]. The ip may be IPv6, so split on the last colon. Redis 7.2+ and Valkey
 * write auxiliary fields after the hostname in nodes.conf (",shard-id=..."), with an empty hostname
 * before them when there is none; a field holding "=" is never a hostname (announced hostnames are
 * letters, digits, "-" and ".").
 */
function parseAddress(address: string): {
  ip: string;
  hostname: string | null;
  port: number;
  busPort: number;
} {
  const [ipPortBus, hostnameField] = address.split(',') as [string, string | undefined];
  const [hostPort, bus] = ipPortBus.split('@') as [string, string | undefined];
  const colon = hostPort.lastIndexOf(':');
  if (colon < 0) throw malformed(`address "${address}" has no port`);
  return {
    ip: hostPort.slice(0, colon),
    hostname: hostnameField && !hostnameField.includes('=') ? hostnameField : null,
    port: Number(hostPort.slice(colon + 1)),
    busPort: bus === undefined ? 0 : Number(bus),
  };
}

function malformed(detail: string): SlotfleetError {
  return new SlotfleetError(ErrorCode.RedisError, `unexpected CLUSTER NODES reply: ${detail}`);
}
