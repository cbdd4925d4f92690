/**
 * The import rules of docs/architecture.md, checked on every .ts file under src/:
 * - src/shared/domain is pure: it imports no package and no node builtin, in any form, and from
 *   outside the domain only types (`import type`) or a module listed in PURE_NEIGHBOURS, which must
 *   follow the domain's rules itself.
 * - src/shared is the bottom of the house: it imports nothing outside src/shared (not src/producer,
 *   src/workers, src/cli, src/sandbox or src/bench), types included, since a type import upwards is a
 *   circle in the design even when the compiler erases it.
 * Imports are read with the TypeScript parser: static imports, `export ... from`, `import x =
 * require()`, `require('...')`, dynamic `import()` and `import('...')` types.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { join, posix } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const DOMAIN = 'src/shared/domain/';
const SHARED = 'src/shared/';

/**
 * Modules outside the domain that the domain may import as values, each with the reason. Each is
 * checked by the domain's own rules, so nothing reaches I/O through them.
 */
const PURE_NEIGHBOURS: Readonly<Record<string, string>> = {
  'src/shared/errors.ts':
    'the one error type and its code table (STYLE rule 4): the planners throw SlotfleetError with a code; it imports nothing',
};

/**
 * Node builtins the domain may import, each with the reason. None today: the domain needs no
 * builtin, and each one considered (node:crypto, node:util) reaches the process or the system.
 */
const PURE_BUILTINS: Readonly<Record<string, string>> = {};

/** Packages the domain may import, each with the reason. None today. */
const PURE_PACKAGES: Readonly<Record<string, string>> = {};

/** Named in messages: the modules the house knows to do I/O. */
const IO_PACKAGES = ['ioredis', 'bullmq', 'fastify', 'pino', 'prom-client'];

interface ImportFact {
  readonly specifier: string;
  /** Erased by the compiler: `import type`, `export type ... from`, an `import('x').T` type. */
  readonly typeOnly: boolean;
  readonly line: number;
}

/** Every import of one file, as written. A dynamic import of a computed name has specifier `(computed)`. */
function importsOf(fileName: string, text: string): ImportFact[] {
  const file = ts.createSourceFile(fileName, text, ts.ScriptTarget.Latest, true, ts.ScriptKind.TS);
  const facts: ImportFact[] = [];
  const add = (node: ts.Node, specifier: ts.Expression | undefined, typeOnly: boolean) => {
    const line = file.getLineAndCharacterOfPosition(node.getStart(file)).line + 1;
    const name = specifier && ts.isStringLiteralLike(specifier) ? specifier.text : '(computed)';
    facts.push({ specifier: name, typeOnly, line });
  };
  const visit = (node: ts.Node): void => {
    if (ts.isImportDeclaration(node)) {
      // Under verbatimModuleSyntax `import { type A } from 'x'` still loads x: only `import type` is erased.
      add(node, node.moduleSpecifier, node.importClause?.isTypeOnly === true);
    } else if (ts.isExportDeclaration(node) && node.moduleSpecifier) {
      add(node, node.moduleSpecifier, node.isTypeOnly);
    } else if (ts.isImportEqualsDeclaration(node) && ts.isExternalModuleReference(node.moduleReference)) {
      add(node, node.moduleReference.expression, node.isTypeOnly);
    } else if (ts.isImportTypeNode(node)) {
      const argument = node.argument;
      add(
        node,
        ts.isLiteralTypeNode(argument) && ts.isStringLiteral(argument.literal) ? argument.literal : undefined,
        true,
      );
    } else if (
      ts.isCallExpression(node) &&
      (node.expression.kind === ts.SyntaxKind.ImportKeyword ||
        (ts.isIdentifier(node.expression) && node.expression.text === 'require'))
    ) {
      add(node, node.arguments[0], false);
    }
    ts.forEachChild(node, visit);
  };
  visit(file);
  return facts;
}

/** The repo path (forward slashes) a relative specifier names, or undefined for a package or builtin. */
function resolveRelative(file: string, specifier: string): string | undefined {
  if (!specifier.startsWith('.')) return undefined;
  const target = posix.normalize(posix.join(posix.dirname(file), specifier));
  return target.replace(/\.js$/, '.ts');
}

