/**
 * A live status page: GET / draws the 16384 slots on a canvas coloured by owner, marks open slots
 * and slots an active migration still holds, and shows the progress of recent migrations. It polls
 * GET /status.json every second; that endpoint is the whole data model of the page.
 */
import { Type } from '@fastify/type-provider-typebox';
import { ENDED_STEPS, slotHasEnded } from '../../shared/domain/migration.js';
import { parseSlotRanges, SLOT_COUNT } from '../../shared/domain/slots.js';
import { NodeRole, nodeAddress } from '../../shared/domain/topology.js';
import type { MigrationRecord } from '../../shared/queue/migration-store.js';
import type { AppDeps, TypedApp } from '../deps.js';
import { errorResponses } from '../http-errors.js';
import { migrationRate, remainingKeys } from '../remaining-keys.js';
import { clusterAdapter, hasEnded } from '../route-helpers.js';
import { ClusterParams, OpenSlot } from '../schemas.js';

/**
 * Owner colours. The page gives each master the first colour no other master has and keeps it while
 * the page is open, so adding a master never repaints the others; beyond 12 masters colours repeat.
 */
const OWNER_PALETTE = [
  '#4e79a7',
  '#f28e2b',
  '#59a14f',
  '#e15759',
  '#b07aa1',
  '#edc948',
  '#76b7b2',
  '#ff9da7',
  '#9c755f',
  '#bab0ac',
  '#1f9e89',
  '#d37295',
] as const;

/** Migrations of the cluster shown on the page, newest first, ended ones included. */
const RECENT_MIGRATIONS = 5;
/** How many of the newest migrations (all clusters) are read to find RECENT_MIGRATIONS of one. */
const MIGRATIONS_SCANNED = 50;

const StatusQuery = Type.Object(
  { cluster: Type.Optional(ClusterParams.properties.cluster) },
  { additionalProperties: false },
);

const StatusMigration = Type.Object({
  id: Type.String(),
  kind: Type.String(),
  state: Type.String({ description: 'pending, running, paused, done, failed or cancelled' }),
  slotsTotal: Type.Integer(),
  slotsDone: Type.Integer(),
  slotsEnded: Type.Integer({ description: 'done, failed or cancelled' }),
  keysMoved: Type.Integer(),
  keysRemaining: Type.Union([Type.Integer(), Type.Null()], { description: 'live; null if unknown' }),
  keysPerSecond: Type.Number(),
  etaSeconds: Type.Union([Type.Number(), Type.Null()]),
  startedAt: Type.Union([Type.String(), Type.Null()]),
});

export const StatusSnapshot = Type.Object({
  cluster: Type.String(),
  at: Type.String({ description: 'when this snapshot was taken (ISO 8601)' }),
  masters: Type.Array(
    Type.Object({
      id: Type.String(),
      address: Type.String(),
      slots: Type.Integer(),
      failed: Type.Boolean(),
    }),
    { description: 'sorted by address; owners[] and moving[].target index into this array' },
  ),
  owners: Type.Array(Type.Integer({ minimum: -1 }), {
    minItems: SLOT_COUNT,
    maxItems: SLOT_COUNT,
    description: 'for each slot, the index in masters of its owner; -1 when no master owns it',
  }),
  openSlots: Type.Array(OpenSlot),
  moving: Type.Array(
    Type.Object({
      slot: Type.Integer(),
      target: Type.Integer({ description: 'index in masters of the target; -1 if not a master now' }),
    }),
    { description: 'slots an active migration holds and has not finished' },
  ),
  migrations: Type.Array(StatusMigration, { description: `the newest ${RECENT_MIGRATIONS}, ended ones too` }),
});

