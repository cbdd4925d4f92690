/**
 * Prints plain lines at the end of a run, so CI logs carry counts any reader (human or script) can
 * find without knowing vitest's format: which server each file of the server matrix ran on with its
 * result and time, a count per server, and last "tests: N passed, N failed, N skipped".
 */
import type { Reporter, TestModule, TestProject } from 'vitest/node';
import { serverLabel } from './integration/support/servers.js';

interface Counts {
  passed: number;
  failed: number;
  skipped: number;
}

export default class SummaryReporter implements Reporter {
  onTestRunEnd(testModules: ReadonlyArray<TestModule>, unhandledErrors: ReadonlyArray<unknown>): void {
    const total: Counts = { passed: 0, failed: unhandledErrors.length, skipped: 0 };
    const byServer = new Map<string, Counts>();
    const runsByFile = new Map<string, string[]>();
    for (const module of testModules) {
      const server = serverOf(module.project);
      const counts = byServer.get(server) ?? { passed: 0, failed: 0, skipped: 0 };
      byServer.set(server, counts);
      for (const test of module.children.allTests()) {
        const state = test.result().state;
        const key = state === 'passed' ? 'passed' : state === 'failed' ? 'failed' : 'skipped';
        counts[key]++;
        total[key]++;
      }
      if (module.state() === 'failed' && [...module.children.allTests()].length === 0) {
        counts.failed++;
        total.failed++;
      }
      const seconds = (module.diagnostic().duration / 1000).toFixed(1);
      const runs = runsByFile.get(module.relativeModuleId) ?? [];
      runs.push(`${server} ${module.state()} ${seconds} s`);
      runsByFile.set(module.relativeModuleId, runs);
    }
    const lines: string[] = [];
    const matrix = [...runsByFile]
      .filter(([, runs]) => runs.length > 1)
      .sort(([a], [b]) => a.localeCompare(b));
    if (matrix.length > 0) {
      lines.push('server matrix:');
      for (const [file, runs] of matrix) lines.push(`  ${file}: ${runs.sort().join(' | ')}`);
    }
    if (byServer.size > 1) {
      for (const [server, counts] of [...byServer].sort(([a], [b]) => a.localeCompare(b)))
        lines.push(`tests on ${server}: ${countsText(counts)}`);
    }
    lines.push(`tests: ${countsText(total)}`);
    process.stdout.write(`\n${lines.join('\n')}\n`);
  }
}

/** `valkey 8.0.1 (valkey8)`, from what the project and the global setup provided. */
function serverOf(project: TestProject): string {
  const context = project.getProvidedContext();
  const name = context.sandboxServer;
  if (name === undefined) return project.name;
  return serverLabel(name, context.sandboxServers?.[name]);
}

function countsText({ passed, failed, skipped }: Counts): string {
  return `${passed} passed, ${failed} failed, ${skipped} skipped`;
}
