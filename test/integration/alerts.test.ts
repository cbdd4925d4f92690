/**
 * prometheus/alerts.yml, with the real promtool: the rules parse, and prometheus/alerts.test.yml's
 * cases (input series, the alerts expected at given times) pass. Each alert must have a case where it
 * fires and one where it stays quiet, name only metrics, labels and label values the code exports and
 * only the jobs prometheus.yml scrapes, and point at its own entry in docs/operations.md#alerts.
 * A missing promtool fails the file, naming the package to install.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { type PrometheusBinaries, promtool, requirePrometheusBinaries } from '../../src/sandbox/index.js';
import { MigrationState } from '../../src/shared/domain/migration.js';
import { createMetrics, SlotResult } from '../../src/shared/metrics.js';
import { LeaseRole } from '../../src/shared/queue/node-leases.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const read = (path: string) => readFileSync(join(ROOT, path), 'utf8');

interface AlertRule {
  alert: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

interface RuleTest {
  alert_rule_test?: { eval_time: string; alertname: string; exp_alerts?: unknown[] }[];
}

const rules = (parse(read('prometheus/alerts.yml')) as { groups: { rules: AlertRule[] }[] }).groups.flatMap(
  (group) => group.rules,
);
const ruleTests = parse(read('prometheus/alerts.test.yml')) as { rule_files: string[]; tests: RuleTest[] };
const prometheusConfig = parse(read('prometheus/prometheus.yml')) as {
  rule_files?: string[];
  scrape_configs: { job_name: string }[];
};

/** Label names of every metric the processes export: slotfleet's, and the one Prometheus adds. */
function exportedLabels(): Map<string, string[]> {
  const labels = new Map<string, string[]>([['up', []]]);
  for (const metric of createMetrics({ defaultMetrics: false }).registry.getMetricsAsArray()) {
    // prom-client keeps a metric's configured label names on the instance.
    const { labelNames } = metric as unknown as { labelNames: readonly string[] };
    labels.set(metric.name, [...labelNames]);
  }
  return labels;
}

/** The values a label may take in a rule, from the code that sets it. */
const LABEL_VALUES: Record<string, readonly string[]> = {
  result: Object.values(SlotResult),
  state: Object.values(MigrationState),
  role: Object.values(LeaseRole),
};

/** Every `name{matchers}` selector of a PromQL expression, with its matchers. */
function selectors(expr: string): { metric: string; matchers: { label: string; value: string }[] }[] {
  return [...expr.matchAll(/\b([a-zA-Z_:][\w:]*)\{([^}]*)\}/g)].map((match) => ({
    metric: match[1]!,
    matchers: [...match[2]!.matchAll(/(\w+)\s*(?:=~|!~|!=|=)\s*"([^"]*)"/g)].map((matcher) => ({
      label: matcher[1]!,
      value: matcher[2]!,
    })),
  }));
}

/** GitHub's anchor of a Markdown heading. */
function anchor(heading: string): string {
  return heading
    .toLowerCase()
    .replace(/[^\w\- ]/g, '')
    .replace(/ /g, '-');
}