export function registerStatusPage(app: TypedApp, deps: AppDeps): void {
  // Open like /healthz, even with a token set: both routes show addresses, node ids and slot owners,
  // never credentials or keys, and the page cannot send a bearer token on its own.
  app.get(
    '/',
    {
      schema: {
        description:
          'Live status page: the 16384 slots coloured by owner, open slots and migration progress. ' +
          'Polls /status.json every second. ?cluster= picks a cluster (default: default).',
        produces: ['text/html'],
        response: { 200: Type.String({ description: 'HTML page with inline script' }) },
      },
    },
    async (_request, reply) =>
      reply
        .type('text/html; charset=utf-8')
        .header(
          'content-security-policy',
          "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'",
        )
        .send(STATUS_PAGE),
  );

  app.get(
    '/status.json',
    {
      schema: {
        description:
          'What the status page draws: the owner of every slot, masters, open slots, slots held by active ' +
          'migrations and the progress of recent migrations.',
        querystring: StatusQuery,
        response: { 200: StatusSnapshot, ...errorResponses(400, 404, 503) },
      },
    },
    async (request) => {
      const cluster = request.query.cluster ?? 'default';
      const adapter = clusterAdapter(deps, cluster);
      const snapshot = await adapter.snapshot();
      const masters = snapshot.nodes
        .filter((node) => node.role === NodeRole.Master)
        .sort((a, b) => a.host.localeCompare(b.host) || a.port - b.port);
      const indexOf = new Map(masters.map((master, index) => [master.id, index]));
      const owners = snapshot.owners.map((owner) => (owner === null ? -1 : (indexOf.get(owner) ?? -1)));
      const slotsOf = new Array<number>(masters.length).fill(0);
      for (const owner of owners) if (owner >= 0) slotsOf[owner] = (slotsOf[owner] ?? 0) + 1;

      const page = await deps.store.list(MIGRATIONS_SCANNED);
      const records = (await Promise.all(page.ids.map((id) => deps.store.get(id))))
        .filter((record): record is MigrationRecord => record?.cluster === cluster)
        .slice(0, RECENT_MIGRATIONS);
      const active = records.filter((record) => !hasEnded(record));
      const moving: { slot: number; target: number }[] = [];
      for (const record of active) {
        const steps = await deps.store.slotSteps(record.id);
        for (const group of record.plan) {
          const target = indexOf.get(group.targetId) ?? -1;
          for (const slot of parseSlotRanges(group.slots)) {
            if (!slotHasEnded(steps.get(slot))) moving.push({ slot, target });
          }
        }
      }
      const migrations = await Promise.all(
        records.map(async (record) => {
          const keysRemaining = await remainingKeys(deps, record);
          return {
            id: record.id,
            kind: record.kind,
            state: record.state,
            slotsTotal: record.slotsTotal,
            slotsDone: record.slots.done,
            slotsEnded: ENDED_STEPS.reduce((sum, step) => sum + record.slots[step], 0),
            keysMoved: record.keysMoved,
            keysRemaining,
            ...migrationRate(record, keysRemaining),
            startedAt: record.startedAt,
          };
        }),
      );
      return {
        cluster,
        at: new Date().toISOString(),
        masters: masters.map((master, index) => ({
          id: master.id,
          address: nodeAddress(master),
          slots: slotsOf[index] ?? 0,
          failed: master.failed,
        })),
        owners,
        openSlots: snapshot.openSlots.map((entry) => ({ ...entry })),
        moving,
        migrations,
      };
    },
  );
}

/** Canvas geometry, shared with tests that read pixels: slot s is at column s % 128, row s / 128. */
export const GRID = { columns: 128, cellPixels: 5, fillPixels: 4 } as const;

