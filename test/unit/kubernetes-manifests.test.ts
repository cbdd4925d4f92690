/**
 * deploy/kubernetes cannot be applied here (no cluster), so it is checked offline, two ways:
 * - against the Kubernetes API schemas (and prometheus-operator's CRD for the PodMonitor), with the
 *   validators kubernetes-models ships (types, required fields, enums, formats), and against the same
 *   package's TypeScript types, whose excess-property check refuses an unknown field (a misspelt
 *   `readinessprobe` would otherwise be dropped by the schema check and by the API server alike);
 * - against the code: every variable is one config.ts reads and loadConfig accepts the values, each
 *   container port is the one its process listens on, each probe path is served by that process
 *   without a token, the grace period outlasts the shutdown deadline, selectors select, and the
 *   PodMonitor's jobs are those of prometheus/prometheus.yml (the dashboard's defaults).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join, posix } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PodMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor';
import { Deployment } from 'kubernetes-models/apps/v1/Deployment';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget';
import { ConfigMap } from 'kubernetes-models/v1/ConfigMap';
import { Secret } from 'kubernetes-models/v1/Secret';
import { Service } from 'kubernetes-models/v1/Service';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';
import type { AppDeps } from '../../src/producer/deps.js';
import { type Config, ENVIRONMENT, loadConfig } from '../../src/shared/config.js';
import { createLogger } from '../../src/shared/logger.js';
import { WorkerRoute } from '../../src/workers/worker.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const DIR = 'deploy/kubernetes';
const read = (path: string) => readFileSync(join(ROOT, path), 'utf8');

/** The model (schema validator) and the TypeScript type of each kind the manifests may use. */
const KINDS: Record<
  string,
  { readonly model: new (data: never) => { validate(): void }; readonly module: string }
> = {
  'apps/v1 Deployment': { model: Deployment, module: 'kubernetes-models/apps/v1/Deployment' },
  'v1 Service': { model: Service, module: 'kubernetes-models/v1/Service' },
  'v1 ConfigMap': { model: ConfigMap, module: 'kubernetes-models/v1/ConfigMap' },
  'v1 Secret': { model: Secret, module: 'kubernetes-models/v1/Secret' },
  'policy/v1 PodDisruptionBudget': {
    model: PodDisruptionBudget,
    module: 'kubernetes-models/policy/v1/PodDisruptionBudget',
  },
  'monitoring.coreos.com/v1 PodMonitor': {
    model: PodMonitor,
    module: '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor',
  },
};

type Labels = Record<string, string>;

interface Probe {
  httpGet?: { path?: string; port?: number | string };
}

interface Container {
  name: string;
  image?: string;
  args?: string[];
  command?: string[];
  ports?: { name?: string; containerPort: number }[];
  envFrom?: { configMapRef?: { name: string }; secretRef?: { name: string } }[];
  env?: {
    name: string;
    value?: string;
    valueFrom?: { secretKeyRef?: { name: string; key: string; optional?: boolean } };
  }[];
  startupProbe?: Probe;
  livenessProbe?: Probe;
  readinessProbe?: Probe;
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> };
  securityContext?: {
    allowPrivilegeEscalation?: boolean;
    readOnlyRootFilesystem?: boolean;
    capabilities?: { drop?: string[] };
  };
}

interface PodTemplate {
  metadata: { labels: Labels; annotations?: Record<string, string> };
  spec: {
    containers: Container[];
    terminationGracePeriodSeconds?: number;
    automountServiceAccountToken?: boolean;
    securityContext?: { runAsNonRoot?: boolean; runAsUser?: number };
  };
}

interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Labels };
  spec?: {
    selector?: { matchLabels?: Labels } | Labels;
    template?: PodTemplate;
    ports?: { port: number; targetPort?: number | string }[];
    podMetricsEndpoints?: {
      port?: string;
      path?: string;
      relabelings?: { targetLabel?: string; replacement?: string }[];
    }[];
  };
  data?: Record<string, string>;
  stringData?: Record<string, string>;
}

interface Kustomization {
  apiVersion: string;
  kind: string;
  namespace?: string;
  resources?: string[];
  images?: { name: string; newName?: string; newTag?: string }[];
}

interface Manifest {
  readonly file: string;
  readonly index: number;
  readonly object: KubeObject;
}

function yamlFiles(directory: string): string[] {
  return readdirSync(join(ROOT, directory), { withFileTypes: true }).flatMap((entry) => {
    const path = posix.join(directory, entry.name);
    if (entry.isDirectory()) return yamlFiles(path);
    return /\.ya?ml$/.test(entry.name) ? [path] : [];
  });
}

