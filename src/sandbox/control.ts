import { type AclUser, RedisProcess } from './redis-process.js';
import type { SandboxCertificates } from './tls-certs.js';

export interface ControlRedisOptions {
  /** `requirepass`: clients use redis://:password@host:port. */
  password?: string;
  /** An ACL user instead (the `default` user is then off): redis://user:password@host:port. */
  aclUser?: AclUser;
  /** TLS only, with these certificates (RedisProcessOptions.tls): its `url` is then rediss://. */
  tls?: SandboxCertificates;
}

/**
 * The standalone Redis that holds BullMQ queues and migration records. AOF is on so an outage test
 * can kill() it and restart() it on the same port and directory with its data, as a production
 * control Redis would come back. `appendfsync everysec` (the default, kept for the benchmark's sake):
 * Redis write()s the AOF before it replies and only defers the fsync, so a SIGKILL loses no
 * acknowledged write, except when a background fsync stalls (slow disk): Redis then holds writes
 * back for up to 2 s while still replying, and a crash loses them. test/integration/control-outage
 * shows the fleet converges even then; `appendfsync always` would close the gap at an fsync per
 * event-loop turn.
 */
export function startControlRedis(options: ControlRedisOptions = {}): Promise<RedisProcess> {
  return RedisProcess.start({
    appendonly: true,
    password: options.password,
    aclUser: options.aclUser,
    ...(options.tls ? { tls: options.tls } : {}),
  });
}
