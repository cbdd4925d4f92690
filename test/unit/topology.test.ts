import { describe, expect, it } from 'vitest';
import {
  announcesHostname,
  EndpointType,
  endpointHost,
  endpointTypeFromShards,
  findNode,
  indexSlotViews,
  ownerOf,
  parseClusterNodes,
  readSlotView,
  slotCount,
  slotOwners,
} from '../../src/shared/domain/topology.js';

const A = 'a'.repeat(40);
const B = 'b'.repeat(40);
const C = 'c'.repeat(40);
const R = 'd'.repeat(40);

const SAMPLE = [
  `${A} 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460 [5461-<-${B}] [93->-${C}]`,
  `${B} 127.0.0.1:7001@17001 master - 0 1700000000000 2 connected 5461-10922`,
  `${C} 127.0.0.1:7002@17002,host-c master,fail? - 0 1700000000000 3 connected 10923-16383`,
  `${R} 127.0.0.1:7003@17003 slave ${A} 0 1700000000000 1 connected`,
  '',
].join('\n');

describe('parseClusterNodes', () => {
  const view = parseClusterNodes(SAMPLE);

  it('reads nodes, roles, addresses and slot ranges', () => {
    expect(view.myself.id).toBe(A);
    expect(view.nodes).toHaveLength(4);
    const replica = view.nodes.find((node) => node.id === R)!;
    expect(replica).toMatchObject({
      role: 'replica',
      masterId: A,
      host: '127.0.0.1',
      port: 7003,
      busPort: 17003,
    });
    expect(slotCount(view.nodes[0]!)).toBe(5461);
  });

  it('reads the open slots of myself', () => {
    expect(view.importing.get(5461)).toBe(B);
    expect(view.migrating.get(93)).toBe(C);
  });

  it('flags failing nodes, and addresses nodes by ip unless told otherwise', () => {
    const failing = view.nodes.find((node) => node.id === C)!;
    expect(failing.failed).toBe(true);
    expect(failing).toMatchObject({ host: '127.0.0.1', ip: '127.0.0.1', hostname: 'host-c', port: 7002 });
  });

  it('maps slots to owners', () => {
    const owners = slotOwners(view);
    expect(owners[0]).toBe(A);
    expect(owners[5461]).toBe(B);
    expect(owners[16383]).toBe(C);
    expect(ownerOf(view, 10922)).toBe(B);
  });

  it('finds nodes by id, unique prefix and address', () => {
    expect(findNode(view.nodes, '127.0.0.1:7001')?.id).toBe(B);
    expect(findNode(view.nodes, B)?.id).toBe(B);
    expect(findNode(view.nodes, 'cccccccc')?.id).toBe(C);
    expect(findNode(view.nodes, 'ccc')).toBeUndefined();
    expect(findNode(view.nodes, '127.0.0.1:9999')).toBeUndefined();
  });

  it('indexSlotViews answers exactly what readSlotView answers, for every slot', () => {
    const index = indexSlotViews(SAMPLE);
    for (let slot = 0; slot < 16384; slot++) {
      const { epochs, masters, ...indexed } = index.slotView(slot);
      const { epochs: scannedEpochs, masters: scannedMasters, ...scanned } = readSlotView(SAMPLE, slot);
      expect(indexed).toEqual(scanned);
      expect([...epochs]).toEqual([...scannedEpochs]);
      expect(masters).toEqual(scannedMasters);
    }
  });

  it('indexSlotViews agrees with readSlotView on fragmented, unassigned and overlapping ranges', () => {
    // Slots dealt to A, B and C in runs of 1 to 7, with every 11th run left unassigned.
    const ranges: Record<string, string[]> = { [A]: [], [B]: [], [C]: [] };
    const owners = [A, B, C];
    for (let start = 0, run = 0; start < 16384; run++) {
      const end = Math.min(16383, start + (run % 7));
      if (run % 11 !== 10) ranges[owners[run % 3]!]!.push(start === end ? `${start}` : `${start}-${end}`);
      start = end + 1;
    }
    const fragmented = [
      `${A} 127.0.0.1:7000@17000 myself,master - 0 0 1 connected ${ranges[A]!.join(' ')}`,
      `${B} 127.0.0.1:7001@17001 master - 0 0 2 connected ${ranges[B]!.join(' ')}`,
      `${C} 127.0.0.1:7002@17002 master - 0 0 3 connected ${ranges[C]!.join(' ')}`,
    ].join('\n');
    // Not what a node sends, but the first master listing a slot still wins.
    const overlapping = `${fragmented}\n${R} 127.0.0.1:7003@17003 master - 0 0 4 connected 0-16383`;
    const unassigned = { [fragmented]: 0, [overlapping]: 0 };
    for (const text of [fragmented, overlapping]) {
      const index = indexSlotViews(text);
      for (let slot = 0; slot < 16384; slot++) {
        const owner = index.slotView(slot).owner;
        expect(owner).toBe(readSlotView(text, slot).owner);
        if (owner === null) unassigned[text]! += 1;
      }
    }
    expect(unassigned[fragmented]).toBeGreaterThan(0);
    expect(unassigned[overlapping]).toBe(0);
  });

  it('a master whose ranges overlap each other or come out of order still owns every slot it lists', () => {
    // Not what a node sends: the lookup must not depend on it.
    const text = [
      `${A} 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 50-60 0-100 300 200-250`,
      `${B} 127.0.0.1:7001@17001 master - 0 0 2 connected 80-90 101-199`,
    ].join('\n');
    const index = indexSlotViews(text);
    for (const slot of [0, 55, 80, 100, 200, 225, 300])
      expect(index.slotView(slot).owner, `slot ${slot}`).toBe(A);
    for (const slot of [101, 150, 199]) expect(index.slotView(slot).owner, `slot ${slot}`).toBe(B);
    for (const slot of [251, 301, 16383]) expect(index.slotView(slot).owner, `slot ${slot}`).toBeNull();
    for (const slot of [0, 80, 150, 251])
      expect(index.slotView(slot).owner).toBe(readSlotView(text, slot).owner);
  });

  it.each(['12a', '-5', '5-', '1-2-3', '[93->-]', '1234567890'])('refuses the slot token "%s"', (token) => {
    const text = `${A} 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-10 ${token}`;
    expect(() => parseClusterNodes(text)).toThrow(`unexpected slot token "${token}"`);
  });

  it('readSlotView agrees with the full parse on every slot', () => {
    for (const slot of [0, 93, 5460, 5461, 10922, 10923, 16383]) {
      const slotView = readSlotView(SAMPLE, slot);
      expect(slotView.owner).toBe(ownerOf(view, slot));
      expect(slotView.importingFrom).toBe(view.importing.get(slot) ?? null);
      expect(slotView.migratingTo).toBe(view.migrating.get(slot) ?? null);
      expect(slotView.myselfId).toBe(A);
    }
    const slotView = readSlotView(SAMPLE, 0);
    expect(slotView.epochs.get(B)).toBe(2);
    // The failing master is not offered as a node to send SETSLOT to.
    expect(slotView.masters.map((master) => master.id)).toEqual([A, B]);
  });

  it('rejects a reply without myself', () => {
    expect(() => parseClusterNodes(SAMPLE.replace('myself,', ''))).toThrow(/myself/);
  });
});