const files = yamlFiles(DIR);
const kustomizationFiles = files.filter((file) => posix.basename(file) === 'kustomization.yaml');
const kustomizations = new Map(kustomizationFiles.map((file) => [file, parse(read(file)) as Kustomization]));
const manifests: Manifest[] = files
  .filter((file) => !kustomizationFiles.includes(file))
  .flatMap((file) =>
    parseAllDocuments(read(file)).map((document, index) => {
      if (document.errors.length > 0) throw new Error(`${file}: ${document.errors[0]!.message}`);
      return { file, index, object: document.toJS() as KubeObject };
    }),
  );
const SECRET_EXAMPLE = `${DIR}/secret.example.yaml`;

const objectsOf = (kind: string) =>
  manifests.map(({ object }) => object).filter((object) => object.kind === kind);
const one = (kind: string, name: string): KubeObject => {
  const found = objectsOf(kind).filter((object) => object.metadata.name === name);
  expect(found, `${kind} ${name}`).toHaveLength(1);
  return found[0]!;
};
const api = one('Deployment', 'slotfleet-api');
const worker = one('Deployment', 'slotfleet-worker');
const podOf = (deployment: KubeObject): PodTemplate => deployment.spec!.template!;
const containerOf = (deployment: KubeObject): Container => {
  const containers = podOf(deployment).spec.containers;
  expect(containers).toHaveLength(1);
  return containers[0]!;
};
const secretExample = one('Secret', 'slotfleet');

/** A token loadConfig accepts, in place of the example's placeholder. */
const STAND_IN_TOKEN = 'kubernetes-manifests-test-token-0123456789';

/** The environment a container would start with: its ConfigMaps, its literal values, the example Secret's keys. */
function environmentOf(container: Container): Record<string, string> {
  const environment: Record<string, string> = {};
  for (const source of container.envFrom ?? []) {
    expect(
      source.secretRef,
      'secrets by key (secretKeyRef), so each process gets only its own',
    ).toBeUndefined();
    Object.assign(environment, one('ConfigMap', source.configMapRef!.name).data);
  }
  for (const variable of container.env ?? []) {
    const secretKey = variable.valueFrom?.secretKeyRef;
    if (secretKey) {
      expect(secretKey.name).toBe(secretExample.metadata.name);
      const value = secretExample.stringData?.[secretKey.key];
      if (value === undefined) {
        expect(secretKey.optional, `${variable.name}: not in the example Secret, so optional`).toBe(true);
        continue;
      }
      environment[variable.name] = variable.name === 'SLOTFLEET_API_TOKEN' ? STAND_IN_TOKEN : value;
    } else environment[variable.name] = variable.value ?? '';
  }
  return environment;
}

const configOf = (deployment: KubeObject): Config => loadConfig(environmentOf(containerOf(deployment)));

function selects(selector: Labels, labels: Labels): boolean {
  return Object.entries(selector).every(([name, value]) => labels[name] === value);
}

function matchLabels(object: KubeObject): Labels {
  const selector = object.spec!.selector as { matchLabels?: Labels };
  return selector.matchLabels ?? {};
}

function portNumber(container: Container, port: number | string | undefined): number | undefined {
  return typeof port === 'number'
    ? port
    : container.ports?.find((entry) => entry.name === port)?.containerPort;
}

/**
 * The TypeScript compiler's errors for each manifest typed as its kind's interface (IDeployment...):
 * an object literal with a field its type does not declare is an error at any depth.
 */
