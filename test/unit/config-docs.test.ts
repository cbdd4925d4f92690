/**
 * docs/configuration.md's table against src/shared/config.ts, so the two cannot drift: the table
 * lists exactly the variables of ENVIRONMENT (and config.ts reads no other), and each default it
 * states is the DEFAULTS entry config.ts falls back to for that variable, and what loadConfig does
 * when the variable is unset. Checked rather than generated: the doc stays prose a person edits.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { DEFAULTS, ENVIRONMENT, loadConfig } from '../../src/shared/config.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const DOC = 'docs/configuration.md';
const doc = readFileSync(join(ROOT, DOC), 'utf8');
const source = readFileSync(join(ROOT, 'src/shared/config.ts'), 'utf8');

interface DocumentedVariable {
  /** The default as the table writes it (between backticks), or undefined for `(none)`. */
  readonly defaultValue: string | undefined;
  readonly meaning: string;
}

/** The rows of the table whose first cell is a `SLOTFLEET_*` name. */
function documentedVariables(markdown: string): Map<string, DocumentedVariable> {
  const rows = new Map<string, DocumentedVariable>();
  for (const line of markdown.split('\n')) {
    const row = /^\|\s*`(SLOTFLEET_\w+)`\s*\|([^|]*)\|(.*)\|\s*$/.exec(line);
    if (!row) continue;
    const [, name, defaultCell, meaning] = row as unknown as [string, string, string, string];
    if (rows.has(name)) throw new Error(`${DOC} lists ${name} twice`);
    const cell = defaultCell.trim();
    const quoted = /^`([^`]*)`$/.exec(cell);
    if (!quoted && cell !== '(none)') {
      throw new Error(`${DOC}: the default of ${name} is "${cell}": write it as \`value\` or (none)`);
    }
    rows.set(name, { defaultValue: quoted?.[1], meaning: meaning.trim() });
  }
  return rows;
}

/**
 * Variable -> DEFAULTS key, from how config.ts reads them: `integer(env, 'SLOTFLEET_X', DEFAULTS.key,
 * ...)` and `nonEmpty(env.SLOTFLEET_X) ?? DEFAULTS.key`.
 */
function defaultKeys(text: string): Map<string, string> {
  const keys = new Map<string, string>();
  for (const pattern of [
    /'(SLOTFLEET_\w+)',\s*DEFAULTS\.(\w+)/g,
    /env\.(SLOTFLEET_\w+)\)\s*\?\?\s*DEFAULTS\.(\w+)/g,
  ]) {
    for (const [, variable, key] of text.matchAll(pattern)) keys.set(variable!, key!);
  }
  return keys;
}

const documented = documentedVariables(doc);
const variables = Object.keys(ENVIRONMENT);
const keyOf = defaultKeys(source);

describe(`${DOC} against src/shared/config.ts`, () => {
  it('lists every variable config.ts reads, and no other', () => {
    const missing = variables.filter((name) => !documented.has(name));
    const unknown = [...documented.keys()].filter((name) => !(name in ENVIRONMENT));
    expect(
      { missing, unknown },
      `${DOC}: variables missing from the table, or not read by config.ts`,
    ).toEqual({ missing: [], unknown: [] });
    for (const [name, { meaning }] of documented) expect(meaning, `${name} has no meaning`).not.toBe('');
  });

  it('finds in config.ts no variable that ENVIRONMENT, which the table follows, leaves out', () => {
    const read = new Set([...source.matchAll(/\bSLOTFLEET_[A-Z0-9_]+\b/g)].map(([name]) => name));
    expect([...read].filter((name) => !(name in ENVIRONMENT))).toEqual([]);
  });

  it('states each default as config.ts DEFAULTS has it, and (none) where config.ts has none', () => {
    const wrong = variables.flatMap((name) => {
      const key = keyOf.get(name);
      const code = key === undefined ? undefined : String(DEFAULTS[key as keyof typeof DEFAULTS]);
      const stated = documented.get(name)?.defaultValue;
      return stated === code
        ? []
        : [`${name}: ${DOC} says ${stated ?? '(none)'}, config.ts ${code ?? '(none)'}`];
    });
    expect(wrong).toEqual([]);
    // Every default is reached through a variable this test recognised: a new way of reading one
    // (which the patterns above would miss) fails here instead of passing unchecked.
    const reached = new Set(keyOf.values());
    expect(Object.keys(DEFAULTS).filter((key) => !reached.has(key))).toEqual([]);
    expect([...keyOf.keys()].filter((name) => !(name in ENVIRONMENT))).toEqual([]);
  });

  it('gives for each default the value loadConfig uses when the variable is unset', () => {
    const unset = loadConfig({});
    for (const [name, { defaultValue }] of documented) {
      if (defaultValue === undefined) continue;
      expect(loadConfig({ [name]: defaultValue }), `${name}=${defaultValue}`).toEqual(unset);
    }
  });
});

describe('the table reader', () => {
  it('reads a default, (none), and refuses anything else', () => {
    const table = [
      '| variable | default | meaning |',
      '| `SLOTFLEET_A` | `10` | ten |',
      '| `SLOTFLEET_B` | (none) | nothing |',
    ].join('\n');
    expect([...documentedVariables(table)]).toEqual([
      ['SLOTFLEET_A', { defaultValue: '10', meaning: 'ten' }],
      ['SLOTFLEET_B', { defaultValue: undefined, meaning: 'nothing' }],
    ]);
    expect(() => documentedVariables('| `SLOTFLEET_A` | 10 ms | ten |')).toThrow(/write it as/);
    expect(() => documentedVariables('| `SLOTFLEET_A` | `1` | a |\n| `SLOTFLEET_A` | `1` | a |')).toThrow(
      /twice/,
    );
  });

  it('maps both ways config.ts reads a variable to its DEFAULTS key', () => {
    const text = [
      "port: integer(env, 'SLOTFLEET_API_PORT', DEFAULTS.apiPort, 0, 65535),",
      "rate: integer(\n  env,\n  'SLOTFLEET_API_RATE_LIMIT',\n  DEFAULTS.apiRateLimitPerMinute,\n  1,\n),",
      'host: nonEmpty(env.SLOTFLEET_API_HOST) ?? DEFAULTS.apiHost,',
      'const token = nonEmpty(env.SLOTFLEET_API_TOKEN);',
    ].join('\n');
    expect(Object.fromEntries(defaultKeys(text))).toEqual({
      SLOTFLEET_API_PORT: 'apiPort',
      SLOTFLEET_API_RATE_LIMIT: 'apiRateLimitPerMinute',
      SLOTFLEET_API_HOST: 'apiHost',
    });
  });
});