describe('node addresses and cluster-preferred-endpoint-type', () => {
  const line = (address: string) => `${A} ${address} myself,master - 0 0 1 connected 0-16383`;
  const { Ip, Hostname, UnknownEndpoint } = EndpointType;

  it.each([
    // address field, endpoint type, expected host, ip, hostname, port, bus port
    ['127.0.0.1:7000@17000', Ip, '127.0.0.1', '127.0.0.1', null, 7000, 17000],
    ['127.0.0.1:7000@17000', Hostname, '127.0.0.1', '127.0.0.1', null, 7000, 17000],
    ['127.0.0.1:7000@17000,localhost', Ip, '127.0.0.1', '127.0.0.1', 'localhost', 7000, 17000],
    ['127.0.0.1:7000@17000,localhost', Hostname, 'localhost', '127.0.0.1', 'localhost', 7000, 17000],
    ['127.0.0.1:7000@17000,localhost', UnknownEndpoint, '127.0.0.1', '127.0.0.1', 'localhost', 7000, 17000],
    [
      '10.1.2.3:6379@16379,redis-0.redis.default.svc.cluster.local',
      Hostname,
      'redis-0.redis.default.svc.cluster.local',
      '10.1.2.3',
      'redis-0.redis.default.svc.cluster.local',
      6379,
      16379,
    ],
    ['::1:7000@17000', Ip, '::1', '::1', null, 7000, 17000],
    [
      '2001:db8::7:6379@16379,redis-0.redis',
      Hostname,
      'redis-0.redis',
      '2001:db8::7',
      'redis-0.redis',
      6379,
      16379,
    ],
    ['2001:db8::7:6379@16379,redis-0.redis', Ip, '2001:db8::7', '2001:db8::7', 'redis-0.redis', 6379, 16379],
    // nodes.conf's form in Redis 7.2+ and Valkey: auxiliary fields, an empty hostname before them.
    ['127.0.0.1:7000@17000,,shard-id=abc', Hostname, '127.0.0.1', '127.0.0.1', null, 7000, 17000],
    ['127.0.0.1:7000@17000,node-0,shard-id=abc', Hostname, 'node-0', '127.0.0.1', 'node-0', 7000, 17000],
    // Redis before 4.0 wrote no bus port.
    ['127.0.0.1:7000', Ip, '127.0.0.1', '127.0.0.1', null, 7000, 0],
    // A node without an address yet (noaddr).
    [':0@0', Hostname, '', '', null, 0, 0],
  ] as const)('%s with %s: host %s', (address, endpointType, host, ip, hostname, port, busPort) => {
    const node = parseClusterNodes(line(address), endpointType).myself;
    expect(node).toMatchObject({ host, ip, hostname, port, busPort });
    // The slot readers name the same address as the full parse.
    expect(readSlotView(line(address), 0, endpointType).masters).toEqual([{ id: A, host, port }]);
    expect(indexSlotViews(line(address), endpointType).slotView(0).masters).toEqual([{ id: A, host, port }]);
  });

  it.each([
    [{ ip: '10.0.0.1', hostname: 'redis-0' }, Ip, '10.0.0.1'],
    [{ ip: '10.0.0.1', hostname: 'redis-0' }, Hostname, 'redis-0'],
    // Redis tells clients "?" for a node without a hostname: its ip is all slotfleet can use.
    [{ ip: '10.0.0.1', hostname: null }, Hostname, '10.0.0.1'],
    [{ ip: '10.0.0.1', hostname: 'redis-0' }, UnknownEndpoint, '10.0.0.1'],
  ] as const)('endpointHost(%o, %s) is %s', (node, endpointType, expected) => {
    expect(endpointHost(node, endpointType)).toBe(expected);
  });

  it.each([
    [SAMPLE, true],
    [SAMPLE.replace(',host-c', ''), false],
    [line('127.0.0.1:7000@17000,,shard-id=abc'), false],
    [line('127.0.0.1:7000@17000,shard-id=abc'), false],
    [line('127.0.0.1:7000@17000,node-0,shard-id=abc'), true],
    [`${line('127.0.0.1:7000@17000')}\n${B} ::1:7001@17001,b.example master - 0 0 2 connected`, true],
    ['', false],
  ])('announcesHostname(%j) is %s', (text, expected) => {
    expect(announcesHostname(text)).toBe(expected);
  });

  it('finds a node by the address slotfleet uses, by its ip and by its hostname', () => {
    const nodes = parseClusterNodes(
      [line('10.0.0.1:7000@17000,redis-0'), `${B} 10.0.0.2:7000@17000 master - 0 0 2 connected`].join('\n'),
      Hostname,
    ).nodes;
    expect(findNode(nodes, 'redis-0:7000')?.id).toBe(A);
    expect(findNode(nodes, '10.0.0.1:7000')?.id).toBe(A);
    expect(findNode(nodes, '10.0.0.2:7000')?.id).toBe(B);
    expect(findNode(nodes, 'redis-0:7001')).toBeUndefined();
  });
});

