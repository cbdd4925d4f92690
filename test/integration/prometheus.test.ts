/**
 * The observability stack end to end, on real servers: a real Prometheus scrapes the API and two
 * workers (the jobs of prometheus/prometheus.yml, pointed at loopback, every second) and evaluates
 * prometheus/alerts.yml while a real migration runs. Then every query of the Grafana dashboard, its
 * variables filled as Grafana would, must answer, each job variable must list its job, Prometheus
 * must count exactly the keys that moved, the one slot made to fail must fire its alert and nothing
 * else may fire, and promtool must find nothing wrong with the metrics or the config.
 */
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { PrometheusProcess, type PromSeries, promtool, seedDataset } from '../../src/sandbox/index.js';
import type { WorkerHandle } from '../../src/workers/worker.js';
import { slotsOf } from './support/slots.js';
import { countKeysInSlots, type Stack, startStack, waitForMigration } from './support/stack.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
/** What Grafana would put in place of its macros, for a 1 s scrape interval. */
const GRAFANA_MACROS: Record<string, string> = { $__rate_interval: '10s', $__range: '1h', $__interval: '1s' };
const DASHBOARD_PATH = 'grafana/dashboards/slotfleet.json';
const PROMETHEUS_CONFIG_PATH = 'prometheus/prometheus.yml';

interface DashboardVariable {
  name: string;
  type: string;
  query?: string;
  current?: { value?: string };
}

interface Dashboard {
  templating: { list: DashboardVariable[] };
  panels: { title: string; targets?: { expr?: string }[] }[];
}

const readDashboard = () => JSON.parse(readFileSync(join(ROOT, DASHBOARD_PATH), 'utf8')) as Dashboard;

interface ScrapeJob {
  job_name: string;
  static_configs?: unknown;
  dns_sd_configs?: unknown;
  [setting: string]: unknown;
}

/**
 * The checked-in scrape jobs, each pointed at local processes instead of compose services, and its
 * rule files where they are in the repo.
 */
function localPrometheusConfig(targetsByJob: Record<string, string[]>) {
  const configPath = join(ROOT, PROMETHEUS_CONFIG_PATH);
  const checkedIn = parse(readFileSync(configPath, 'utf8')) as {
    rule_files?: string[];
    scrape_configs: ScrapeJob[];
  };
  return {
    global: { scrape_interval: '1s', scrape_timeout: '1s', evaluation_interval: '1s' },
    rule_files: (checkedIn.rule_files ?? []).map((file) => resolve(dirname(configPath), file)),
    scrape_configs: checkedIn.scrape_configs.map(({ static_configs, dns_sd_configs, ...job }) => {
      const targets = targetsByJob[job.job_name];
      if (!targets) throw new Error(`prometheus.yml has a job this test does not run: ${job.job_name}`);
      return { ...job, static_configs: [{ targets }] };
    }),
  };
}

/**
 * The dashboard's query variables (the job ones) with the value they start at, which is the job
 * prometheus.yml gives them, and the PromQL that lists the values each one offers.
 */
function jobVariables(): { name: string; value: string; listing: string }[] {
  return readDashboard()
    .templating.list.filter((variable) => variable.type === 'query')
    .map((variable) => {
      // label_values(metric, label): the label's values among the metric's series.
      const match = /^label_values\((\w+),\s*(\w+)\)$/.exec(variable.query ?? '');
      if (!match)
        throw new Error(`variable ${variable.name}: a query this test cannot run: ${variable.query}`);
      const value = variable.current?.value;
      if (!value) throw new Error(`variable ${variable.name} has no current value`);
      return { name: variable.name, value, listing: `count by (${match[2]}) (${match[1]})` };
    });
}

/** Every PromQL expression of the dashboard, with Grafana's macros and the job variables filled in. */
function dashboardQueries(): { panel: string; expr: string }[] {
  const fills: [string, string][] = [
    ...Object.entries(GRAFANA_MACROS),
    ...jobVariables().map(({ name, value }): [string, string] => [`$${name}`, value]),
  ];
  return readDashboard().panels.flatMap((panel) =>
    (panel.targets ?? []).map((target) => {
      let expr = target.expr ?? '';
      for (const [variable, value] of fills) expr = expr.replaceAll(variable, value);
      if (expr.includes('$'))
        throw new Error(`panel "${panel.title}" uses a variable this test cannot fill: ${expr}`);
      return { panel: panel.title, expr };
    }),
  );
}