function isBuiltin(specifier: string): boolean {
  return specifier.startsWith('node:') || builtinModules.includes(specifier.split('/')[0]!);
}

function packageName(specifier: string): string {
  const parts = specifier.split('/');
  return specifier.startsWith('@') ? parts.slice(0, 2).join('/') : parts[0]!;
}

/** Why the domain (or a pure neighbour) may not import this, or undefined when it may. */
function domainProblem(fact: ImportFact, resolved: string | undefined): string | undefined {
  if (fact.specifier === '(computed)') return 'a dynamic import of a computed name cannot be checked';
  if (resolved === undefined) {
    if (isBuiltin(fact.specifier)) {
      const name = fact.specifier.replace(/^node:/, '');
      return `node:${name}` in PURE_BUILTINS
        ? undefined
        : 'the domain is pure: no node builtin (I/O module), not even as a type';
    }
    const name = packageName(fact.specifier);
    if (name in PURE_PACKAGES) return undefined;
    return IO_PACKAGES.includes(name)
      ? 'the domain is pure: no I/O module, not even as a type'
      : 'the domain is pure: no package outside PURE_PACKAGES, not even as a type';
  }
  if (resolved.startsWith(DOMAIN) || fact.typeOnly || resolved in PURE_NEIGHBOURS) return undefined;
  return 'the domain imports only types from outside src/shared/domain (use `import type`)';
}

/** Every import of `file` (a repo path) that breaks the house rules, one line each. */
function violationsOf(file: string, text: string): string[] {
  const pure = file.startsWith(DOMAIN) || file in PURE_NEIGHBOURS;
  const shared = file.startsWith(SHARED);
  if (!pure && !shared) return [];
  const violations: string[] = [];
  for (const fact of importsOf(file, text)) {
    const resolved = resolveRelative(file, fact.specifier);
    const where = `${file}:${fact.line} imports '${fact.specifier}'${resolved ? ` (${resolved})` : ''}`;
    if (shared && resolved !== undefined && !resolved.startsWith(SHARED)) {
      violations.push(`${where}: src/shared never imports from ${resolved.split('/').slice(0, 2).join('/')}`);
    } else if (shared && fact.specifier === '(computed)' && !pure) {
      violations.push(`${where}: a dynamic import of a computed name cannot be checked`);
    }
    const problem = pure ? domainProblem(fact, resolved) : undefined;
    if (problem) violations.push(`${where}: ${problem}`);
  }
  return violations;
}

function sourceFiles(directory: string): string[] {
  return readdirSync(join(ROOT, directory), { withFileTypes: true }).flatMap((entry) => {
    const path = `${directory}/${entry.name}`;
    if (entry.isDirectory()) return sourceFiles(path);
    return entry.isFile() && entry.name.endsWith('.ts') ? [path] : [];
  });
}

describe('the house rules, on src/ as it is', () => {
  const files = sourceFiles('src');

  it('finds the rooms it checks', () => {
    expect(files.filter((file) => file.startsWith(DOMAIN)).length).toBeGreaterThan(5);
    expect(files.filter((file) => file.startsWith(SHARED)).length).toBeGreaterThan(10);
    for (const neighbour of Object.keys(PURE_NEIGHBOURS)) expect(files).toContain(neighbour);
    // The domain does import things: a parser that found nothing would pass every rule.
    const domainImports = files
      .filter((file) => file.startsWith(DOMAIN))
      .flatMap((file) => importsOf(file, readFileSync(join(ROOT, file), 'utf8')));
    expect(domainImports.length).toBeGreaterThan(10);
  });

  it('src/shared/domain imports no I/O, and src/shared imports nothing above it', () => {
    const violations = files.flatMap((file) => violationsOf(file, readFileSync(join(ROOT, file), 'utf8')));
    expect(violations, `house rules broken (docs/architecture.md):\n${violations.join('\n')}`).toEqual([]);
  });
});

