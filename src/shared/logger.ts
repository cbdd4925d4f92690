/** The one pino configuration. Secrets are removed by redaction here, never by hand at call sites. */
import { type DestinationStream, type Logger, pino } from 'pino';

export type { Logger };

export const REDACT_PATHS = [
  'password',
  '*.password',
  '*.*.password',
  'username',
  '*.username',
  'url',
  '*.url',
  'authorization',
  '*.authorization',
  'req.headers.authorization',
  'headers.authorization',
  'config.clusters',
  'config.api.token',
  'token',
  'config.control',
  // ioredis errors carry the failed command's arguments (MIGRATE ... AUTH <password>).
  '*.command.args',
];

export function createLogger(
  options: { level: string; name: string },
  destination?: DestinationStream,
): Logger {
  return pino(
    {
      name: options.name,
      level: options.level,
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      base: { pid: process.pid },
    },
    destination,
  );
}
