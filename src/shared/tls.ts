/**
 * Node TLS options for a rediss:// endpoint, from the file paths config.ts checked at start. Read
 * here, where connections are made, so the frozen config and its logs never hold key material;
 * each file is read once per process (a rotated certificate needs a restart, as with redis-cli).
 * rejectUnauthorized stays Node's default (true): slotfleet never turns verification off.
 */
import { readFileSync } from 'node:fs';
import type { ConnectionOptions } from 'node:tls';
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