describe('prometheus/alerts.yml', () => {
  let binaries: PrometheusBinaries;

  beforeAll(async () => {
    binaries = await requirePrometheusBinaries();
  });

  it('passes promtool check rules', async () => {
    const result = await promtool(['check', 'rules', join(ROOT, 'prometheus/alerts.yml')], '', binaries);
    expect({ code: result.code, output: result.stdout + result.stderr }).toMatchObject({ code: 0 });
    expect(result.stdout).toContain(`SUCCESS: ${rules.length} rules found`);
  });

  it('passes promtool test rules with prometheus/alerts.test.yml', async () => {
    const result = await promtool(['test', 'rules', join(ROOT, 'prometheus/alerts.test.yml')], '', binaries);
    expect({ code: result.code, output: result.stdout + result.stderr }).toMatchObject({ code: 0 });
    expect(result.stdout).toMatch(/SUCCESS/);
  });

  it('has, for every alert, a test case where it fires and one where it stays quiet', () => {
    expect(ruleTests.rule_files).toEqual(['alerts.yml']);
    const cases = ruleTests.tests.flatMap((test) => test.alert_rule_test ?? []);
    const missing: string[] = [];
    for (const { alert } of rules) {
      const own = cases.filter((entry) => entry.alertname === alert);
      if (!own.some((entry) => (entry.exp_alerts ?? []).length > 0)) missing.push(`${alert}: no firing case`);
      if (!own.some((entry) => (entry.exp_alerts ?? []).length === 0))
        missing.push(`${alert}: no quiet case`);
    }
    expect(missing).toEqual([]);
    const tested = new Set(cases.map((entry) => entry.alertname));
    expect([...tested].filter((name) => !rules.some((rule) => rule.alert === name))).toEqual([]);
  });

  it('uses only metrics, labels and label values the code exports, and the jobs prometheus.yml scrapes', () => {
    const labels = exportedLabels();
    const jobs = prometheusConfig.scrape_configs.map((scrape) => scrape.job_name);
    const problems: string[] = [];
    for (const rule of rules) {
      const found = selectors(rule.expr);
      if (found.length === 0) problems.push(`${rule.alert}: no selector`);
      for (const { metric, matchers } of found) {
        const known = labels.get(metric);
        if (!known) {
          problems.push(`${rule.alert}: ${metric} is not defined in src/shared/metrics.ts`);
          continue;
        }
        for (const { label, value } of matchers) {
          if (label === 'job') {
            for (const job of value.split('|')) {
              if (!jobs.includes(job)) problems.push(`${rule.alert}: job ${job} is not in prometheus.yml`);
            }
          } else if (label !== 'instance' && !known.includes(label)) {
            problems.push(`${rule.alert}: ${metric} has no label ${label}`);
          } else if (LABEL_VALUES[label] && !LABEL_VALUES[label].includes(value)) {
            problems.push(`${rule.alert}: ${label}="${value}" is never exported`);
          }
        }
      }
      // by (...) and on (...) group on labels some metric of the expression has.
      const available = new Set([
        'job',
        'instance',
        ...found.flatMap(({ metric }) => labels.get(metric) ?? []),
      ]);
      for (const grouping of rule.expr.matchAll(/\b(?:by|on)\s*\(([^)]*)\)/g)) {
        for (const label of grouping[1]!.split(',').map((name) => name.trim())) {
          if (!available.has(label)) problems.push(`${rule.alert}: groups on ${label}, which no metric has`);
        }
      }
      const slotfleetNames = rule.expr.match(/\bslotfleet_\w+/g) ?? [];
      for (const name of slotfleetNames) {
        if (!labels.has(name))
          problems.push(`${rule.alert}: ${name} is not defined in src/shared/metrics.ts`);
      }
    }
    expect(problems).toEqual([]);
  });

  it('gives every alert a severity, a for duration, a summary, a description and its runbook entry', () => {
    const headings = new Set(
      [...read('docs/operations.md').matchAll(/^#{2,4} (.+)$/gm)].map((match) => anchor(match[1]!)),
    );
    expect(headings).toContain('alerts');
    const problems: string[] = [];
    for (const rule of rules) {
      if (!/^Slotfleet[A-Z]\w+$/.test(rule.alert)) problems.push(`${rule.alert}: name`);
      if (!['warning', 'critical'].includes(rule.labels?.severity ?? ''))
        problems.push(`${rule.alert}: severity`);
      if (!/^\d+[smh]$/.test(rule.for ?? '')) problems.push(`${rule.alert}: for`);
      if (!rule.annotations?.summary || !rule.annotations.description) problems.push(`${rule.alert}: text`);
      const runbook = rule.annotations?.runbook ?? '';
      if (runbook !== `docs/operations.md#${rule.alert.toLowerCase()}`)
        problems.push(`${rule.alert}: runbook ${runbook}`);
      else if (!headings.has(rule.alert.toLowerCase()))
        problems.push(`${rule.alert}: no heading ${rule.alert} in docs/operations.md`);
    }
    expect(problems).toEqual([]);
  });

  it('is loaded by prometheus.yml, and docker-compose.yml mounts it beside the config', () => {
    expect(prometheusConfig.rule_files).toEqual(['alerts.yml']);
    const compose = parse(read('docker-compose.yml'), { merge: true }) as {
      services: { prometheus: { volumes: string[] } };
    };
    const mounts = new Map(
      compose.services.prometheus.volumes.map((volume) => volume.split(':') as [string, string]),
    );
    const configDirectory = mounts.get('./prometheus/prometheus.yml')!.replace(/\/[^/]+$/, '');
    for (const file of prometheusConfig.rule_files ?? []) {
      expect(mounts.get(`./prometheus/${file}`), file).toBe(`${configDirectory}/${file}`);
    }
  });
});
