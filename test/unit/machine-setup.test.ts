/**
 * scripts/setup, the machine setup that `npx slotfleet demo` and `npm test` run first. Each case runs
 * the script with --dry-run on a pretend machine: a PATH of links to this machine's programs less the
 * ones a case hides, stubs for `id`, `sudo` and `apt-cache` that answer what a case says, and
 * an os-release file of its own (SLOTFLEET_OS_RELEASE). So the cases cover what is missing, what it
 * says about it, how it would install (as root, through `sudo -n`) or why it cannot, and the command
 * it then prints, without installing anything. The last case runs it for real on this machine, which
 * `npm test` has set up: it must find everything and change nothing.
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';

const execFileAsync = promisify(execFile);
const SCRIPT = 'scripts/setup';
const PROGRAM_DIRECTORIES = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];
const REDIS = ['redis-server', 'redis-cli'] as const;
const VALKEY = ['valkey-server', 'valkey-cli'] as const;
const DEBIAN_12 = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_CODENAME=bookworm\n';
const UBUNTU_22 =
  'PRETTY_NAME="Ubuntu 22.04.4 LTS"\nID=ubuntu\nID_LIKE=debian\nVERSION_CODENAME=jammy\nVERSION_ID="22.04"\n';
const UBUNTU_24 =
  'PRETTY_NAME="Ubuntu 24.04.1 LTS"\nID=ubuntu\nID_LIKE=debian\nVERSION_CODENAME=noble\nVERSION_ID="24.04"\n';
const FEDORA = 'NAME="Fedora Linux"\nPRETTY_NAME="Fedora Linux 40 (Forty)"\nID=fedora\n';

/** The programs a case may leave off PATH. */
const HIDEABLE = [
  ...REDIS,
  ...VALKEY,
  'redis-sentinel',
  'prometheus',
  'promtool',
  'chromium',
  'make',
  'gcc',
  'apt-get',
] as const;
type Hideable = (typeof HIDEABLE)[number];
/** Linked or stubbed by each case (sudo stubbed or absent). */
const PER_CASE = [...HIDEABLE, 'id', 'sudo', 'apt-cache'];

interface PretendMachine {
  /** Programs left off PATH. */
  readonly hide?: readonly Hideable[];
  /** What `id -u` answers. @defaultValue 0 */
  readonly uid?: number;
  /** What `sudo -n true` does: succeed, refuse (a password is needed), or no sudo at all. @defaultValue 'absent' */
  readonly sudo?: 'passwordless' | 'password' | 'absent';
  /** The version `apt-cache policy` names as the candidate. @defaultValue bookworm's redis-server */
  readonly aptCandidate?: string;
  /** @defaultValue Debian 12 */
  readonly osRelease?: string;
  /** An empty cache directory, so that Valkey 9 is not built yet. @defaultValue false */
  readonly withoutValkey9?: boolean;
}

interface SetupRun {
  readonly code: number;
  readonly stdout: string;
}

const directories: string[] = [];
afterAll(() => {
  for (const directory of directories) rmSync(directory, { recursive: true, force: true });
});

function temporaryDirectory(): string {
  const directory = mkdtempSync(join(tmpdir(), 'slotfleet-setup-test-'));
  directories.push(directory);
  return directory;
}

interface CommonPrograms {
  /** Links to every program of this machine but those of PER_CASE. */
  readonly directory: string;
  /** Where those of PER_CASE that this machine has are. */
  readonly perCase: ReadonlyMap<string, string>;
}

/** Made once for all cases: about 1,300 links. The first program by a name on the usual PATH wins. */
let common: CommonPrograms | undefined;
function commonPrograms(): CommonPrograms {
  if (common !== undefined) return common;
  const directory = temporaryDirectory();
  const perCase = new Map<string, string>();
  const seen = new Set<string>();
  for (const programs of PROGRAM_DIRECTORIES.filter((path) => existsSync(path))) {
    for (const name of readdirSync(programs)) {
      if (seen.has(name)) continue;
      seen.add(name);
      if (PER_CASE.includes(name)) perCase.set(name, join(programs, name));
      else symlinkSync(join(programs, name), join(directory, name));
    }
  }
  common = { directory, perCase };
  return common;
}

/** Writes a new file only: a stub must never land on a link, and so on the program it points at. */
function writeStub(directory: string, name: string, body: string): void {
  writeFileSync(join(directory, name), `#!/bin/sh\n${body}\n`, { mode: 0o755, flag: 'wx' });
}

