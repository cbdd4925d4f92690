/**
 * docker-compose.yml, prometheus/prometheus.yml, grafana/ and the Dockerfile cannot be run here (no
 * Docker engine), so they are checked against each other and against the code: every name they use
 * exists, every file they mount is in the repo, every port Prometheus scrapes is the one the service
 * is configured with (through loadConfig itself), and every metric a panel uses is defined.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { type Config, ENVIRONMENT, loadConfig } from '../../src/shared/config.js';
import { createMetrics } from '../../src/shared/metrics.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const read = (path: string) => readFileSync(join(ROOT, path), 'utf8');
const yamlFile = (path: string) => parse(read(path), { merge: true });

interface Service {
  image?: string;
  build?: string | { context: string; dockerfile?: string };
  command?: string | string[];
  entrypoint?: string | string[];
  environment?: Record<string, string | number | boolean | null> | string[];
  depends_on?: string[] | Record<string, unknown>;
  volumes?: (string | { type: string; source: string; target: string })[];
  ports?: (string | number)[];
  expose?: (string | number)[];
  networks?: string[] | Record<string, { ipv4_address?: string } | null>;
  deploy?: { replicas?: number };
}

interface Compose {
  services: Record<string, Service>;
  volumes?: Record<string, unknown>;
  networks?: Record<string, { ipam?: { config?: { subnet?: string; ip_range?: string }[] } }>;
}

interface ScrapeJob {
  job_name: string;
  metrics_path?: string;
  static_configs?: { targets: string[] }[];
  dns_sd_configs?: { names: string[]; type?: string; port: number }[];
}

const compose = yamlFile('docker-compose.yml') as Compose;
const services = compose.services;
const prometheusConfig = yamlFile('prometheus/prometheus.yml') as {
  global: { scrape_interval: string };
  scrape_configs: ScrapeJob[];
};
const datasources = yamlFile('grafana/provisioning/datasources/prometheus.yml') as {
  datasources: {
    uid: string;
    type: string;
    url: string;
    isDefault?: boolean;
    jsonData?: { timeInterval?: string };
  }[];
};
const dashboardProviders = yamlFile('grafana/provisioning/dashboards/slotfleet.yml') as {
  providers: { type: string; options: { path: string } }[];
};
interface DashboardVariable {
  name: string;
  type: string;
  query?: string;
  datasource?: { type?: string; uid?: string };
  current?: { value?: string };
}

const dashboard = JSON.parse(read('grafana/dashboards/slotfleet.json')) as {
  __inputs?: unknown[];
  templating: { list: DashboardVariable[] };
  panels: {
    title: string;
    datasource?: { type?: string; uid?: string };
    targets?: { expr?: string; datasource?: { type?: string; uid?: string } }[];
  }[];
};

function environmentOf(service: Service): Record<string, string> {
  const entries = Array.isArray(service.environment)
    ? service.environment.map((entry) => entry.split(/=(.*)/s, 2) as [string, string])
    : Object.entries(service.environment ?? {}).map(([name, value]) => [name, String(value ?? '')]);
  return Object.fromEntries(entries);
}

/** Compose interpolation: ${VAR:-default} gives the default, any other ${VAR...} a stand-in value. */
function interpolate(value: string): string {
  return value.replace(/\$\{(\w+)(:?[-?])?([^}]*)\}/g, (_match, _name, operator: string | undefined, rest) =>
    operator?.endsWith('-') ? rest : 'compose-interpolated-value-0123456789',
  );
}

/** The slotfleet Config a compose service's process would load. */
function configOf(name: string): Config {
  const environment = Object.fromEntries(
    Object.entries(environmentOf(services[name]!)).map(([variable, value]) => [variable, interpolate(value)]),
  );
  return loadConfig(environment);
}

function words(value: string | string[] | undefined): string[] {
  return Array.isArray(value) ? value : (value ?? '').split(/\s+/).filter(Boolean);
}

function exposed(service: Service): number[] {
  return (service.expose ?? []).map(Number);
}