describe('endpointTypeFromShards', () => {
  // CLUSTER SHARDS as ioredis returns it over RESP2: maps as flat [name, value, ...] lists.
  const shards = (...nodes: Record<string, string | number | null>[]) => [
    ['slots', [0, 16383], 'nodes', nodes.map((node) => Object.entries(node).flat())],
  ];
  const node = (fields: Record<string, string | number | null>) => ({
    id: A,
    port: 7000,
    role: 'master',
    'replication-offset': 0,
    health: 'online',
    ...fields,
  });
  const { Ip, Hostname, UnknownEndpoint } = EndpointType;

  it.each([
    ['ip, no hostnames', shards(node({ ip: '10.0.0.1', endpoint: '10.0.0.1' })), Ip],
    [
      'ip, hostnames announced',
      shards(node({ ip: '10.0.0.1', endpoint: '10.0.0.1', hostname: 'redis-0' })),
      Ip,
    ],
    ['hostname', shards(node({ ip: '10.0.0.1', endpoint: 'redis-0', hostname: 'redis-0' })), Hostname],
    ['hostname, a node without one', shards(node({ ip: '10.0.0.1', endpoint: '?' })), Hostname],
    [
      'unknown-endpoint',
      shards(node({ ip: '10.0.0.1', endpoint: '', hostname: 'redis-0' })),
      UnknownEndpoint,
    ],
    ['unknown-endpoint as null', shards(node({ ip: '10.0.0.1', endpoint: null })), UnknownEndpoint],
    [
      'a hostname equal to the ip tells nothing; the next node does',
      shards(
        node({ ip: '10.0.0.1', endpoint: '10.0.0.1', hostname: '10.0.0.1' }),
        node({ ip: '10.0.0.2', endpoint: 'redis-1', hostname: 'redis-1' }),
      ),
      Hostname,
    ],
    ['no shards (no slots assigned)', [], Ip],
    ['not a CLUSTER SHARDS reply', 'OK', Ip],
  ] as const)('%s', (_, reply, expected) => {
    expect(endpointTypeFromShards(reply)).toBe(expected);
  });
});