const STATUS_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>slotfleet status</title>
<style>
  body { font: 14px system-ui, sans-serif; margin: 16px; background: #15171a; color: #e8e8e8; }
  h1 { font-size: 18px; } h2 { font-size: 15px; margin: 12px 0 4px; }
  .layout { display: flex; gap: 24px; flex-wrap: wrap; align-items: flex-start; }
  canvas { border: 1px solid #444; image-rendering: pixelated; }
  table { border-collapse: collapse; } th, td { padding: 2px 8px; text-align: left; }
  th { color: #aaa; font-weight: normal; }
  .swatch { display: inline-block; width: 12px; height: 12px; vertical-align: middle; }
  #error { color: #ff6b6b; min-height: 1em; }
  .legend { color: #aaa; max-width: 520px; }
</style>
</head>
<body>
<h1>slotfleet: cluster <span id="cluster"></span></h1>
<p id="error" role="alert"></p>
<div class="layout">
  <canvas id="grid" width="${GRID.columns * GRID.cellPixels}" height="${GRID.columns * GRID.cellPixels}"
    aria-label="16384 slots, 128 per row, slot 0 top left, coloured by owner"></canvas>
  <div>
    <h2>Masters</h2>
    <table id="masters"><thead><tr><th></th><th>address</th><th>id</th><th>slots</th><th></th></tr></thead><tbody></tbody></table>
    <p class="legend">Each cell is a slot (128 per row). Grey: no owner. White cell: open (IMPORTING/MIGRATING).
      Centre dot: held by an active migration, in the colour of its target.</p>
    <h2>Migrations</h2>
    <table id="migrations"><thead><tr><th>id</th><th>kind</th><th>state</th><th>slots</th><th></th>
      <th>keys moved</th><th>keys/s</th><th>ETA</th></tr></thead><tbody></tbody></table>
    <p id="updated" class="legend"></p>
  </div>
</div>
<pre id="summary" hidden></pre>
<script>
'use strict';
const COLUMNS = ${GRID.columns}, CELL = ${GRID.cellPixels}, FILL = ${GRID.fillPixels};
const PALETTE = ${JSON.stringify(OWNER_PALETTE)};
const UNOWNED = '#555555', OPEN = '#ffffff', BACKGROUND = '#15171a';
const cluster = new URLSearchParams(location.search).get('cluster') || 'default';
document.getElementById('cluster').textContent = cluster;
const context = document.getElementById('grid').getContext('2d');
let refreshes = 0;
// Node id -> colour for the page's life: a new master takes a free colour, the others keep theirs.
const colourOf = new Map();

function colourFor(id) {
  if (!colourOf.has(id)) {
    const used = new Set(colourOf.values());
    colourOf.set(id, PALETTE.find((colour) => !used.has(colour)) || PALETTE[colourOf.size % PALETTE.length]);
  }
  return colourOf.get(id);
}

function cells(row, values) {
  const tr = document.createElement('tr');
  for (const value of values) {
    const td = document.createElement('td');
    if (value instanceof Node) td.append(value); else td.textContent = value;
    tr.append(td);
  }
  row.append(tr);
}

function swatch(colour) {
  const span = document.createElement('span');
  span.className = 'swatch';
  span.style.background = colour;
  return span;
}

function progress(done, total) {
  const bar = document.createElement('progress');
  bar.max = Math.max(total, 1);
  bar.value = done;
  return bar;
}

function duration(seconds) {
  if (seconds === null) return '?';
  if (seconds < 60) return Math.ceil(seconds) + ' s';
  return Math.floor(seconds / 60) + ' min ' + Math.ceil(seconds % 60) + ' s';
}

function draw(status) {
  const colours = status.masters.map((master) => colourFor(master.id));
  const open = new Set(status.openSlots.map((entry) => entry.slot));
  context.fillStyle = BACKGROUND;
  context.fillRect(0, 0, context.canvas.width, context.canvas.height);
  status.owners.forEach((owner, slot) => {
    const x = (slot % COLUMNS) * CELL, y = Math.floor(slot / COLUMNS) * CELL;
    const colour = owner >= 0 ? colours[owner] : UNOWNED;
    context.fillStyle = open.has(slot) ? OPEN : colour;
    context.fillRect(x, y, FILL, FILL);
    if (open.has(slot)) { context.fillStyle = colour; context.fillRect(x + 1, y + 1, FILL - 2, FILL - 2); }
  });
  for (const entry of status.moving) {
    const x = (entry.slot % COLUMNS) * CELL, y = Math.floor(entry.slot / COLUMNS) * CELL;
    context.fillStyle = entry.target >= 0 ? colours[entry.target] : UNOWNED;
    context.fillRect(x + 1, y + 1, FILL - 2, FILL - 2);
  }
  return open.size;
}

function render(status) {
  const openCount = draw(status);
  const masters = document.querySelector('#masters tbody');
  masters.replaceChildren();
  for (const master of status.masters) {
    cells(masters, [swatch(colourFor(master.id)), master.address, master.id.slice(0, 8), String(master.slots),
      master.failed ? 'failed' : '']);
  }
  const migrations = document.querySelector('#migrations tbody');
  migrations.replaceChildren();
  for (const migration of status.migrations) {
    cells(migrations, [migration.id, migration.kind, migration.state,
      migration.slotsDone + ' / ' + migration.slotsTotal, progress(migration.slotsEnded, migration.slotsTotal),
      String(migration.keysMoved), String(Math.round(migration.keysPerSecond)), duration(migration.etaSeconds)]);
  }
  refreshes += 1;
  document.getElementById('updated').textContent = 'updated ' + status.at;
  // What the canvas shows, as text, so a test can check it without decoding pixels.
  const cellsByMaster = {};
  status.owners.forEach((owner) => {
    const key = owner >= 0 ? status.masters[owner].address : 'unowned';
    cellsByMaster[key] = (cellsByMaster[key] || 0) + 1;
  });
  document.getElementById('summary').textContent = JSON.stringify({
    refreshes, at: status.at,
    cells: cellsByMaster,
    colours: Object.fromEntries(status.masters.map((master) => [master.address, colourFor(master.id)])),
    open: openCount, moving: status.moving.length,
    migrations: status.migrations.map((migration) => ({ id: migration.id, state: migration.state,
      slotsDone: migration.slotsDone, slotsTotal: migration.slotsTotal, keysMoved: migration.keysMoved })),
  });
}

async function refresh() {
  try {
    const response = await fetch('status.json?cluster=' + encodeURIComponent(cluster), { cache: 'no-store' });
    const body = await response.json();
    if (!response.ok) throw new Error(body.message || 'HTTP ' + response.status);
    render(body);
    document.getElementById('error').textContent = '';
  } catch (error) {
    document.getElementById('error').textContent = 'refresh failed: ' + error.message;
  } finally {
    setTimeout(refresh, 1000);
  }
}
refresh();
</script>
</body>
</html>
`;
