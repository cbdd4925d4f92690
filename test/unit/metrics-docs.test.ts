/**
 * docs/metrics.md lists every metric src/shared/metrics.ts defines, and no other: the operator's
 * reference cannot drift from what the processes export.
 */
import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { createMetrics } from '../../src/shared/metrics.js';

describe('docs/metrics.md', () => {
  it('lists exactly the metrics the code defines', async () => {
    const defined = createMetrics({ defaultMetrics: false })
      .registry.getMetricsAsArray()
      .map((metric) => metric.name)
      .sort();
    const doc = await readFile('docs/metrics.md', 'utf8');
    // The table's first column: | `slotfleet_...` |
    const listed = [...doc.matchAll(/^\| `(slotfleet_\w+)` \|/gm)].map((match) => match[1]!).sort();
    expect(
      listed.filter((name) => !defined.includes(name)),
      'listed but not defined',
    ).toEqual([]);
    expect(
      defined.filter((name) => !listed.includes(name)),
      'defined but not listed',
    ).toEqual([]);
  });
});