function typeErrors(documents: { label: string; kind: string; object: unknown }[]): Map<string, string[]> {
  const fileName = join(ROOT, 'test/unit/kubernetes-manifests.typed.ts');
  const lines: string[] = [];
  const starts: { line: number; label: string }[] = [];
  const kinds = [...new Set(documents.map(({ kind }) => kind))];
  for (const [index, kind] of kinds.entries()) {
    lines.push(`import type { I${kind.split(' ')[1]} as T${index} } from '${KINDS[kind]!.module}';`);
  }
  for (const [index, { label, kind, object }] of documents.entries()) {
    starts.push({ line: lines.length, label });
    const typed = `export const document${index}: T${kinds.indexOf(kind)} = ${JSON.stringify(object, null, 2)};`;
    lines.push(...typed.split('\n'));
  }
  const source = lines.join('\n');
  const options: ts.CompilerOptions = {
    target: ts.ScriptTarget.ES2023,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    strict: true,
    noEmit: true,
    skipLibCheck: true,
    types: [],
  };
  const host = ts.createCompilerHost(options);
  const { getSourceFile, fileExists, readFile } = host;
  host.getSourceFile = (name, languageVersion, ...rest) =>
    name === fileName
      ? ts.createSourceFile(name, source, languageVersion)
      : getSourceFile.call(host, name, languageVersion, ...rest);
  host.fileExists = (name) => name === fileName || fileExists.call(host, name);
  host.readFile = (name) => (name === fileName ? source : readFile.call(host, name));
  const program = ts.createProgram([fileName], options, host);
  const errors = new Map<string, string[]>();
  for (const diagnostic of ts.getPreEmitDiagnostics(program)) {
    const message = ts.flattenDiagnosticMessageText(diagnostic.messageText, '\n');
    if (diagnostic.file?.fileName !== fileName || diagnostic.start === undefined) {
      errors.set('(program)', [...(errors.get('(program)') ?? []), message]);
      continue;
    }
    const line = diagnostic.file.getLineAndCharacterOfPosition(diagnostic.start).line;
    const label = starts.findLast((start) => start.line <= line)?.label ?? '(imports)';
    errors.set(label, [...(errors.get(label) ?? []), `${lines[line]!.trim()}: ${message}`]);
  }
  return errors;
}

describe('deploy/kubernetes: the Kubernetes schemas', () => {
  it('holds only kinds it can check, each valid against its schema', () => {
    expect(manifests.length).toBeGreaterThanOrEqual(7);
    const problems: string[] = [];
    for (const { file, index, object } of manifests) {
      const kind = KINDS[`${object.apiVersion} ${object.kind}`];
      if (!kind) {
        problems.push(
          `${file} #${index}: ${object.apiVersion} ${object.kind} has no schema here (add it to KINDS)`,
        );
        continue;
      }
      try {
        new kind.model(object as never).validate();
      } catch (error) {
        problems.push(
          `${file} #${index} (${object.kind} ${object.metadata?.name}): ${(error as Error).message}`,
        );
      }
    }
    expect(problems).toEqual([]);
    // The schema check is live: a wrong type is refused.
    const wrong = structuredClone(worker);
    (wrong.spec as Record<string, unknown>).replicas = 'two';
    expect(() => new Deployment(wrong as never).validate()).toThrow(/replicas/);
  });

  it('names no field the API does not have, at any depth (and the check catches a misspelt one)', () => {
    const canary = structuredClone(worker);
    const container = canary.spec!.template!.spec.containers[0]! as Container & Record<string, unknown>;
    container.readinessprobe = container.readinessProbe;
    delete container.readinessProbe;
    const documents = [
      ...manifests.map(({ file, index, object }) => ({
        label: `${file} #${index}`,
        kind: `${object.apiVersion} ${object.kind}`,
        object,
      })),
      { label: 'canary', kind: 'apps/v1 Deployment', object: canary },
    ];
    const errors = typeErrors(documents);
    expect(errors.get('canary')?.join('\n')).toMatch(/readinessprobe.*does not exist in type 'IContainer'/);
    errors.delete('canary');
    expect(Object.fromEntries(errors)).toEqual({});
  }, 60_000);

  it('is a base kustomization and an overlay with the PodMonitor beside it, every file in one but the Secret example', () => {
    const listed = new Set<string>();
    for (const [file, kustomization] of kustomizations) {
      expect(kustomization).toMatchObject({
        apiVersion: 'kustomize.config.k8s.io/v1beta1',
        kind: 'Kustomization',
        namespace: secretExample.metadata.namespace,
      });
      for (const resource of kustomization.resources ?? []) {
        const path = posix.normalize(posix.join(posix.dirname(file), resource));
        if (files.includes(path)) {
          listed.add(path);
          continue;
        }
        expect(kustomizations.has(`${path}/kustomization.yaml`), `${file}: ${resource}`).toBe(true);
        // kustomize refuses a base whose directory holds the overlay ("cycle detected").
        expect(posix.relative(path, posix.dirname(file)).startsWith('..'), `${file}: ${resource}`).toBe(true);
      }
    }
    const unlisted = files.filter((file) => !kustomizationFiles.includes(file) && !listed.has(file));
    expect(unlisted).toEqual([SECRET_EXAMPLE]);
    expect(manifests.filter(({ object }) => object.kind === 'PodMonitor').map(({ file }) => file)).toEqual([
      `${DIR}/prometheus-operator/podmonitor.yaml`,
    ]);
    expect(read(`${DIR}/.gitignore`).split('\n')).toContain('secret.yaml');
  });
});

