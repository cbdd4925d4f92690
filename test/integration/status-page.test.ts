/**
 * The status page in a real headless Chromium against a real 3-master cluster: the grid shows three
 * owners over 16384 cells, then follows a rebalance onto a new empty master live, both in the page's
 * text summary and in the canvas pixels themselves. Loopback only: any other request is aborted.
 */
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type BrowserContext, chromium, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GRID } from '../../src/producer/routes/status-page.js';
import { seedDataset } from '../../src/sandbox/index.js';
import { type Stack, startStack } from './support/stack.js';

const CHROMIUM = '/usr/bin/chromium';

/** The browser globals the functions run in the page use: the test's tsconfig has no DOM lib. */
declare const document: {
  getElementById(id: string): {
    textContent: string | null;
    width: number;
    height: number;
    getContext(kind: '2d'): {
      getImageData(x: number, y: number, width: number, height: number): { data: Uint8ClampedArray };
    };
  };
};

interface Summary {
  refreshes: number;
  cells: Record<string, number>;
  colours: Record<string, string>;
  open: number;
  moving: number;
  migrations: { id: string; state: string; slotsDone: number; slotsTotal: number; keysMoved: number }[];
}

describe('status page', () => {
  let stack: Stack;
  let baseUrl: string;
  let userDataDir: string;
  let browser: BrowserContext;
  let page: Page;
  const offLoopback: string[] = [];

  beforeAll(async () => {
    if (!existsSync(CHROMIUM)) {
      throw new Error(`${CHROMIUM} not found: install it with \`apt-get install chromium\` (Debian package)`);
    }
    stack = await startStack({ workers: 1, env: { SLOTFLEET_WORKER_CONCURRENCY: '32' } });
    await seedDataset(stack.cluster.seedUrl, { keys: 20_000, types: 'mixed', ttlFraction: 0 });
    baseUrl = await stack.api.app.listen({ host: '127.0.0.1', port: 0 });
    userDataDir = await mkdtemp(join(tmpdir(), 'slotfleet-chromium-'));
    browser = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      timeout: 30_000,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
    await browser.route('**/*', (route) => {
      const url = route.request().url();
      if (url.startsWith(baseUrl)) return route.continue();
      offLoopback.push(url);
      return route.abort();
    });
    page = await browser.newPage();
    page.setDefaultTimeout(30_000);
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    await stack?.stop();
    if (userDataDir) await rm(userDataDir, { recursive: true, force: true });
  }, 60_000);

  const summary = async (): Promise<Summary> =>
    JSON.parse((await page.textContent('#summary')) ?? 'null') as Summary;

  /** The colour of each slot's cell as drawn on the canvas: its top-left pixel, as #rrggbb. */
  const cellPixels = (): Promise<string[]> =>
    page.evaluate(({ columns, cellPixels }) => {
      const canvas = document.getElementById('grid');
      const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
      const hex = (value: number) => value.toString(16).padStart(2, '0');
      return Array.from({ length: columns * columns }, (_, slot) => {
        const offset =
          (Math.floor(slot / columns) * cellPixels * canvas.width + (slot % columns) * cellPixels) * 4;
        return `#${hex(data[offset]!)}${hex(data[offset + 1]!)}${hex(data[offset + 2]!)}`;
      });
    }, GRID);

  const countBy = (values: readonly string[]) => {
    const counts = new Map<string, number>();
    for (const value of values) counts.set(value, (counts.get(value) ?? 0) + 1);
    return counts;
  };

  let before: string[] = [];

  it('serves the page and its JSON open, documented in OpenAPI, and draws three owners over 16384 cells', async () => {
    const html = await fetch(`${baseUrl}/`);
    expect(html.status).toBe(200);
    expect(html.headers.get('content-type')).toMatch(/^text\/html/);
    const paths = Object.keys(
      ((await (await fetch(`${baseUrl}/docs/json`)).json()) as { paths: object }).paths,
    );
    expect(paths).toEqual(expect.arrayContaining(['/', '/status.json']));
    expect((await fetch(`${baseUrl}/status.json?cluster=nope`)).status).toBe(404);

    await page.goto(`${baseUrl}/`);
    await page.waitForFunction(
      () => JSON.parse(document.getElementById('summary').textContent || '{}').refreshes >= 1,
      null,
      {
        timeout: 15_000,
      },
    );
    const shown = await summary();
    expect(Object.keys(shown.cells)).toHaveLength(3);
    expect(Object.values(shown.cells).reduce((sum, count) => sum + count, 0)).toBe(16384);
    expect(shown.open).toBe(0);

    before = await cellPixels();
    const drawn = countBy(before);
    expect(drawn.size).toBe(3);
    for (const [address, colour] of Object.entries(shown.colours)) {
      expect(drawn.get(colour), `${address} drawn in ${colour}`).toBe(shown.cells[address]);
    }
    expect(await page.textContent('#error')).toBe('');
  }, 60_000);

  it('follows a rebalance onto a new empty master live, in the summary and on the canvas', async () => {
    const added = await stack.cluster.addEmptyMaster();
    const newAddress = `127.0.0.1:${added.process.port}`;
    const startedMs = Date.now();
    // The new master weighs 0.25 (the others 1): about 1260 slots move rather than 4096, which
    // still takes several of the page's one-second refreshes.
    const response = await fetch(`${baseUrl}/v1/clusters/default/rebalance`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ useEmptyMasters: true, weights: { [added.id]: 0.25 } }),
    });
    expect(response.status).toBe(202);
    const { id, slots } = (await response.json()) as { id: string; slots: number };
    // 16384 / 3.25 * 0.25, give or take redis-cli's rounding.
    expect(slots).toBeGreaterThanOrEqual(1255);

    // Poll the page (it refreshes itself every second) and record what it showed on the way.
    const seen: Summary[] = [];
    const deadline = Date.now() + 120_000;
    let last: Summary | undefined;
    while (Date.now() < deadline) {
      last = await summary();
      if (seen.at(-1)?.refreshes !== last.refreshes) seen.push(last);
      const migration = last.migrations.find((entry) => entry.id === id);
      if ((last.cells[newAddress] ?? 0) === slots && migration?.state === 'done') break;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    const migration = last?.migrations.find((entry) => entry.id === id);
    expect(
      migration,
      `page never showed migration ${id} done: ${JSON.stringify(last?.migrations)}`,
    ).toMatchObject({
      state: 'done',
    });
    expect(migration!.slotsDone).toBe(migration!.slotsTotal);
    expect(migration!.keysMoved).toBeGreaterThan(0);
    expect(last!.cells[newAddress]).toBe(slots);
    expect(Object.keys(last!.cells)).toHaveLength(4);
    expect(last!.open).toBe(0);
    // Live, not only at the end: some refresh showed the migration still under way.
    expect(seen.some((shown) => shown.moving > 0)).toBe(true);
    expect(
      seen.some((shown) => shown.migrations.some((entry) => entry.id === id && entry.state !== 'done')),
    ).toBe(true);
    console.log(
      `status page: ${seen.length} refreshes seen, rebalance of ${migration!.slotsTotal} slots ` +
        `(${migration!.keysMoved} keys) shown done after ${Date.now() - startedMs} ms`,
    );

    // The pixels: cells of the slots that moved now carry the new master's colour, and did not before.
    await page.waitForFunction(
      (refreshes) => JSON.parse(document.getElementById('summary').textContent || '{}').refreshes > refreshes,
      last!.refreshes,
      { timeout: 5_000 },
    );
    const newColour = (await summary()).colours[newAddress]!;
    const after = await cellPixels();
    const moved = after.flatMap((colour, slot) => (colour === newColour ? [slot] : []));
    expect(moved.length).toBe(last!.cells[newAddress]);
    expect(moved.every((slot) => before[slot] !== newColour)).toBe(true);
    expect(countBy(after).size).toBe(4);
    expect(await page.textContent('#migrations tbody')).toContain(id);
    expect(offLoopback).toEqual([]);
  }, 180_000);
});
