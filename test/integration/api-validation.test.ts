/**
 * Bad input gets a 4xx naming the problem, and changes nothing: no record, no job, no slot touched.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApi } from '../../src/producer/server.js';
import { loadConfig } from '../../src/shared/config.js';
import { ownershipFingerprint, type Stack, startStack } from './support/stack.js';

describe('API input validation', () => {
  let stack: Stack;
  let masterAddress: string;
  let replicaAddress: string;
  let masterIdPrefix: string;
  let ownersBefore: string;

  beforeAll(async () => {
    stack = await startStack({ workers: 0 });
    const topology = await stack.cluster.topology();
    const master = topology.find((node) => node.role === 'master')!;
    const replica = topology.find((node) => node.role === 'replica')!;
    masterAddress = `127.0.0.1:${master.port}`;
    replicaAddress = `127.0.0.1:${replica.port}`;
    masterIdPrefix = master.id.slice(0, 10);
    ownersBefore = await ownershipFingerprint(stack.cluster);
  });

  afterAll(async () => {
    await stack?.stop();
  });

  function post(payload: unknown, cluster = 'default') {
    return stack.api.app.inject({
      method: 'POST',
      url: `/v1/clusters/${cluster}/migrations`,
      payload: payload as Record<string, unknown>,
    });
  }

  it.each([
    ['empty moves', () => ({ moves: [] }), 400, /moves.*(fewer than 1|empty)/],
    ['no moves field', () => ({}), 400, /moves/],
    [
      'slot above 16383',
      () => ({ moves: [{ slots: '16384', target: masterAddress }] }),
      400,
      /slot 16384 is out of range 0\.\.16383/,
    ],
    [
      'range running past the end',
      () => ({ moves: [{ slots: '16000-17000', target: masterAddress }] }),
      400,
      /slot 17000 is out of range/,
    ],
    ['negative slot', () => ({ moves: [{ slots: '-5', target: masterAddress }] }), 400, /"-5" is not a slot/],
    [
      'garbage slots',
      () => ({ moves: [{ slots: 'all', target: masterAddress }] }),
      400,
      /"all" is not a slot/,
    ],
    [
      'unknown target',
      () => ({ moves: [{ slots: '1', target: '127.0.0.1:1' }] }),
      422,
      /target "127\.0\.0\.1:1" is not a node of this cluster/,
    ],
    [
      'replica target',
      () => ({ moves: [{ slots: '1', target: replicaAddress }] }),
      422,
      /is a replica of .*: slots can only move to a master/,
    ],
    [
      'unknown field',
      () => ({ moves: [{ slots: '1', target: masterAddress }], force: true }),
      400,
      /additional properties|force/,
    ],
    [
      'slot named twice',
      () => ({
        moves: [
          { slots: '1-5', target: masterAddress },
          { slots: '5', target: masterIdPrefix },
        ],
      }),
      400,
      /slot 5 appears in moves\[0\] and moves\[1\]/,
    ],
    [
      'unknown engine',
      () => ({ moves: [{ slots: '1', target: masterAddress }], engine: 'fast' }),
      400,
      /engine/,
    ],
  ])('%s: %i with a message naming it', async (_name, body, status, message) => {
    const response = await post(body());
    expect(response.statusCode, response.body).toBe(status);
    const error = response.json();
    expect(error.message).toMatch(message);
    expect(error.statusCode).toBe(status);
    expect(error.code).toEqual(expect.any(String));
  });

  it('unknown cluster: 404 naming the configured ones', async () => {
    const response = await post({ moves: [{ slots: '1', target: masterAddress }] }, 'nosuch');
    expect(response.statusCode).toBe(404);
    expect(response.json().message).toMatch(/cluster "nosuch" is not configured \(configured: default\)/);
  });

  it('malformed JSON: 400', async () => {
    const response = await stack.api.app.inject({
      method: 'POST',
      url: '/v1/clusters/default/migrations',
      headers: { 'content-type': 'application/json' },
      payload: '{"moves": [',
    });
    expect(response.statusCode).toBe(400);
  });

  function send(
    method: 'GET' | 'POST' | 'PUT',
    url: string,
    payload?: string,
    headers: Record<string, string> = {},
  ) {
    return stack.api.app.inject({
      method,
      url,
      headers: { ...(payload !== undefined ? { 'content-type': 'application/json' } : {}), ...headers },
      ...(payload !== undefined ? { payload } : {}),
    });
  }

  function expectRefusal(
    response: { statusCode: number; body: string; json(): unknown },
    status: number,
    message: RegExp,
  ) {
    expect(response.statusCode, response.body).toBe(status);
    const error = response.json() as Record<string, unknown>;
    expect(error).toMatchObject({ statusCode: status, code: expect.any(String), error: expect.any(String) });
    expect(error.message).toMatch(message);
  }

  const deep = (depth: number) => `{"moves":${'['.repeat(depth)}${']'.repeat(depth)}}`;
  it.each([
    ['an array for the body', '/migrations', '[]', 400, /^body must be object/],
    ['a string for moves', '/migrations', '{"moves":"0-99"}', 400, /^body\.moves must be array/],
    [
      'a number for a slot list',
      '/migrations',
      '{"moves":[{"slots":5,"target":"x:1"}]}',
      400,
      /moves\[0\]\.slots must be string/,
    ],
    [
      'a target that is no node reference',
      '/migrations',
      '{"moves":[{"slots":"1","target":"my node"}]}',
      400,
      /^body\.moves\[0\]\.target must be a node id \(8 to 40 lowercase hex characters\) or host:port/,
    ],
    [
      '1001 moves',
      '/migrations',
      JSON.stringify({
        moves: Array.from({ length: 1001 }, (_, slot) => ({ slots: String(slot), target: 'h:1' })),
      }),
      400,
      /body\.moves must NOT have more than 1000 items/,
    ],
    [
      'a slot list beyond 50000 characters',
      '/migrations',
      JSON.stringify({ moves: [{ slots: '1,'.repeat(25_001), target: 'h:1' }] }),
      400,
      /slots must NOT have more than 50000 characters/,
    ],
    [
      'a weights key that is no node reference',
      '/rebalance',
      '{"weights":{"big one":2},"dryRun":true}',
      400,
      /^body\.weights key "big one" must be a node id/,
    ],
    [
      '1001 weights',
      '/rebalance',
      JSON.stringify({
        weights: Object.fromEntries(Array.from({ length: 1001 }, (_, port) => [`h:${port}`, 1])),
      }),
      400,
      /body\.weights must NOT have more than 1000 properties/,
    ],
    [
      'a weight above the maximum',
      '/rebalance',
      '{"weights":{"h:1":1e308}}',
      400,
      /weights\.h:1 must be <= 1000000/,
    ],
    [
      // planRebalance computes in single precision: weights this small were 0 there and its loop spun forever.
      'a weight too small to compute with',
      '/rebalance',
      '{"weights":{"h:1":1e-50},"threshold":0,"dryRun":true}',
      400,
      /^weights\["h:1"\] is 1e-50: a weight is 0 \(empty the node\) or from 0\.001 to 1000000$/,
    ],
    [
      'a number too large for a double',
      '/reshard',
      '{"from":["all"],"to":"h:1","slots":1e400}',
      400,
      /body\.slots must be integer/,
    ],
    [
      'a fractional slot count',
      '/reshard',
      '{"from":["all"],"to":"h:1","slots":2.5}',
      400,
      /body\.slots must be integer/,
    ],
    ['an unknown "by"', '/rebalance', '{"by":"bytes"}', 400, /^body\.by must be one of "slots", "keys"/],
    ['"1" for a boolean', '/fix', '{"dryRun":"1"}', 400, /^body\.dryRun must be boolean/],
    ['a misspelt option', '/rebalance', '{"dryrun":true}', 400, /^body has an unknown field "dryrun"/],
    [
      'a __proto__ key',
      '/rebalance',
      '{"__proto__":{"polluted":true},"dryRun":true}',
      400,
      /key "__proto__"/,
    ],
    [
      'constructor.prototype',
      '/fix',
      '{"constructor":{"prototype":{"polluted":true}}}',
      400,
      /key "(constructor|prototype)"/,
    ],
    [
      'nesting 5000 levels deep',
      '/migrations',
      deep(5000),
      400,
      /nests arrays and objects more than 32 levels deep/,
    ],
    ['invalid JSON', '/migrations', '{"moves": [', 400, /^the body is not valid JSON/],
    [
      'an empty body with content-type JSON',
      '/fix',
      '',
      400,
      /body is empty but content-type is application\/json/,
    ],
    [
      'a body over 64 KiB',
      '/migrations',
      `{"moves":[{"slots":"${'1'.repeat(70_000)}","target":"h:1"}]}`,
      413,
      /request body is larger than 65536 bytes/,
    ],
  ])('%s (POST ...%s): refused naming the problem', async (_name, route, payload, status, message) => {
    expectRefusal(await send('POST', `/v1/clusters/default${route}`, payload), status, message);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it('a body that is not JSON: 415 naming its content-type', async () => {
    const response = await send('POST', '/v1/clusters/default/fix', 'dryRun=true', {
      'content-type': 'application/x-www-form-urlencoded',
    });
    expectRefusal(
      response,
      415,
      /content-type "application\/x-www-form-urlencoded" is not supported: send the body as application\/json/,
    );
    expectRefusal(
      await send('POST', '/v1/clusters/default/fix', '{}', { 'content-type': 'text/plain' }),
      415,
      /"text\/plain" is not supported/,
    );
  });

  it('path, query and header input outside its limits: 400 in the same shape', async () => {
    expectRefusal(
      await send('GET', '/v1/clusters/d%C3%A9faut'),
      400,
      /^params\.cluster must be 1 to 64 letters, digits/,
    );
    expectRefusal(await send('GET', '/v1/clusters/%zz'), 400, /is not a valid url component/);
    expectRefusal(
      await send('GET', '/v1/migrations?limit=201'),
      400,
      /^querystring\.limit has an invalid format|^querystring\.limit/,
    );
    expectRefusal(
      await send('GET', '/v1/migrations?offset=5'),
      400,
      /^querystring has an unknown field "offset"/,
    );
    expectRefusal(await send('GET', '/status.json?cluster=a&x=1'), 400, /unknown field "x"/);
    expectRefusal(
      await send('POST', '/v1/clusters/default/rebalance', '{"dryRun":true}', {
        'idempotency-key': 'k'.repeat(201),
      }),
      400,
      /^headers\.idempotency-key must be 1 to 200 visible ASCII characters/,
    );
    expectRefusal(await send('GET', `/v1/${'x'.repeat(5000)}`), 404, /^no route GET "\/v1\/x{76}\.\.\."$/);
  });

  it('pause, resume and cancel take no body: none, {} or null, nothing else', async () => {
    for (const payload of [undefined, '{}', 'null']) {
      expectRefusal(
        await send('POST', '/v1/migrations/mig-nope-00000000/pause', payload),
        404,
        /does not exist/,
      );
    }
    expectRefusal(
      await send('POST', '/v1/migrations/mig-nope-00000000/cancel', '{"force":true}'),
      400,
      /^body has an unknown field "force"/,
    );
    expectRefusal(
      await send('POST', '/v1/migrations/mig-nope-00000000/resume', '[1]'),
      400,
      /^body must be object,null/,
    );
  });

  it('the queue UI is read-only and answers in the API error shape', async () => {
    expectRefusal(
      await send('PUT', '/queues/api/queues/migrate-slot/empty', '{}'),
      405,
      /queue UI is read-only \(PUT refused\)/,
    );
    expectRefusal(
      await send('POST', '/queues/api/queues/migrate-slot/add', '{"name":"migrate","data":{}}'),
      405,
      /read-only/,
    );
    expectRefusal(
      await send('GET', '/queues/api/queues/nope/metrics'),
      404,
      /queue "nope" does not exist \(queues: migrate-slot, finalize-slot\)/,
    );
    expectRefusal(await send('GET', '/queues/api/queues/migrate-slot/mig-x-slot-1'), 404, /JOB_NOT_FOUND/);
    expect((await send('GET', '/queues/api/queues/migrate-slot/workers')).statusCode).toBe(200);
  });

  it('unknown migration: 404', async () => {
    const response = await stack.api.app.inject({ method: 'GET', url: '/v1/migrations/mig-nope-00000000' });
    expect(response.statusCode).toBe(404);
    expect(response.json().message).toMatch(/migration mig-nope-00000000 does not exist/);
  });

  it('healthz answers', async () => {
    const response = await stack.api.app.inject({ method: 'GET', url: '/healthz' });
    expect(response.json()).toEqual({ status: 'ok' });
  });

  it('rate-limits mutating requests per client, before the token is checked: 429 naming the limit', async () => {
    const token = 'rate-limit-token-0123456789';
    const limited = createApi(
      loadConfig({ ...stack.env, SLOTFLEET_API_TOKEN: token, SLOTFLEET_API_RATE_LIMIT: '3' }),
      stack.log,
    );
    try {
      // The new API's control connection fails fast until it is up (enableOfflineQueue: false).
      const deadline = Date.now() + 10_000;
      while ((await limited.app.inject({ method: 'GET', url: '/readyz' })).statusCode !== 200) {
        if (Date.now() > deadline) throw new Error('the rate-limited API did not become ready');
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      const pause = (remoteAddress: string, bearer = token) =>
        limited.app.inject({
          method: 'POST',
          url: '/v1/migrations/mig-nope-00000000/pause',
          remoteAddress,
          headers: { authorization: `Bearer ${bearer}` },
        });
      for (let i = 0; i < 3; i++) expect((await pause('10.0.0.1')).statusCode).toBe(404);
      const refused = await pause('10.0.0.1');
      expectRefusal(
        refused,
        429,
        /^rate limit: at most 3 POST\/PUT\/PATCH\/DELETE requests per minute from one client \(SLOTFLEET_API_RATE_LIMIT\); retry in \d+ (second|minute)s?$/,
      );
      expect(refused.json().code).toBe('RATE_LIMITED');
      expect(Number(refused.headers['retry-after'])).toBeGreaterThan(0);
      // Reads are not counted, and another client has its own budget.
      const read = await limited.app.inject({
        method: 'GET',
        url: '/v1/clusters',
        remoteAddress: '10.0.0.1',
        headers: { authorization: `Bearer ${token}` },
      });
      expect(read.statusCode).toBe(200);
      expect((await pause('10.0.0.2')).statusCode).toBe(404);
      // Guessing the token spends the same budget.
      for (let i = 0; i < 3; i++)
        expect((await pause('10.0.0.3', 'wrong-token-0123456789')).statusCode).toBe(401);
      expect((await pause('10.0.0.3')).statusCode).toBe(429);
    } finally {
      await limited.close();
    }
  });

  it('after all of the above: no job enqueued, no record written, no slot touched', async () => {
    expect(await stack.jobCounts()).toEqual({ migrate: 0, finalize: 0 });
    const control = stack.control.client();
    const keys = await control.keys(`${stack.config.queuePrefix}:*`);
    control.disconnect();
    expect(keys.filter((key) => key.includes(':migration'))).toEqual([]);
    expect(await ownershipFingerprint(stack.cluster)).toBe(ownersBefore);
  });
});
