/**
 * Bad input gets a 4xx naming the problem, and changes nothing: no record, no job, no slot touched.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { allViews, type Stack, startStack } from './support/stack.js';

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
    ownersBefore = await ownershipFingerprint();
  });

  afterAll(async () => {
    await stack?.stop();
  });

  async function ownershipFingerprint(): Promise<string> {
    const views = await allViews(stack.cluster);
    return JSON.stringify(
      views.map((view) => ({
        node: view.myself.id,
        slots: view.nodes.map((node) => [node.id, node.slots]),
        importing: [...view.importing],
        migrating: [...view.migrating],
      })),
    );
  }

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

  it('unknown migration: 404', async () => {
    const response = await stack.api.app.inject({ method: 'GET', url: '/v1/migrations/mig-nope-00000000' });
    expect(response.statusCode).toBe(404);
    expect(response.json().message).toMatch(/migration mig-nope-00000000 does not exist/);
  });

  it('healthz answers', async () => {
    const response = await stack.api.app.inject({ method: 'GET', url: '/healthz' });
    expect(response.json()).toEqual({ status: 'ok' });
  });

  it('after all of the above: no job enqueued, no record written, no slot touched', async () => {
    expect(await stack.jobCounts()).toEqual({ migrate: 0, finalize: 0 });
    const control = stack.control.client();
    const keys = await control.keys(`${stack.config.queuePrefix}:*`);
    control.disconnect();
    expect(keys.filter((key) => key.includes(':migration'))).toEqual([]);
    expect(await ownershipFingerprint()).toBe(ownersBefore);
  });
});
