/**
 * The connector every TLS connection uses keeps an 'error' listener on its socket for good: ioredis
 * itself listens once, and a TLS socket refused in its handshake can emit a second error (the
 * server's alert) as it goes down, which would otherwise be an uncaught exception.
 */
import { createServer } from 'node:net';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/shared/config.js';
import { ConnectionRole, controlConnectionOptions } from '../../src/shared/queue/connections.js';
import { tlsGuardedConnector } from '../../src/shared/tls.js';

describe('the TLS connector', () => {
  it('is what rediss:// control connections use, and only they', () => {
    const tls = loadConfig({ SLOTFLEET_CONTROL_URL: 'rediss://control:6380' }).control;
    const plain = loadConfig({ SLOTFLEET_CONTROL_URL: 'redis://control:6379' }).control;
    expect(controlConnectionOptions(tls, ConnectionRole.Worker).Connector).toBe(tlsGuardedConnector);
    expect(controlConnectionOptions(plain, ConnectionRole.Worker).Connector).toBeUndefined();
  });

  it('survives a socket that emits a second error after the first one was handled', async () => {
    const server = createServer((socket) => socket.on('error', () => undefined));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as { port: number };
    try {
      const connector = new tlsGuardedConnector({ host: '127.0.0.1', port });
      const stream = await connector.connect(() => undefined);
      // ioredis' own listener, as Redis.connect adds it: once.
      stream.once('error', () => undefined);
      stream.emit('error', new Error('certificate refused'));
      expect(() => stream.emit('error', new Error('tlsv1 alert decode error'))).not.toThrow();
      stream.destroy();
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });
});
