/**
 * The README's first command, as a new user runs it: `slotfleet demo` in a child process with no
 * SLOTFLEET_* configuration, so on redis-server. It must exit 0, say which server ran, report keys
 * moved and a passed verification, and leave none of the servers it started running.
 */
import { connect } from 'node:net';
import { describe, expect, it } from 'vitest';
import { runSlotfleet } from './support/run-slotfleet.js';

function portAnswers(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

describe('slotfleet demo', () => {
  it('moves, verifies, summarizes and cleans up after itself', async () => {
    const env = Object.fromEntries(
      Object.entries(process.env).filter(([name]) => !name.startsWith('SLOTFLEET_')),
    );
    // 5,000 keys rather than the README's 200,000: what the demo moves is a quarter of the slots
    // whatever they hold, and seeding and verifying more keys shows nothing more.
    const { code, stdout, stderr } = await runSlotfleet(['demo', '--keys', '5000'], env, 170_000);
    expect(code, `${stdout}\n${stderr}`).toBe(0);
    const moved = Number(/keys moved\s+([\d,]+)/.exec(stdout)?.[1]?.replace(/,/g, ''));
    expect(moved).toBeGreaterThan(0);
    expect(stdout).toMatch(/verified all 5,000 keys \(value and TTL\)/);
    expect(stdout).toMatch(/verified\s+yes/);
    expect(stdout).toMatch(/slots\s+\d+ done, 0 failed/);
    // What the servers said they are (INFO server), not only what the binary's name suggests.
    expect(stdout).toMatch(/server\s+redis 7\.\d+\.\d+/);
    const ports = (/server ports: ([\d ]+)/.exec(stdout)?.[1] ?? '').trim().split(' ').map(Number);
    const added = Number(/added an empty master 127\.0\.0\.1:(\d+)/.exec(stdout)?.[1]);
    expect(ports.length).toBe(7);
    for (const port of [...ports, added])
      expect(await portAnswers(port), `port ${port} still answers`).toBe(false);
  }, 180_000);
});