function pretendMachine(machine: PretendMachine): NodeJS.ProcessEnv {
  const root = temporaryDirectory();
  const own = join(root, 'bin');
  mkdirSync(own);
  writeStub(own, 'id', `echo ${machine.uid ?? 0}`);
  const sudo = machine.sudo ?? 'absent';
  if (sudo !== 'absent') writeStub(own, 'sudo', `exit ${sudo === 'passwordless' ? 0 : 1}`);
  const candidate = machine.aptCandidate ?? '5:7.0.15-1~deb12u10';
  writeStub(own, 'apt-cache', `printf '%s:\\n  Candidate: %s\\n' "$2" '${candidate}'`);
  const { directory, perCase } = commonPrograms();
  for (const name of HIDEABLE.filter((name) => !machine.hide?.includes(name))) {
    const path = perCase.get(name);
    if (path !== undefined) symlinkSync(path, join(own, name));
  }
  const osRelease = join(root, 'os-release');
  writeFileSync(osRelease, machine.osRelease ?? DEBIAN_12);
  const env: NodeJS.ProcessEnv = {
    HOME: homedir(),
    PATH: `${own}:${directory}`,
    SLOTFLEET_OS_RELEASE: osRelease,
  };
  if (machine.withoutValkey9) env.SLOTFLEET_CACHE_DIR = join(root, 'cache');
  return env;
}

async function runSetup(args: readonly string[], env: NodeJS.ProcessEnv): Promise<SetupRun> {
  try {
    const { stdout } = await execFileAsync('/bin/bash', [SCRIPT, ...args], { env, timeout: 30_000 });
    return { code: 0, stdout };
  } catch (error) {
    const failed = error as { code?: unknown; stdout?: string; stderr?: string };
    if (typeof failed.code !== 'number') throw error;
    return { code: failed.code, stdout: `${failed.stdout ?? ''}${failed.stderr ?? ''}` };
  }
}

function dryRun(purpose: 'demo' | 'tests', machine: PretendMachine, ...flags: string[]): Promise<SetupRun> {
  return runSetup([purpose, '--dry-run', ...flags], pretendMachine(machine));
}

/** The packages of each `apt-get install` it would run, in order, and whether from backports. */
function installs(stdout: string): string[] {
  return [
    ...stdout.matchAll(/would run: (?:sudo -n )?env DEBIAN_FRONTEND=noninteractive apt-get install (.*)/g),
  ].map((match) => match[1]!.replace('-y -q --no-install-recommends ', ''));
}

/** Every command it would run, in order, shortened. */
function steps(stdout: string): string[] {
  return [...stdout.matchAll(/would run: (.*)/g)].map((match) =>
    match[1]!
      .replace(/^(sudo -n )?env DEBIAN_FRONTEND=noninteractive /, '')
      .replace('-y -q --no-install-recommends ', ''),
  );
}