describe('the rules, on examples', () => {
  const cases: { file: string; source: string; broken: RegExp | null }[] = [
    // The domain.
    { file: 'src/shared/domain/a.ts', source: "import { Redis } from 'ioredis';", broken: /no I\/O module/ },
    { file: 'src/shared/domain/a.ts', source: "import type { Redis } from 'ioredis';", broken: /ioredis/ },
    { file: 'src/shared/domain/a.ts', source: "import { Queue } from 'bullmq';", broken: /bullmq/ },
    { file: 'src/shared/domain/a.ts', source: "import { pino } from 'pino';", broken: /pino/ },
    { file: 'src/shared/domain/a.ts', source: "import { readFile } from 'node:fs';", broken: /node builtin/ },
    { file: 'src/shared/domain/a.ts', source: "import net from 'net';", broken: /node builtin/ },
    { file: 'src/shared/domain/a.ts', source: "import x from 'left-pad';", broken: /PURE_PACKAGES/ },
    {
      file: 'src/shared/domain/a.ts',
      source: "import { loadConfig } from '../config.js';",
      broken: /only types/,
    },
    // verbatimModuleSyntax keeps this import (as `import {} from '../config.js'`): config.ts is loaded.
    {
      file: 'src/shared/domain/a.ts',
      source: "import { type Config } from '../config.js';",
      broken: /only types/,
    },
    {
      file: 'src/shared/domain/a.ts',
      source: "export { queueName } from '../queue/names.js';",
      broken: /only types/,
    },
    {
      file: 'src/shared/domain/p/a.ts',
      source: "const m = await import('../../queue/x.js');",
      broken: /only types/,
    },
    { file: 'src/shared/domain/a.ts', source: 'const m = await import(name);', broken: /computed/ },
    { file: 'src/shared/domain/a.ts', source: "const fs = require('fs');", broken: /node builtin/ },
    { file: 'src/shared/domain/a.ts', source: "let r: import('ioredis').Redis;", broken: /ioredis/ },
    { file: 'src/shared/domain/a.ts', source: "import type { Config } from '../config.js';", broken: null },
    { file: 'src/shared/domain/a.ts', source: "export type { Config } from '../config.js';", broken: null },
    { file: 'src/shared/domain/a.ts', source: "import { ErrorCode } from '../errors.js';", broken: null },
    {
      file: 'src/shared/domain/planners/a.ts',
      source: "import { SLOT_COUNT } from '../slots.js';",
      broken: null,
    },
    { file: 'src/shared/domain/a.ts', source: "import './slots.js';", broken: null },
    // A pure neighbour follows the domain's rules.
    { file: 'src/shared/errors.ts', source: "import { pino } from 'pino';", broken: /no I\/O module/ },
    // src/shared and the rooms above it.
    {
      file: 'src/shared/queue/a.ts',
      source: "import type { AppDeps } from '../../producer/app.js';",
      broken: /never imports from src\/producer/,
    },
    {
      file: 'src/shared/a.ts',
      source: "import { startWorker } from '../workers/worker.js';",
      broken: /never imports from src\/workers/,
    },
    { file: 'src/shared/cluster/a.ts', source: "export * from '../../cli/main.js';", broken: /src\/cli/ },
    { file: 'src/shared/a.ts', source: "import { x } from '../sandbox/index.js';", broken: /src\/sandbox/ },
    { file: 'src/shared/a.ts', source: "import { x } from '../bench/main.js';", broken: /src\/bench/ },
    { file: 'src/shared/cluster/a.ts', source: "import { Redis } from 'ioredis';", broken: null },
    { file: 'src/shared/a.ts', source: "import { x } from './queue/names.js';", broken: null },
    // Other rooms are not bound by these rules.
    { file: 'src/workers/a.ts', source: "import { x } from '../producer/app.js';", broken: null },
  ];

  it.each(cases)('$file: $source', ({ file, source, broken }) => {
    const violations = violationsOf(file, source);
    if (broken === null) expect(violations).toEqual([]);
    else {
      expect(violations).toHaveLength(1);
      // The message names the file, the line and the import.
      expect(violations[0]).toContain(`${file}:1 imports '`);
      expect(violations[0]).toMatch(broken);
    }
  });
});
