/**
 * The pure parts of the sandbox's server lookup: what `--version` and INFO server say, where the
 * CLI is looked for, which install command a failure names, and what the environment chooses.
 */
import { describe, expect, it } from 'vitest';
import {
  cliCandidates,
  describeServer,
  installHint,
  parseServerIdentity,
  parseVersionOutput,
  SERVER_INSTALL_COMMANDS,
  serverChoiceFromEnvironment,
} from '../../src/sandbox/redis-binaries.js';

describe('parseVersionOutput', () => {
  it.each([
    [
      'Redis server v=7.0.15 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64 build=ae4d7c971a948f0',
      'redis 7.0.15',
    ],
    [
      'Valkey server v=8.0.1 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64 build=39f7c371e0a96e3d\n',
      'valkey 8.0.1',
    ],
    [
      'Valkey server v=9.1.2 sha=00000000:1 malloc=jemalloc-5.3.0 bits=64 build=19be0ae2d3f8a3fd',
      'valkey 9.1.2',
    ],
  ])('%s', (output, expected) => {
    const server = parseVersionOutput(output);
    expect(server && describeServer(server)).toBe(expected);
  });

  it.each(['KeyDB server v=6.3.4', 'redis-cli 7.0.15', ''])('not a server: %j', (output) => {
    expect(parseVersionOutput(output)).toBeUndefined();
  });
});

describe('parseServerIdentity (INFO server)', () => {
  it.each([
    ['# Server\r\nredis_version:7.0.15\r\nredis_mode:cluster\r\n', 'redis 7.0.15'],
    // Valkey reports the Redis it is compatible with as redis_version; its own is valkey_version.
    ['# Server\r\nredis_version:7.2.4\r\nserver_name:valkey\r\nvalkey_version:8.0.1\r\n', 'valkey 8.0.1'],
    [
      'redis_version:7.2.4\r\nserver_name:valkey\r\nvalkey_version:9.1.2\r\nvalkey_release_stage:ga\r\n',
      'valkey 9.1.2',
    ],
  ])('%j', (info, expected) => {
    expect(describeServer(parseServerIdentity(info))).toBe(expected);
  });

  it('refuses a server it does not know', () => {
    expect(() => parseServerIdentity('server_name:keydb\r\nredis_version:6.3.4\r\n')).toThrow(/keydb/);
  });
});

describe('cliCandidates', () => {
  it.each([
    ['/usr/bin/redis-server', 'redis', ['/usr/bin/redis-cli', 'redis-cli']],
    [
      '/home/ci/.cache/slotfleet/valkey-9.1.2/bin/valkey-server',
      'valkey',
      ['/home/ci/.cache/slotfleet/valkey-9.1.2/bin/valkey-cli', 'valkey-cli'],
    ],
    // Named by what the binary says it is, not by its file name.
    ['/opt/server/bin/server', 'valkey', ['/opt/server/bin/valkey-cli', 'valkey-cli']],
  ] as const)('%s (%s)', (serverPath, name, expected) => {
    expect(cliCandidates(serverPath, name)).toEqual(expected);
  });
});

describe('installHint', () => {
  it.each([
    ['redis-server', [SERVER_INSTALL_COMMANDS.redis7], [SERVER_INSTALL_COMMANDS.valkey8]],
    ['/usr/bin/redis-cli', [SERVER_INSTALL_COMMANDS.redis7], [SERVER_INSTALL_COMMANDS.valkey9]],
    [
      'valkey-server',
      [SERVER_INSTALL_COMMANDS.valkey8, SERVER_INSTALL_COMMANDS.valkey9],
      [SERVER_INSTALL_COMMANDS.redis7],
    ],
    ['/root/.cache/slotfleet/valkey-9.1.2/bin/valkey-cli', [SERVER_INSTALL_COMMANDS.valkey9], []],
    ['/opt/bin/server', Object.values(SERVER_INSTALL_COMMANDS), []],
  ])('%s', (binary, named, notNamed) => {
    const hint = installHint(binary);
    for (const command of named) expect(hint).toContain(command);
    for (const command of notNamed) expect(hint).not.toContain(command);
  });

  it('names the apt-get commands and the Valkey 9 build', () => {
    expect(SERVER_INSTALL_COMMANDS.redis7).toMatch(/apt-get install redis-server/);
    expect(SERVER_INSTALL_COMMANDS.valkey8).toMatch(
      /apt-get install -t bookworm-backports valkey-server valkey-tools/,
    );
    expect(SERVER_INSTALL_COMMANDS.valkey9).toMatch(/\.ci\/valkey9/);
  });
});

describe('serverChoiceFromEnvironment', () => {
  it.each([
    [{}, {}],
    [{ SLOTFLEET_SERVER_BIN: '' }, {}],
    [{ SLOTFLEET_SERVER_BIN: 'valkey-server' }, { serverPath: 'valkey-server' }],
    [
      { SLOTFLEET_SERVER_BIN: ' /opt/valkey/bin/valkey-server ', SLOTFLEET_CLI_BIN: '/usr/bin/valkey-cli' },
      { serverPath: '/opt/valkey/bin/valkey-server', cliPath: '/usr/bin/valkey-cli' },
    ],
    [{ SLOTFLEET_CLUSTER_URL: 'redis://127.0.0.1:7000' }, {}],
  ])('%j', (env, expected) => {
    expect(serverChoiceFromEnvironment(env)).toEqual(expected);
  });
});