describe('deploy/kubernetes: the code it runs', () => {
  it('runs the Dockerfile image as `slotfleet api` and `slotfleet worker`', () => {
    const images = kustomizations.get(`${DIR}/base/kustomization.yaml`)!.images ?? [];
    expect(images.map((image) => image.name)).toEqual(['slotfleet']);
    const dockerfile = read('Dockerfile');
    expect(dockerfile).toMatch(/^ENTRYPOINT \["node", "dist\/cli\/main\.js"\]$/m);
    for (const [deployment, command] of [
      [api, 'api'],
      [worker, 'worker'],
    ] as const) {
      const container = containerOf(deployment);
      expect(container.image).toBe(images[0]!.name);
      expect(container.command, 'the image ENTRYPOINT runs the CLI').toBeUndefined();
      expect(container.args).toEqual([command]);
      expect(read('src/cli/main.ts')).toMatch(new RegExp(`^ {2}${command}: async`, 'm'));
    }
  });

  it('passes only variables config.ts reads, with values loadConfig accepts; the example token is refused', () => {
    const named = new Set<string>(Object.keys(secretExample.stringData ?? {}));
    for (const configMap of objectsOf('ConfigMap'))
      for (const name of Object.keys(configMap.data ?? {})) named.add(name);
    for (const deployment of [api, worker])
      for (const variable of containerOf(deployment).env ?? []) named.add(variable.name);
    expect([...named].filter((name) => !(name in ENVIRONMENT))).toEqual([]);
    expect(() => configOf(api)).not.toThrow();
    expect(() => configOf(worker)).not.toThrow();
    // Unedited, the example cannot run an API.
    expect(() => loadConfig({ SLOTFLEET_API_TOKEN: secretExample.stringData!.SLOTFLEET_API_TOKEN })).toThrow(
      /^SLOTFLEET_API_TOKEN: /,
    );
    for (const key of ['SLOTFLEET_API_TOKEN', 'SLOTFLEET_CLUSTER_URL', 'SLOTFLEET_CONTROL_URL']) {
      expect(Object.keys(secretExample.stringData ?? {})).toContain(key);
    }
    // The worker gets no API token: it has no use for it.
    expect(containerOf(worker).env?.map((variable) => variable.name)).not.toContain('SLOTFLEET_API_TOKEN');
  });

  it('exposes the ports the processes listen on, on every address, the API with a token', () => {
    const apiConfig = configOf(api);
    expect(apiConfig.api.host).toBe('0.0.0.0');
    // Without a token the API falls back to loopback, out of the kubelet's and the Service's reach.
    expect(apiConfig.api.token).toBeDefined();
    expect(portNumber(containerOf(api), 'http')).toBe(apiConfig.api.port);
    const workerConfig = configOf(worker);
    expect(workerConfig.worker.metricsHost).toBe('0.0.0.0');
    expect(portNumber(containerOf(worker), 'metrics')).toBe(workerConfig.worker.metricsPort);
    for (const [deployment, port] of [
      [api, apiConfig.api.port],
      [worker, workerConfig.worker.metricsPort],
    ] as const) {
      expect(podOf(deployment).metadata.annotations).toMatchObject({
        'prometheus.io/scrape': 'true',
        'prometheus.io/port': String(port),
        'prometheus.io/path': '/metrics',
      });
    }
    const service = one('Service', 'slotfleet-api');
    expect(service.spec!.ports!.map((entry) => portNumber(containerOf(api), entry.targetPort))).toEqual([
      apiConfig.api.port,
    ]);
  });

  it("probes the worker's /healthz and /readyz on its metrics port", () => {
    const container = containerOf(worker);
    const served: string[] = Object.values(WorkerRoute);
    expect(container.startupProbe?.httpGet?.path).toBe(WorkerRoute.Health);
    expect(container.livenessProbe?.httpGet?.path).toBe(WorkerRoute.Health);
    expect(container.readinessProbe?.httpGet?.path).toBe(WorkerRoute.Ready);
    for (const probe of [container.startupProbe, container.livenessProbe, container.readinessProbe]) {
      expect(served).toContain(probe?.httpGet?.path);
      expect(portNumber(container, probe?.httpGet?.port)).toBe(configOf(worker).worker.metricsPort);
    }
  });

  it("probes the API's /healthz and /readyz on its port, which answer without the token", async () => {
    const container = containerOf(api);
    expect(container.startupProbe?.httpGet?.path).toBe('/healthz');
    expect(container.livenessProbe?.httpGet?.path).toBe('/healthz');
    expect(container.readinessProbe?.httpGet?.path).toBe('/readyz');
    const config = configOf(api);
    const { buildApp } = await import('../../src/producer/app.js');
    // Nothing but the readiness check's PING is used: no cluster adapter, a control Redis that answers.
    const deps = {
      config,
      log: createLogger({ level: 'silent', name: 'kubernetes-manifests-test' }),
      queues: [],
      adapterFor: () => undefined,
      pingControl: async () => undefined,
    } as unknown as AppDeps;
    const app = buildApp(deps);
    try {
      for (const probe of [container.startupProbe, container.livenessProbe, container.readinessProbe]) {
        expect(portNumber(container, probe?.httpGet?.port)).toBe(config.api.port);
        const response = await app.inject({ method: 'GET', url: probe!.httpGet!.path! });
        expect(response.statusCode, `${probe!.httpGet!.path}: ${response.body}`).toBe(200);
      }
      expect((await app.inject({ method: 'GET', url: '/v1/migrations' })).statusCode).toBe(401);
    } finally {
      await app.close();
    }
  });

  it('gives each pod longer to stop than the process gives itself (SLOTFLEET_SHUTDOWN_TIMEOUT_MS)', () => {
    for (const deployment of [api, worker]) {
      const grace = podOf(deployment).spec.terminationGracePeriodSeconds;
      expect(grace, deployment.metadata.name).toBeDefined();
      expect(grace! * 1000, deployment.metadata.name).toBeGreaterThan(configOf(deployment).shutdownTimeoutMs);
    }
  });

  it('runs as the image user, not root, on a read-only root filesystem, with bounded memory', () => {
    // The node image's user `node` is uid 1000; runAsNonRoot needs it as a number to check it.
    expect(read('Dockerfile')).toMatch(/^USER node$/m);
    for (const deployment of [api, worker]) {
      const pod = podOf(deployment);
      expect(pod.spec.securityContext).toMatchObject({ runAsNonRoot: true, runAsUser: 1000 });
      expect(pod.spec.automountServiceAccountToken).toBe(false);
      const container = containerOf(deployment);
      expect(container.securityContext).toEqual({
        allowPrivilegeEscalation: false,
        readOnlyRootFilesystem: true,
        capabilities: { drop: ['ALL'] },
      });
      expect(Object.keys(container.resources?.requests ?? {}).sort()).toEqual(['cpu', 'memory']);
      expect(container.resources?.limits?.memory).toBeDefined();
    }
  });

  it('selects what it means to: each Deployment its pods, the Service the API, the budget the workers', () => {
    for (const deployment of [api, worker]) {
      expect(selects(matchLabels(deployment), podOf(deployment).metadata.labels)).toBe(true);
    }
    const service = one('Service', 'slotfleet-api');
    const serviceSelector = service.spec!.selector as Labels;
    expect(selects(serviceSelector, podOf(api).metadata.labels)).toBe(true);
    expect(selects(serviceSelector, podOf(worker).metadata.labels)).toBe(false);
    const budget = one('PodDisruptionBudget', 'slotfleet-worker');
    expect(selects(matchLabels(budget), podOf(worker).metadata.labels)).toBe(true);
    expect(selects(matchLabels(budget), podOf(api).metadata.labels)).toBe(false);
  });

  it('lets the PodMonitor scrape the API and every worker under the job names of prometheus.yml', () => {
    const monitor = one('PodMonitor', 'slotfleet');
    const pods = [api, worker].filter((deployment) =>
      selects(matchLabels(monitor), podOf(deployment).metadata.labels),
    );
    expect(pods).toHaveLength(2);
    const jobs = monitor.spec!.podMetricsEndpoints!.map((endpoint) => {
      // Each endpoint's port is a port of exactly one of the two pods: the API's or the workers'.
      const owners = pods.filter(
        (deployment) => portNumber(containerOf(deployment), endpoint.port) !== undefined,
      );
      expect(owners, endpoint.port).toHaveLength(1);
      expect(endpoint.path).toBe('/metrics');
      const job = endpoint.relabelings?.find((relabeling) => relabeling.targetLabel === 'job')?.replacement;
      return `${owners[0]!.metadata.name} ${job}`;
    });
    expect(jobs.sort()).toEqual(['slotfleet-api slotfleet-api', 'slotfleet-worker slotfleet-worker']);
    const prometheus = parse(read('prometheus/prometheus.yml')) as { scrape_configs: { job_name: string }[] };
    expect(prometheus.scrape_configs.map((job) => job.job_name).sort()).toEqual([
      'slotfleet-api',
      'slotfleet-worker',
    ]);
  });
});
