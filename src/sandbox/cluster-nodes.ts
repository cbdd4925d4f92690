/**
 * Parses CLUSTER NODES for the sandbox's own waits. Deliberately separate from the domain
 * topology parser: the harness must keep working while production code is being changed.
 */

export const SLOT_COUNT = 16_384;

export interface ClusterNodeEntry {
  id: string;
  host: string;
  port: number;
  flags: string[];
  role: 'master' | 'replica';
  masterId: string | null;
  /** Owned slots as inclusive ranges; MIGRATING/IMPORTING markers are left out. */
  slotRanges: Array<[number, number]>;
  slots: number;
  myself: boolean;
  /** Flagged `fail` or `fail?` (pfail) by the node that produced this line. */
  failing: boolean;
  /** Still in handshake or without an address: not a cluster member yet. */
  joining: boolean;
  linkConnected: boolean;
}

/**
 * `<id> <ip:port@cport[,hostname]> <flags> <master> <ping-sent> <pong-recv> <epoch> <link> <slot>...`
 */
export function parseClusterNodes(text: string): ClusterNodeEntry[] {
  const entries: ClusterNodeEntry[] = [];
  for (const line of text.split('\n')) {
    const fields = line.trim().split(' ');
    if (fields.length < 8) continue;
    const [id, address, flagText, master, , , , linkState, ...slotFields] = fields as [
      string,
      string,
      string,
      string,
      string,
      string,
      string,
      string,
      ...string[],
    ];
    const hostPort = address.split('@')[0] ?? '';
    const colon = hostPort.lastIndexOf(':');
    const flags = flagText.split(',');
    const slotRanges: Array<[number, number]> = [];
    let slots = 0;
    for (const field of slotFields) {
      if (field.startsWith('[')) continue;
      const [startText, endText] = field.split('-');
      const start = Number(startText);
      const end = endText === undefined ? start : Number(endText);
      slotRanges.push([start, end]);
      slots += end - start + 1;
    }
    entries.push({
      id,
      host: hostPort.slice(0, colon),
      port: Number(hostPort.slice(colon + 1)),
      flags,
      role: flags.includes('master') ? 'master' : 'replica',
      masterId: master === '-' ? null : master,
      slotRanges,
      slots,
      myself: flags.includes('myself'),
      failing: flags.includes('fail') || flags.includes('fail?'),
      joining: flags.includes('handshake') || flags.includes('noaddr'),
      linkConnected: linkState === 'connected',
    });
  }
  return entries;
}

/** Slot -> owning master id (or null) as seen by one node. */
export function slotOwners(entries: ClusterNodeEntry[]): Array<string | null> {
  const owners: Array<string | null> = new Array(SLOT_COUNT).fill(null);
  for (const entry of entries) {
    if (entry.role !== 'master') continue;
    for (const [start, end] of entry.slotRanges) {
      for (let slot = start; slot <= end; slot++) owners[slot] = entry.id;
    }
  }
  return owners;
}

export function parseInfoField(info: string, field: string): string | undefined {
  const match = new RegExp(`^${field}:(.*)$`, 'm').exec(info);
  return match?.[1]?.trim();
}
