/**
 * A BullMQ Queue closed while a connection attempt to its control Redis is in flight, after an
 * earlier attempt failed: BullMQ's own close leaves a rejection nobody handles once the client ends
 * (closeQueue in src/shared/queue/connections.ts), which would end the API or a worker on its way
 * out. The "control Redis" here resets the first connection and holds the next one without a word,
 * so the close meets an attempt in flight every time.
 */
import { createServer, type Socket } from 'node:net';
import { Queue } from 'bullmq';
import { afterEach, describe, expect, it } from 'vitest';
import { ConnectionRole, closeQueue, controlConnectionOptions } from '../../src/shared/queue/connections.js';

describe('closing a queue while its control Redis connection is being attempted', () => {
  const rejections: unknown[] = [];
  const onRejection = (reason: unknown) => rejections.push(reason);
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => undefined);
    if (sockets.size === 1) socket.resetAndDestroy();
    // The next ones stay silent until the client hangs up.
    else socket.on('end', () => socket.end());
  });
  afterEach(async () => {
    process.off('unhandledRejection', onRejection);
    for (const socket of sockets) socket.destroy();
    await new Promise((resolve) => server.close(resolve));
  });

  it('leaves no unhandled rejection behind', async () => {
    process.on('unhandledRejection', onRejection);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as { port: number };
    const queue = new Queue('q', {
      connection: controlConnectionOptions({ host: '127.0.0.1', port }, ConnectionRole.Api),
    });
    queue.on('error', () => undefined);
    const deadline = Date.now() + 10_000;
    while (sockets.size < 2 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
    expect(sockets.size, 'a second connection attempt').toBeGreaterThanOrEqual(2);
    await closeQueue(queue);
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(rejections.map(String)).toEqual([]);
  });
});
