import { type AclUser, RedisProcess } from './redis-process.js';

export interface ControlRedisOptions {
  /** `requirepass`: clients use redis://:password@host:port. */
  password?: string;
  /** An ACL user instead (the `default` user is then off): redis://user:password@host:port. */
  aclUser?: AclUser;
}

/**
 * The standalone Redis that holds BullMQ queues. AOF is on so an outage test can kill it
 * and `restart()` it without losing jobs, as a production control Redis would. The default
 * `appendfsync everysec` is enough: Redis writes the AOF before it replies and only defers the
 * fsync, so a SIGKILL (unlike a power cut) loses no acknowledged write.
 */
export function startControlRedis(options: ControlRedisOptions = {}): Promise<RedisProcess> {
  return RedisProcess.start({ appendonly: true, password: options.password, aclUser: options.aclUser });
}
