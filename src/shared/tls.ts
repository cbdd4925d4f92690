/**
 * Node TLS options for a rediss:// endpoint, from the file paths config.ts checked at start. Read
 * here, where connections are made, so the frozen config and its logs never hold key material;
 * each file is read once per process (a rotated certificate needs a restart, as with redis-cli).
 * rejectUnauthorized stays Node's default (true): slotfleet never turns verification off.
 */
import { readFileSync } from 'node:fs';
import type { ConnectionOptions } from 'node:tls';
import type { RedisOptions } from 'ioredis';
import { StandaloneConnector } from 'ioredis/built/connectors/index.js';
import type { TlsSettings } from './config.js';

const files = new Map<string, Buffer>();

function read(path: string): Buffer {
  let content = files.get(path);
  if (content === undefined) {
    content = readFileSync(path);
    files.set(path, content);
  }
  return content;
}

export function tlsConnectionOptions(settings: TlsSettings): ConnectionOptions {
  return {
    ...(settings.caFile !== undefined ? { ca: read(settings.caFile) } : {}),
    ...(settings.certFile !== undefined ? { cert: read(settings.certFile) } : {}),
    ...(settings.keyFile !== undefined ? { key: read(settings.keyFile) } : {}),
    ...(settings.servername !== undefined ? { servername: settings.servername } : {}),
  };
}

/**
 * ioredis' connector for a TLS connection that keeps an 'error' listener on its socket for the
 * socket's whole life. ioredis 5.9 listens with once('error') only (StandaloneConnector and
 * Redis.connect), and a TLS socket whose handshake we refuse (an untrusted CA) can emit a second
 * error as it goes down: the server's alert (seen: "tlsv1 alert decode error"). With no listener
 * left that second error is an uncaught exception, which ends the API or the worker instead of
 * the 503 and /readyz reason it should be. ioredis still sees and reports the first error.
 */
class TlsGuardedConnector extends StandaloneConnector {
  override async connect(
    ...args: Parameters<StandaloneConnector['connect']>
  ): ReturnType<StandaloneConnector['connect']> {
    const stream = await super.connect(...args);
    stream.on('error', () => undefined);
    return stream;
  }
}

/** TlsGuardedConnector as ioredis' Connector option types it (its constructor takes `unknown`). */
export const tlsGuardedConnector = TlsGuardedConnector as unknown as NonNullable<RedisOptions['Connector']>;
