import { defineConfig } from 'vitest/config';
import { BaseSequencer, type TestSpecification } from 'vitest/node';

/**
 * The files that take longest, longest first (measured alone on a quiet 2-core machine). Started
 * first, they overlap everything else; started last, as vitest's own order by file size would start
 * bench-smoke and demo, they run alone at the end. (vitest orders by the durations it cached on an
 * earlier run, but CI starts from a fresh `npm ci`, without that cache.)
 */
const SLOWEST_FIRST = [
  'test/integration/control-outage.test.ts',
  'test/integration/bench-smoke.test.ts',
  'test/integration/crash-recovery.test.ts',
  'test/integration/plans.test.ts',
  'test/integration/secrets.test.ts',
  'test/integration/client-traffic.test.ts',
  'test/integration/prometheus.test.ts',
  'test/integration/protected-clusters.test.ts',
  'test/integration/status-page.test.ts',
  'test/integration/demo.test.ts',
  'test/integration/node-caps.test.ts',
  'test/integration/api-fuzz.test.ts',
  'test/integration/throttle.test.ts',
  'test/integration/cli.test.ts',
];

class SlowestFirstSequencer extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const rank = (file: TestSpecification) => {
      const index = SLOWEST_FIRST.findIndex((path) => file.moduleId.endsWith(path));
      return index === -1 ? SLOWEST_FIRST.length : index;
    };
    const rest = await super.sort(files);
    return rest
      .map((file, order) => ({ file, order }))
      .sort((a, b) => rank(a.file) - rank(b.file) || a.order - b.order)
      .map(({ file }) => file);
  }
}

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['./test/global-setup.ts'],
    // Integration files each start their own servers; two at a time fit a 2-core machine.
    maxWorkers: 2,
    testTimeout: 60_000,
    hookTimeout: 120_000,
    sequence: { sequencer: SlowestFirstSequencer },
    reporters: ['default', './test/summary-reporter.ts'],
  },
});
