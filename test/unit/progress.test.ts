/**
 * The one poller of GET /v1/migrations/:id: it stops at every end state the domain has and at no
 * other, over the CLI's HTTP client with a fake fetch.
 */
import { describe, expect, expectTypeOf, it } from 'vitest';
import { ApiClient, ApiRefusedError } from '../../src/cli/api-client.js';
import type { MigrationView } from '../../src/cli/migration-view.js';
import { pollMigration, printProgress, progressLine } from '../../src/cli/progress.js';
import { MigrationState } from '../../src/shared/domain/migration.js';

function view(state: MigrationState, overrides: Partial<MigrationView> = {}): MigrationView {
  return {
    id: 'm1',
    cluster: 'default',
    kind: 'rebalance',
    state,
    control: 'run',
    slotsTotal: 4,
    slots: {
      pending: 1,
      importing: 0,
      migrating: 0,
      draining: 0,
      finalizing: 0,
      done: 2,
      failed: 0,
      cancelled: 1,
    },
    keysMoved: 1234,
    createdAt: '2026-01-01T00:00:00.000Z',
    updatedAt: '2026-01-01T00:00:01.000Z',
    startedAt: '2026-01-01T00:00:00.000Z',
    limits: { maxKeysPerSecond: null, maxBytesPerSecond: null, batchKeys: null, maxClientLatencyMs: null },
    engine: 'keys',
    plan: [],
    errors: [],
    keysRemaining: 10,
    keysPerSecond: 617.4,
    etaSeconds: 3.2,
    ...overrides,
  };
}

/** An ApiClient whose fetch answers GET /v1/migrations/m1 from a script, one answer per call. */
function scriptedApi(answers: readonly { status: number; body: unknown }[]) {
  const requests: string[] = [];
  const fetchFn = (async (url: string | URL | Request) => {
    requests.push(String(url));
    const answer = answers[Math.min(requests.length, answers.length) - 1]!;
    return new Response(JSON.stringify(answer.body), { status: answer.status });
  }) as typeof fetch;
  return { api: new ApiClient('http://api.test', 'token', fetchFn), requests };
}

/** Every state of the domain, and whether the poller stops at it. */
const STOPS_AT: Record<MigrationState, boolean> = {
  pending: false,
  running: false,
  paused: false,
  done: true,
  failed: true,
  cancelled: true,
};

describe('the states the poller stops at', () => {
  it.each(Object.values(MigrationState))('%s', async (state) => {
    const { api, requests } = scriptedApi([
      { status: 200, body: view(state) },
      { status: 200, body: view(MigrationState.Done) },
    ]);
    const final = await pollMigration(() => api.migration('m1'), { intervalMs: 0 });
    expect(final.state).toBe(STOPS_AT[state] ? state : MigrationState.Done);
    expect(requests).toHaveLength(STOPS_AT[state] ? 1 : 2);
  });

  it("are classed for every state of the API, which are the domain's", () => {
    expectTypeOf<MigrationView['state']>().toEqualTypeOf<MigrationState>();
  });
});

describe('pollMigration', () => {
  const running = [MigrationState.Pending, MigrationState.Running, MigrationState.Paused];

  it.each([MigrationState.Done, MigrationState.Failed, MigrationState.Cancelled])(
    'reads through pending, running and paused, and returns the %s view',
    async (end) => {
      const { api, requests } = scriptedApi(
        [...running, end].map((state) => ({ status: 200, body: view(state) })),
      );
      const seen: string[] = [];
      const final = await pollMigration(() => api.migration('m1'), {
        intervalMs: 0,
        onView: (each) => {
          seen.push(each.state);
        },
      });
      expect(final.state).toBe(end);
      expect(seen).toEqual([...running, end]);
      expect(requests).toEqual(Array(4).fill('http://api.test/v1/migrations/m1'));
    },
  );

  it('throws with the last view once the time is up', async () => {
    const { api } = scriptedApi([{ status: 200, body: view(MigrationState.Running) }]);
    await expect(pollMigration(() => api.migration('m1'), { intervalMs: 0, timeoutMs: 0 })).rejects.toThrow(
      /did not end within 0 ms; last: .*"state":"running"/,
    );
  });

  it('stops at the first answer that is not 200, with the API code', async () => {
    const { api, requests } = scriptedApi([
      { status: 200, body: view(MigrationState.Running) },
      {
        status: 404,
        body: { statusCode: 404, error: 'Not Found', code: 'NOT_FOUND', message: 'no migration m1' },
      },
    ]);
    const polled = pollMigration(() => api.migration('m1'), { intervalMs: 0 });
    await expect(polled).rejects.toBeInstanceOf(ApiRefusedError);
    await expect(polled).rejects.toMatchObject({
      status: 404,
      code: 'NOT_FOUND',
      message: 'the API refused (404 NOT_FOUND): no migration m1',
    });
    expect(requests).toHaveLength(2);
  });

  it('names the API unreachable when fetch fails', async () => {
    const api = new ApiClient('http://api.test', undefined, (async () => {
      throw new Error('connect ECONNREFUSED');
    }) as typeof fetch);
    await expect(pollMigration(() => api.migration('m1'))).rejects.toMatchObject({
      code: 'CONNECTION',
      message: expect.stringMatching(/cannot reach the API at http:\/\/api.test .*ECONNREFUSED/),
    });
  });
});

describe('the progress line', () => {
  it("counts every ended slot and shows the API's rate and ETA", () => {
    expect(progressLine(view(MigrationState.Running))).toBe(
      `[${'#'.repeat(23)}${'.'.repeat(7)}] running slots 3/4  keys 1,234  617 keys/s  ETA 3 s`,
    );
    expect(progressLine(view(MigrationState.Running, { etaSeconds: null }))).toMatch(/ETA \?$/);
  });

  it('is redrawn in place on a terminal and ends with a newline', () => {
    const written: string[] = [];
    const print = printProgress({ isTTY: true, write: (text: string) => written.push(text) > 0 }, 60_000);
    print(view(MigrationState.Running));
    print(view(MigrationState.Done));
    expect(written.map((text) => text.slice(0, 2))).toEqual(['\r[', '\r[']);
    expect(written[1]!.endsWith('\n')).toBe(true);
  });

  it('elsewhere, prints at most a line per interval, and always the last one', () => {
    const written: string[] = [];
    const print = printProgress({ isTTY: false, write: (text: string) => written.push(text) > 0 }, 60_000);
    print(view(MigrationState.Running));
    print(view(MigrationState.Running));
    print(view(MigrationState.Cancelled));
    expect(written).toHaveLength(2);
    expect(written[1]).toMatch(/^\[.*\] cancelled slots 3\/4 .*\n$/);
  });
});