function scalar(series: PromSeries[]): number | undefined {
  const value = series[0]?.values.at(-1)?.[1];
  return value === undefined ? undefined : Number(value);
}

async function until<T>(
  what: string,
  read: () => Promise<T>,
  accept: (value: T) => boolean,
  timeoutMs = 20_000,
  intervalMs = 250,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: T | undefined;
  while (Date.now() < deadline) {
    last = await read();
    if (accept(last)) return last;
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
  throw new Error(`${what} not reached within ${timeoutMs} ms; last: ${JSON.stringify(last)}`);
}

describe('Prometheus scraping the API and two workers during a migration', () => {
  let stack: Stack;
  let prometheus: PrometheusProcess | undefined;
  let apiUrl: string;
  let workers: WorkerHandle[];
  let prometheusStartedAt: number;
  const token = 'prometheus-test-token-0123456789';
  const auth = { authorization: `Bearer ${token}` };

  beforeAll(async () => {
    stack = await startStack({
      workers: 0,
      // Small jobs, few at a time: the migration lasts long enough for several scrapes.
      env: { SLOTFLEET_API_TOKEN: token, SLOTFLEET_WORKER_CONCURRENCY: '2', SLOTFLEET_BATCH_KEYS: '10' },
    });
    apiUrl = await stack.api.app.listen({ host: '127.0.0.1', port: 0 });
    await seedDataset(stack.cluster.seedUrl, { keys: 30_000, types: 'mixed', ttlFraction: 0, seed: 11 });
  });

  afterAll(async () => {
    const pid = prometheus?.pid;
    await prometheus?.stop();
    if (pid !== undefined)
      expect(() => process.kill(pid, 0), `prometheus pid ${pid} still running`).toThrow();
    await stack?.stop();
  });

  it('answers every dashboard query and counts exactly the keys that moved', {
    timeout: 120_000,
  }, async () => {
    const inject = async (method: 'GET' | 'POST' | 'PATCH', url: string, payload?: unknown) => {
      const response = await stack.api.app.inject({
        method,
        url,
        headers: auth,
        ...(payload ? { payload } : {}),
      });
      expect(response.statusCode, `${method} ${url}: ${response.body}`).toBeLessThan(300);
      return response.json();
    };
    const masters = (await stack.cluster.masters()).sort((a, b) => a.port - b.port);
    const [target, sourceA, sourceB] = [masters[0]!, masters[1]!, masters[2]!];
    const fromA = await slotsOf(stack.cluster, sourceA.id);
    const fromB = await slotsOf(stack.cluster, sourceB.id);
    const movedSlots = [...fromA.slice(0, 200), ...fromB.slice(0, 200)];
    const keysBefore = await countKeysInSlots(stack.cluster, movedSlots);
    expect(keysBefore).toBeGreaterThan(500);

    // The migration under watch, paused until Prometheus has seen it pending.
    const { id } = await inject('POST', '/v1/clusters/default/migrations', {
      moves: [{ slots: movedSlots.join(','), target: target.id }],
    });
    await inject('POST', `/v1/migrations/${id}/pause`);
    // And one that fails for a real reason: its slot is left open towards another node, as another
    // tool would leave it, after the API accepted the move.
    const conflictSlot = fromA.at(-1)!;
    const conflicted = await inject('POST', '/v1/clusters/default/migrations', {
      moves: [{ slots: String(conflictSlot), target: target.id }],
    });
    const sourceClient = stack.cluster.process(sourceA.port).client();
    await sourceClient.call('CLUSTER', 'SETSLOT', conflictSlot, 'MIGRATING', sourceB.id);

    workers = [
      await stack.startWorker({ serveMetrics: true }),
      await stack.startWorker({ serveMetrics: true }),
    ];
    expect(workers.every((worker) => worker.metricsPort > 0)).toBe(true);
    prometheusStartedAt = Date.now() / 1000;
    prometheus = await PrometheusProcess.start({
      config: localPrometheusConfig({
        'slotfleet-api': [new URL(apiUrl).host],
        'slotfleet-worker': workers.map((worker) => `127.0.0.1:${worker.metricsPort}`),
      }),
    });
    await prometheus.waitForTargetsUp(3);
    const prom = prometheus;

    expect(await waitForMigration(stack, conflicted.id, 30_000, auth)).toMatchObject({ state: 'failed' });
    await sourceClient.call('CLUSTER', 'SETSLOT', conflictSlot, 'STABLE');
    sourceClient.disconnect();
    const remaining = `slotfleet_keys_remaining{migration="${id}"}`;
    await until(
      `${remaining} = ${keysBefore}`,
      () => prom.query(remaining),
      (series) => scalar(series) === keysBefore,
    );

    await inject('POST', `/v1/migrations/${id}/resume`);
    // Paused again once keys have moved, so Prometheus sees the count go down however fast the rest
    // goes: once the batches in flight land, every key is either moved or still on its source.
    await until(
      'first keys moved',
      () => inject('GET', `/v1/migrations/${id}`),
      (view) => view.keysMoved > 0,
      30_000,
      20,
    );
    await inject('POST', `/v1/migrations/${id}/pause`);
    await until(
      `${remaining} + keysMoved = ${keysBefore}`,
      async () => ({
        view: await inject('GET', `/v1/migrations/${id}`),
        series: await prom.query(remaining),
      }),
      ({ view, series }) => scalar(series) === keysBefore - view.keysMoved,
    );
    // Held to a crawl until Prometheus has scraped it running: the keys engine's blocks can move
    // the rest within one scrape interval. Then let go.
    await inject('PATCH', `/v1/migrations/${id}`, { maxKeysPerSecond: 10 });
    await inject('POST', `/v1/migrations/${id}/resume`);
    await until(
      'the migration scraped running',
      () => prom.query(`slotfleet_migration_state{migration="${id}",state="running"}`),
      (series) => series.length > 0,
    );
    await inject('PATCH', `/v1/migrations/${id}`, { maxKeysPerSecond: null });
    const final = await waitForMigration(stack, id, 90_000, auth);
    expect(final).toMatchObject({ state: 'done', errors: [] });
    expect(final.slots.done).toBe(400);

    // Prometheus has the final numbers once the keys are all counted and the ended migration is gone.
    const moved = await until(
      'sum(slotfleet_keys_migrated_total) = keysMoved',
      () => prom.query('sum(slotfleet_keys_migrated_total)'),
      (series) => scalar(series) === final.keysMoved,
    );
    await until(
      `${remaining} gone`,
      () => prom.query(remaining),
      (series) => series.length === 0,
    );
    expect(final.keysMoved).toBe(keysBefore);
    expect(scalar(moved)).toBe(keysBefore);
    expect(await countKeysInSlots(stack.cluster, movedSlots)).toBe(keysBefore);
    const bySource = await prom.query('sum by (source, target) (slotfleet_keys_migrated_total)');
    expect(
      bySource.map((series) => series.metric).sort((a, b) => a.source!.localeCompare(b.source!)),
    ).toEqual([
      { source: `127.0.0.1:${sourceA.port}`, target: `127.0.0.1:${target.port}` },
      { source: `127.0.0.1:${sourceB.port}`, target: `127.0.0.1:${target.port}` },
    ]);
    // Both workers did part of it, and Prometheus added them up.
    for (const worker of workers) {
      const own = (await worker.metrics.keysMigrated.get()).values.reduce(
        (sum, entry) => sum + entry.value,
        0,
      );
      expect(own).toBeGreaterThan(0);
    }
    const finished = await prom.query('sum by (result) (slotfleet_slots_finished_total)');
    expect(Object.fromEntries(finished.map((series) => [series.metric.result, scalar([series])]))).toEqual({
      done: 400,
      failed: 1,
      cancelled: 0,
    });
    expect(scalar(await prom.query('sum(slotfleet_migrate_errors_total{code="SLOT_CONFLICT"})'))).toBe(1);

    const end = Date.now() / 1000;
    const queries = dashboardQueries();
    expect(queries.length).toBeGreaterThan(10);
    const empty: string[] = [];
    for (const { panel, expr } of queries) {
      const series = await prom.queryRange(expr, Math.floor(prometheusStartedAt), Math.ceil(end), 1);
      if (!series.some((entry) => entry.values.length > 0)) empty.push(`${panel}: ${expr}`);
    }
    expect(empty).toEqual([]);

    // Each job variable offers exactly its own job, the one it starts at.
    for (const { name, value, listing } of jobVariables()) {
      const jobs = await prom.queryRange(listing, Math.floor(prometheusStartedAt), Math.ceil(end), 1);
      expect(
        jobs.map((series) => series.metric.job),
        name,
      ).toEqual([value]);
    }

    // The rules of prometheus/alerts.yml ran all along: the failed slot fired its alert, on the
    // worker that ran it, and nothing else fired.
    const firing = await until(
      'SlotfleetSlotsFailed firing',
      () => prom.query('ALERTS{alertstate="firing"}'),
      (series) => series.some((entry) => entry.metric.alertname === 'SlotfleetSlotsFailed'),
    );
    expect(firing.map((series) => series.metric)).toEqual([
      {
        __name__: 'ALERTS',
        alertname: 'SlotfleetSlotsFailed',
        alertstate: 'firing',
        severity: 'critical',
        cluster: 'default',
        instance: expect.stringMatching(
          new RegExp(`^127\\.0\\.0\\.1:(${workers.map((worker) => worker.metricsPort).join('|')})$`),
        ),
      },
    ]);
    // Up on every process: what SlotfleetControlRedisUnreachable watches.
    const controlUp = await prom.query('slotfleet_control_redis_up');
    expect(controlUp.map((series) => [series.metric.job, scalar([series])]).sort()).toEqual([
      ['slotfleet-api', 1],
      ['slotfleet-worker', 1],
      ['slotfleet-worker', 1],
    ]);

    // What the dashboard's keys-remaining panel drew: all of them while pending, down to nothing.
    const history = await prom.queryRange(remaining, Math.floor(prometheusStartedAt), Math.ceil(end), 1);
    const drawn = history.flatMap((series) => series.values.map(([, value]) => Number(value)));
    expect(Math.max(...drawn)).toBe(keysBefore);
    expect(Math.min(...drawn)).toBeLessThan(keysBefore);
    // And its states, which SlotfleetMigrationStuck tells apart: paused, then running (pending too, if
    // a scrape fell between a resume and its first slot).
    const states = await prom.queryRange(
      `slotfleet_migration_state{migration="${id}"}`,
      Math.floor(prometheusStartedAt),
      Math.ceil(end),
      1,
    );
    const seen = states.map((series) => series.metric.state);
    expect(seen).toEqual(expect.arrayContaining(['paused', 'running']));
    expect(seen.filter((state) => !['pending', 'paused', 'running'].includes(state!))).toEqual([]);
  });

  it('promtool check metrics finds nothing wrong with the slotfleet metrics of a worker and of the API', async () => {
    const scrapes = await Promise.all(
      [`http://127.0.0.1:${workers[0]!.metricsPort}/metrics`, `${apiUrl}/metrics`].map(async (url) => {
        const response = await fetch(url, { signal: AbortSignal.timeout(10_000) });
        expect(response.status, url).toBe(200);
        return response.text();
      }),
    );
    for (const text of scrapes) {
      const ours = text
        .split('\n')
        .filter((line) => /^(# (HELP|TYPE) )?slotfleet_/.test(line))
        .join('\n');
      expect(ours).toMatch(/^# TYPE slotfleet_keys_migrated_total counter$/m);
      const result = await promtool(['check', 'metrics'], `${ours}\n`);
      expect({ code: result.code, output: result.stdout + result.stderr }).toEqual({ code: 0, output: '' });
    }
    // Each side feeds its own: the workers the slot metrics, the API queue depth.
    expect(scrapes[0]).toMatch(/^slotfleet_migrate_batch_duration_seconds_bucket\{/m);
    expect(scrapes[1]).toMatch(/^slotfleet_queue_jobs\{/m);
  });

  it('promtool check config accepts the checked-in Prometheus config and the one this test ran', async () => {
    for (const file of [join(ROOT, 'prometheus/prometheus.yml'), join(prometheus!.dir, 'prometheus.yml')]) {
      const result = await promtool(['check', 'config', file]);
      expect({ file, code: result.code, output: result.stdout + result.stderr }).toMatchObject({
        file,
        code: 0,
      });
    }
  });
});
