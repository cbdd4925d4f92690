/**
 * package.json cannot say why a version is pinned or overridden, so docs/dependencies.md does: every
 * override has a row there with the same version and a reason, and every version is exact, as the
 * page says.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';

const DOC = 'docs/dependencies.md';

interface PackageJson {
  readonly '//'?: string;
  readonly dependencies: Record<string, string>;
  readonly devDependencies: Record<string, string>;
  readonly overrides?: Record<string, string>;
}

const manifest = JSON.parse(readFileSync('package.json', 'utf8')) as PackageJson;
const doc = readFileSync(DOC, 'utf8');

/** The rows of the overrides table: | `name` | version | pulled in by | why |. */
function overrideRows(text: string): Map<string, { version: string; why: string }> {
  const rows = new Map<string, { version: string; why: string }>();
  for (const line of text.split('\n')) {
    const cells = /^\| `([^`]+)` \|(.*)\|$/.exec(line.trim());
    if (!cells) continue;
    const [version = '', , why = ''] = cells[2]!.split('|').map((cell) => cell.trim());
    rows.set(cells[1]!, { version, why });
  }
  return rows;
}

describe('pinned versions and overrides', () => {
  const rows = overrideRows(doc);

  it('package.json points to the page that explains them', () => {
    expect(manifest['//']).toContain(DOC);
  });

  it.each(Object.entries(manifest.overrides ?? {}))(
    'the override of %s (%s) is explained',
    (name, version) => {
      expect(rows.get(name), `${DOC} has no row for the override of ${name}`).toBeDefined();
      expect(rows.get(name)!.version).toBe(version);
      expect(rows.get(name)!.why.length, `the row of ${name} gives no reason`).toBeGreaterThan(20);
    },
  );

  it('explains no override that package.json does not have', () => {
    expect([...rows.keys()].sort()).toEqual(Object.keys(manifest.overrides ?? {}).sort());
  });

  it('pins every dependency to one exact version', () => {
    const ranges = Object.entries({ ...manifest.dependencies, ...manifest.devDependencies }).filter(
      ([, version]) => !/^\d+\.\d+\.\d+(-[\w.]+)?$/.test(version),
    );
    expect(ranges).toEqual([]);
  });
});
