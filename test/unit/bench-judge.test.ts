/**
 * The bench's judging of the wide case (12 -> 16 masters) on a recorded run: the smoke test
 * (test/integration/bench-smoke) runs the bench end to end on the small cases, and this file shows
 * that what the wide case's runs add up to (figures per tool, per master and per role, the frontier,
 * the targets with their ratio of 3) is what the bench wrote for them. The fixture is a real
 * `--cases wide --runs 1 --scale 0.01 --tools slotfleet,redis-cli-p1000` report, trimmed to that case.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { expectedKeysMoved, migrationCases } from '../../src/bench/cases.js';
import { type CaseSummary, type NodeRole, type RunResult, summarizeCase } from '../../src/bench/judge.js';
import { selectTools } from '../../src/bench/tools.js';

const recorded = JSON.parse(
  readFileSync(new URL('./fixtures/bench-wide-scale-0.01.json', import.meta.url), 'utf8'),
) as { settings: { scale: number; tools: string[] }; cases: { wide: CaseSummary } };

const wide = migrationCases(recorded.settings.scale).find((spec) => spec.name === 'wide')!;
const tools = selectTools(recorded.settings.tools, { budgetsMs: [], warmupSlots: 0, workerEnv: {} });

/** The runs the report was summed from: its per-run figures (one run per tool), back as RunResults. */
function recordedRuns(summary: CaseSummary): RunResult[] {
  return Object.entries(summary.tools).flatMap(([tool, figures]) =>
    figures.seconds.all.map((seconds, run) => {
      const byPort = figures.clientLatencyMs.byPortPerRun[run]! as Record<
        string,
        { role: NodeRole; p99Ms: number; maxMs: number }
      >;
      const cpuSeconds = figures.cpuSecondsPerRun[run]!;
      return {
        tool,
        seconds,
        keysMoved: figures.keysMoved,
        slotsMoved: figures.slotsMoved,
        verified: true,
        cpuSeconds,
        clientLatency: {
          maxMs: figures.clientLatencyMs.maxPerRun[run]!,
          p99Ms: figures.clientLatencyMs.p99PerRun[run]!,
          samples: 0,
          byPort: Object.fromEntries(
            Object.entries(byPort).map(([port, { p99Ms, maxMs }]) => [port, { p99Ms, maxMs }]),
          ),
          probeCpuSeconds: cpuSeconds.probe ?? 0,
        },
        roles: Object.fromEntries(Object.entries(byPort).map(([port, { role }]) => [port, role])),
        ...('workerPeakRssMb' in figures ? { workerPeakRssMb: figures.workerPeakRssMb } : {}),
      };
    }),
  );
}

describe('the bench judging the wide case', () => {
  const runs = recordedRuns(recorded.cases.wide);

  it('sums a recorded run up as the bench wrote it: figures, 12 sources and 4 targets, frontier, targets', () => {
    const summary = summarizeCase(wide, tools, runs);
    expect(summary).toEqual(recorded.cases.wide);
    expect(summary).toMatchObject({ keys: 4000, masters: 12, addedMasters: 4 });
    for (const tool of recorded.settings.tools) {
      const roles = Object.values(summary.tools[tool]!.clientLatencyMs.byPortPerRun[0]!).map(
        (node) => node.role,
      );
      expect(roles.filter((role) => role === 'source')).toHaveLength(12);
      expect(roles.filter((role) => role === 'target')).toHaveLength(4);
      // The move the runs made is the one the case asks for: the 4 new masters' share of the keys.
      const expected = expectedKeysMoved(wide);
      expect(Math.abs(summary.tools[tool]!.keysMoved - expected.keys)).toBeLessThanOrEqual(
        expected.tolerance,
      );
    }
    expect(summary.frontier.map((row) => row.tool)).toEqual(['slotfleet', 'redis-cli-p1000']);
    expect(summary.targets[0]).toEqual({
      target: 'redis-cli-p1000 / slotfleet >= 3',
      value: summary.frontier[0]!.ratio,
      met: false,
    });
  });

  it('meets the ratio target at 3 times redis-cli-p1000 and not below', () => {
    const reference = runs.find((run) => run.tool === 'redis-cli-p1000')!.seconds;
    const at = (seconds: number) =>
      summarizeCase(
        wide,
        tools,
        runs.map((run) => (run.tool === 'slotfleet' ? { ...run, seconds } : run)),
      ).targets[0]!;
    expect(at(reference / 3)).toMatchObject({ value: 3, met: true });
    expect(at(reference / 2.9)).toMatchObject({ value: 2.9, met: false });
  });

  it('leaves a target not measured without its yardstick, and fails it for a tool with no verified run', () => {
    const alone = summarizeCase(
      wide,
      selectTools(['slotfleet'], { budgetsMs: [], warmupSlots: 0, workerEnv: {} }),
      [runs.find((run) => run.tool === 'slotfleet')!],
    );
    expect(alone.targets.slice(0, 2).map((target) => target.met)).toEqual([null, null]);
    const failed = summarizeCase(
      wide,
      tools,
      runs.map((run) =>
        run.tool === 'slotfleet' ? { ...run, verified: false, error: 'moved 0 keys' } : run,
      ),
    );
    expect(failed.targets.map((target) => target.met)).toEqual([false, false, false, false]);
    expect(failed.tools.slotfleet).toMatchObject({ failures: 1, errors: ['moved 0 keys'] });
  });
});