function hostPort(target: string): { host: string; port: number } {
  const colon = target.lastIndexOf(':');
  return { host: target.slice(0, colon), port: Number(target.slice(colon + 1)) };
}

function job(name: string): ScrapeJob {
  const found = prometheusConfig.scrape_configs.find((scrape) => scrape.job_name === name);
  if (!found) throw new Error(`prometheus.yml has no job ${name}`);
  return found;
}

function ipv4(address: string): number {
  return address.split('.').reduce((value, octet) => value * 256 + Number(octet), 0);
}

function inCidr(address: string, cidr: string): boolean {
  const [base, bits] = cidr.split('/') as [string, string];
  const size = 2 ** (32 - Number(bits));
  return Math.floor(ipv4(address) / size) === Math.floor(ipv4(base) / size);
}

describe('docker-compose.yml', () => {
  it('names only services it defines', () => {
    const named = new Set<string>();
    for (const service of Object.values(services)) {
      const dependsOn = Array.isArray(service.depends_on)
        ? service.depends_on
        : Object.keys(service.depends_on ?? {});
      for (const dependency of dependsOn) named.add(dependency);
    }
    for (const name of ['api', 'worker']) {
      const config = configOf(name);
      named.add(config.control.host);
      for (const endpoint of Object.values(config.clusters)) named.add(endpoint.host);
    }
    for (const scrape of prometheusConfig.scrape_configs) {
      for (const target of (scrape.static_configs ?? []).flatMap((entry) => entry.targets)) {
        named.add(hostPort(target).host);
      }
      for (const dns of scrape.dns_sd_configs ?? []) for (const name of dns.names) named.add(name);
    }
    for (const source of datasources.datasources) named.add(new URL(source.url).hostname);
    expect([...named].filter((name) => !(name in services))).toEqual([]);
    expect(named).toContain('control');
  });

  it('mounts and builds only files that are in the repo, and declares its named volumes', () => {
    const missing: string[] = [];
    for (const [name, service] of Object.entries(services)) {
      for (const volume of service.volumes ?? []) {
        const source = typeof volume === 'string' ? volume.split(':')[0]! : volume.source;
        if (source.startsWith('.') || source.startsWith('/')) {
          if (!existsSync(join(ROOT, source))) missing.push(`${name}: ${source}`);
        } else if (!(source in (compose.volumes ?? {})))
          missing.push(`${name}: volume ${source} not declared`);
      }
      if (service.build !== undefined) {
        const build = typeof service.build === 'string' ? { context: service.build } : service.build;
        const dockerfile = join(build.context, build.dockerfile ?? 'Dockerfile');
        if (!existsSync(join(ROOT, dockerfile))) missing.push(`${name}: ${dockerfile}`);
      }
    }
    expect(missing).toEqual([]);
  });

  it('passes only SLOTFLEET_* variables that config.ts reads, and values it accepts', () => {
    const unknown: string[] = [];
    for (const [name, service] of Object.entries(services)) {
      for (const variable of Object.keys(environmentOf(service))) {
        if (variable.startsWith('SLOTFLEET_') && !(variable in ENVIRONMENT))
          unknown.push(`${name}: ${variable}`);
      }
    }
    expect(unknown).toEqual([]);
    expect(() => configOf('api')).not.toThrow();
    expect(() => configOf('worker')).not.toThrow();
  });

  it('lets Prometheus scrape the API and each worker replica where they listen', () => {
    const api = configOf('api');
    const [apiTarget, ...others] = (job('slotfleet-api').static_configs ?? []).flatMap(
      (entry) => entry.targets,
    );
    expect(others).toEqual([]);
    expect(hostPort(apiTarget!)).toEqual({ host: 'api', port: api.api.port });
    expect(exposed(services.api!)).toContain(api.api.port);
    // Without a token the API would fall back to loopback, out of Prometheus' reach.
    expect(api.api.host).toBe('0.0.0.0');
    expect(api.api.token).toBeDefined();

    const worker = configOf('worker');
    const [dns, ...moreDns] = job('slotfleet-worker').dns_sd_configs ?? [];
    expect(moreDns).toEqual([]);
    expect(dns).toMatchObject({ names: ['worker'], type: 'A', port: worker.worker.metricsPort });
    expect(exposed(services.worker!)).toContain(worker.worker.metricsPort);
    // The worker serves /metrics on SLOTFLEET_API_HOST.
    expect(worker.api.host).toBe('0.0.0.0');
    expect(services.worker!.deploy?.replicas).toBeGreaterThanOrEqual(2);
    // A published port would let only one replica start.
    expect(services.worker!.ports ?? []).toEqual([]);

    const prometheusListen = words(services.prometheus!.command).find((word) =>
      word.startsWith('--web.listen-address'),
    );
    const prometheusPort = prometheusListen ? hostPort(prometheusListen.split('=')[1]!).port : 9090;
    expect(exposed(services.prometheus!)).toContain(prometheusPort);
    const mount = (services.prometheus!.volumes ?? []).find(
      (volume) => typeof volume === 'string' && volume.startsWith('./prometheus/prometheus.yml:'),
    ) as string;
    const configFlag = words(services.prometheus!.command).find((word) => word.startsWith('--config.file='));
    expect(configFlag?.split('=')[1] ?? '/etc/prometheus/prometheus.yml').toBe(mount.split(':')[1]);
  });

  it('publishes ports on loopback only', () => {
    const published = Object.entries(services).flatMap(([name, service]) =>
      (service.ports ?? []).map((port) => `${name} ${port}`),
    );
    expect(published.length).toBeGreaterThan(0);
    for (const entry of published) expect(entry).toMatch(/ 127\.0\.0\.1:\d+:\d+$/);
  });

  it('runs a 6-node Redis 7.0 cluster with one replica per master, created by the init job, and an AOF control Redis', () => {
    const nodes = Object.entries(services).filter(([, service]) =>
      words(service.command).includes('--cluster-enabled'),
    );
    expect(nodes).toHaveLength(6);
    const subnet = compose.networks?.default?.ipam?.config?.[0];
    const addresses = nodes.map(([name, service]) => {
      expect(service.image, name).toBe('redis:7.0');
      expect(words(service.command), name).not.toContain('--port');
      const address = (service.networks as Record<string, { ipv4_address: string }>).default!.ipv4_address;
      expect(inCidr(address, subnet!.subnet!), `${name} ${address} in ${subnet?.subnet}`).toBe(true);
      expect(inCidr(address, subnet!.ip_range!), `${name} ${address} outside ${subnet?.ip_range}`).toBe(
        false,
      );
      return `${address}:6379`;
    });
    expect(new Set(addresses).size).toBe(6);
    const init = services['cluster-init']!;
    const script = words(init.command).join(' ');
    const create = /redis-cli --cluster create ([^\n]*)/.exec(script)?.[1] ?? '';
    expect(
      create
        .split(/\s+/)
        .filter((word) => /^\d+\.\d+\.\d+\.\d+:\d+$/.test(word))
        .sort(),
    ).toEqual([...addresses].sort());
    expect(create).toMatch(/--cluster-replicas 1 --cluster-yes/);
    expect(Object.keys(init.depends_on ?? {}).sort()).toEqual(nodes.map(([name]) => name).sort());
    // Compose would interpolate a lone $ itself; the shell's must be written $$.
    expect(script).not.toMatch(/(^|[^$])\$\(/);
    expect(configOf('worker').clusters.default?.port).toBe(6379);

    const control = services[configOf('api').control.host]!;
    expect(words(control.command).join(' ')).toMatch(/--appendonly yes/);
  });

  it('builds api and worker from the one Dockerfile, which runs node dist/cli/main.js', () => {
    for (const name of ['api', 'worker']) {
      expect(services[name]!.build, name).toBe('.');
      expect(words(services[name]!.command), name).toEqual([name]);
    }
    const dockerfile = read('Dockerfile');
    expect(dockerfile).toMatch(/^FROM node:20\S* AS build$/m);
    expect(dockerfile).toMatch(/^RUN npm ci\b/m);
    expect(dockerfile).toMatch(/^RUN npm run build$/m);
    expect(dockerfile).toMatch(/^ENTRYPOINT \["node", "dist\/cli\/main\.js"\]$/m);
    expect(read('src/cli/main.ts')).toMatch(/^ {2}api: async/m);
    expect(read('src/cli/main.ts')).toMatch(/^ {2}worker: async/m);
  });
});

describe('grafana/', () => {
  const metricNames = createMetrics({ defaultMetrics: false })
    .registry.getMetricsAsArray()
    .map((metric) => metric.name);

  it('provisions the default Prometheus datasource, at the scrape interval', () => {
    const [source, ...others] = datasources.datasources;
    expect(others).toEqual([]);
    // The dashboard's datasource variable, left unset, takes the default one.
    expect(source).toMatchObject({ type: 'prometheus', isDefault: true });
    expect(source!.jsonData?.timeInterval).toBe(prometheusConfig.global.scrape_interval);
  });

  it('names its datasource and jobs only through variables, so it imports into any Grafana', () => {
    const variables = Object.fromEntries(
      dashboard.templating.list.map((variable) => [variable.name, variable]),
    );
    expect(variables.datasource).toMatchObject({ type: 'datasource', query: 'prometheus' });
    // biome-ignore lint/suspicious/noTemplateCurlyInString: Grafana's variable syntax, not a template.
    const viaVariable = { type: 'prometheus', uid: '${datasource}' };
    for (const panel of dashboard.panels) {
      expect(panel.datasource, panel.title).toEqual(viaVariable);
      for (const target of panel.targets ?? []) expect(target.datasource, panel.title).toEqual(viaVariable);
    }
    // Each job variable defaults to the job of prometheus/prometheus.yml it stands for.
    for (const [name, job] of [
      ['worker_job', 'slotfleet-worker'],
      ['api_job', 'slotfleet-api'],
    ] as const) {
      expect(variables[name], name).toMatchObject({
        type: 'query',
        datasource: viaVariable,
        current: { value: job },
      });
      expect(prometheusConfig.scrape_configs.map((scrape) => scrape.job_name)).toContain(job);
    }
    // Provisioning would leave an import placeholder unfilled (grafana/grafana#10786).
    expect(dashboard.__inputs ?? []).toEqual([]);
    const text = JSON.stringify(dashboard);
    expect(text).not.toMatch(/\$\{DS_|slotfleet-prometheus|job=\\"slotfleet-/);
    expect(text).not.toMatch(/localhost|127\.0\.0\.1|:9090|:8080|:9464/);
  });

  it('loads the dashboards from where compose mounts them', () => {
    const grafana = services.grafana!;
    const mountOf = (source: string) =>
      (grafana.volumes ?? [])
        .filter((volume): volume is string => typeof volume === 'string')
        .find((volume) => volume.split(':')[0] === source)
        ?.split(':')[1];
    expect(mountOf('./grafana/provisioning')).toBe('/etc/grafana/provisioning');
    const [provider] = dashboardProviders.providers;
    expect(provider).toMatchObject({ type: 'file', options: { path: mountOf('./grafana/dashboards') } });
  });

  it('uses only metrics src/shared/metrics.ts defines, and every one of them', () => {
    const used = new Set(
      dashboard.panels
        .flatMap((panel) => panel.targets ?? [])
        .flatMap((target) => target.expr?.match(/\bslotfleet_\w+/g) ?? [])
        .map((name) => name.replace(/_(bucket|sum|count)$/, '')),
    );
    expect([...used].filter((name) => !metricNames.includes(name))).toEqual([]);
    expect(metricNames.filter((name) => !used.has(name))).toEqual([]);
  });
});