describe('scripts/setup demo', () => {
  it('installs redis-server as root, saying why, after apt-get update', async () => {
    const { code, stdout } = await dryRun('demo', { hide: [...REDIS, ...VALKEY] });
    expect(code, stdout).toBe(0);
    expect(stdout).toContain('setup: the demo needs these, which this machine lacks:');
    expect(stdout).toMatch(/^ {2}redis-server: Redis 7\.0 or newer, the demo's servers/m);
    expect(stdout).toMatch(/would run: env DEBIAN_FRONTEND=noninteractive apt-get update -q\n/);
    expect(installs(stdout)).toEqual(['redis-server']);
    expect(stdout.indexOf('apt-get update')).toBeLessThan(stdout.indexOf('apt-get install'));
    expect(stdout).not.toContain('running:');
    expect(stdout).toContain('dry run: nothing was changed');
  });

  it.each([
    ['redis-cli alone is missing: redis-tools', { hide: ['redis-cli'] }, ['redis-tools']],
    ['valkey-server and valkey-cli stand in for Redis: nothing', { hide: REDIS }, []],
    ['everything is there: nothing', {}, []],
  ] as const)('%s', async (_name, machine, packages) => {
    const { code, stdout } = await dryRun('demo', machine);
    expect(code, stdout).toBe(0);
    expect(installs(stdout)).toEqual(packages);
    if (packages.length === 0) expect(stdout).toBe('');
  });

  it('goes through sudo -n when not root and sudo needs no password', async () => {
    const { code, stdout } = await dryRun('demo', {
      hide: [...REDIS, ...VALKEY],
      uid: 1000,
      sudo: 'passwordless',
    });
    expect(code, stdout).toBe(0);
    expect(stdout).toContain(
      'would run: sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends redis-server',
    );
  });

  it.each([
    ['sudo asks for a password', 'password', 'not root, and sudo asks for a password'],
    ['there is no sudo', 'absent', 'not root, and sudo is not installed'],
  ] as const)('prints the command and fails when %s', async (_name, sudo, reason) => {
    const { code, stdout } = await dryRun('demo', { hide: [...REDIS, ...VALKEY], uid: 1000, sudo });
    expect(code).toBe(1);
    expect(stdout).toContain(`setup: cannot install them here: ${reason}`);
    expect(stdout).toContain(
      'setup: run this, then npx slotfleet demo again:\n  sudo apt-get install redis-server\n',
    );
    expect(stdout).not.toContain('would run');
  });

  it.each([
    [
      'not Debian or Ubuntu',
      { osRelease: FEDORA },
      'this is Fedora Linux 40 (Forty), not Debian or Ubuntu: install them with its own packages ' +
        "(the names above are Debian's), or name a server with SLOTFLEET_SERVER_BIN",
    ],
    ['without apt-get', { hide: ['apt-get'] }, 'cannot install them here: apt-get is not on PATH.'],
    [
      "with a redis-server older than 7.0 in the release's archive",
      { osRelease: UBUNTU_22, aptCandidate: '5:6.0.16-1ubuntu1' },
      "Ubuntu 22.04.4 LTS's redis-server is 6.x; slotfleet needs Redis 7.0 or newer: install it yourself, " +
        'or name a server with SLOTFLEET_SERVER_BIN',
    ],
  ] as const)('fails, saying why, %s', async (_name, machine, reason) => {
    const hide: Hideable[] = [...REDIS, ...VALKEY, ...('hide' in machine ? machine.hide : [])];
    const { code, stdout } = await dryRun('demo', { ...machine, hide });
    expect(code).toBe(1);
    expect(stdout).toContain(reason);
    expect(stdout).not.toContain('run this');
    expect(installs(stdout)).toEqual([]);
  });

  it("installs Ubuntu's own redis-server when it is 7.0 or newer", async () => {
    const { code, stdout } = await dryRun('demo', {
      hide: [...REDIS, ...VALKEY],
      osRelease: UBUNTU_24,
      aptCandidate: '5:7.0.15-1build2',
    });
    expect(code, stdout).toBe(0);
    expect(installs(stdout)).toEqual(['redis-server']);
  });
});

describe('scripts/setup tests', () => {
  it('installs what is missing from the release, each with its reason, and nothing else', async () => {
    const { code, stdout } = await dryRun('tests', { hide: ['chromium', 'promtool'] });
    expect(code, stdout).toBe(0);
    expect(stdout).toContain('setup: npm test needs these, which this machine lacks:');
    expect(stdout).toMatch(/^ {2}prometheus: prometheus and promtool, for the metrics test$/m);
    expect(stdout).toMatch(/^ {2}chromium: a headless browser for the status page test/m);
    expect(installs(stdout)).toEqual(['prometheus chromium']);
    expect(stdout).not.toMatch(/valkey|npm ci/i);
  });

  it('installs Valkey 8 from bookworm-backports', async () => {
    const { code, stdout } = await dryRun('tests', { hide: VALKEY });
    expect(code, stdout).toBe(0);
    expect(stdout).toMatch(/^ {2}valkey-server valkey-tools, from bookworm-backports: Valkey 8/m);
    expect(installs(stdout)).toEqual(['-t bookworm-backports valkey-server valkey-tools']);
  });

  it('says Valkey 9 takes minutes before building it, after make and gcc are installed', async () => {
    const { code, stdout } = await dryRun('tests', {
      withoutValkey9: true,
      hide: ['make', 'gcc', 'redis-sentinel'],
    });
    expect(code, stdout).toBe(0);
    expect(stdout).toMatch(
      /^ {2}Valkey 9: built from Debian sid's source package by \.ci\/valkey9 into \/.*\/cache\/valkey-9\.\d+\.\d+\/bin, about 4 minutes on 2 cores, once/m,
    );
    // The build starts once make and gcc are there, and runs beside the other installs.
    expect(steps(stdout)).toEqual([
      'apt-get update -q',
      'apt-get install make gcc libc6-dev',
      'bash .ci/valkey9 (about 4 minutes on 2 cores)',
      'apt-get install redis-sentinel',
    ]);
  });

  it('without root or sudo, prints the one command that installs what needs root', async () => {
    const { code, stdout } = await dryRun('tests', { hide: ['chromium'], uid: 1000, sudo: 'password' });
    expect(code).toBe(1);
    expect(stdout).toContain(
      'setup: run this, then npm test again:\n  sudo bash scripts/setup tests --system-only\n',
    );
  });

  it('--system-only leaves the Valkey 9 build to the user', async () => {
    const { code, stdout } = await dryRun('tests', { withoutValkey9: true }, '--system-only');
    expect(code, stdout).toBe(0);
    expect(stdout).toBe('setup: nothing that needs root is missing\n');
  });

  it('installs nothing on another release, and says what it supports', async () => {
    const { code, stdout } = await dryRun('tests', { hide: ['chromium'], osRelease: UBUNTU_24 });
    expect(code).toBe(1);
    expect(stdout).toContain("npm test's setup installs on Debian 12 (bookworm) only");
    expect(stdout).toContain('On Ubuntu 24.04.1 LTS, install what is missing yourself');
    expect(stdout).not.toContain('run this');
  });

  it('refuses an unknown argument', async () => {
    expect((await runSetup(['everything'], pretendMachine({}))).code).toBe(2);
  });
});

describe('scripts/setup on this machine', () => {
  it('finds everything npm test needs, quickly, and changes nothing', async () => {
    const present = /^setup: everything npm test needs is here \(.*\)\n$/;
    const dry = await runSetup(['tests', '--dry-run'], process.env);
    expect(dry.stdout).toMatch(present);
    // Only once the dry run found nothing missing: a real run here then has nothing to install.
    for (const [purpose, expected] of [
      ['demo', /^$/],
      ['tests', present],
    ] as const) {
      const started = Date.now();
      const run = await runSetup([purpose], process.env);
      expect(run).toMatchObject({ code: 0, stdout: expect.stringMatching(expected) });
      expect(Date.now() - started).toBeLessThan(5_000);
    }
  });
});
