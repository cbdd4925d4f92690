/**
 * The errors the API's control connection raises while the control Redis is away, as ioredis and
 * BullMQ build them (enableOfflineQueue: false, maxRetriesPerRequest: 1), become 503 CONTROL_STORE;
 * anything else is left alone. The integration test control-outage.test.ts sees them for real.
 */
import { ConnectionClosedError } from 'bullmq';
import { ReplyError } from 'ioredis';
import { MaxRetriesPerRequestError } from 'ioredis/built/errors/index.js';
import { describe, expect, it } from 'vitest';
import { controlStoreError, statusForCode } from '../../src/producer/http-errors.js';
import { ErrorCode, SlotfleetError } from '../../src/shared/errors.js';
import { controlUnavailableReason } from '../../src/shared/queue/connections.js';

const control = { host: '10.0.0.9', port: 6380, password: 'hunter2-secret' };

function socketError(code: string, message: string): Error {
  return Object.assign(new Error(message), { code });
}

describe('control Redis failures', () => {
  it('names the master group and sentinels of a Sentinel control Redis, not the first sentinel alone', () => {
    const sentinel = {
      host: '10.0.0.1',
      port: 26379,
      sentinel: {
        name: 'control-main',
        nodes: [
          { host: '10.0.0.1', port: 26379 },
          { host: '::1', port: 26380 },
        ],
      },
    };
    expect(controlStoreError(new Error('Connection is closed.'), sentinel)?.message).toMatch(
      /^control Redis \(sentinel master control-main via 10\.0\.0\.1:26379,\[::1\]:26380\) is unreachable; /,
    );
  });

  it.each([
    [
      'offline, no offline queue',
      new Error("Stream isn't writeable and enableOfflineQueue options is false"),
    ],
    ['in flight when the connection dropped', new MaxRetriesPerRequestError(1)],
    ['client closed for good', new Error('Connection is closed.')],
    ['BullMQ connection closed', new ConnectionClosedError()],
    ['refused', socketError('ECONNREFUSED', 'connect ECONNREFUSED 10.0.0.9:6380')],
    ['reset', socketError('ECONNRESET', 'read ECONNRESET')],
    [
      'no sentinel named a reachable master',
      new Error('All sentinels are unreachable. Retrying from scratch after 200ms.'),
    ],
  ])('%s: 503 naming the address', (_case, error) => {
    expect(controlUnavailableReason(error)).toBe('is unreachable');
    const mapped = controlStoreError(error, control);
    expect(mapped).toBeInstanceOf(SlotfleetError);
    expect(mapped?.code).toBe(ErrorCode.ControlStore);
    expect(statusForCode(mapped!.code)).toBe(503);
    expect(mapped?.message).toMatch(/^control Redis at 10\.0\.0\.9:6380 is unreachable; /);
    expect(mapped?.message).not.toContain(control.password);
  });

  it.each([
    ['LOADING Redis is loading the dataset in memory', /is loading its data/],
    ['MISCONF Errors writing to the AOF file: No space left on device', /cannot persist/],
    ["READONLY You can't write against a read only replica.", /read-only replica/],
    ['WRONGPASS invalid username-password pair or user is disabled.', /refused our credentials/],
    ["OOM command not allowed when used memory > 'maxmemory'.", /out of memory/],
  ])('a server that is up but cannot serve (%s) is named too', (reply, reason) => {
    const mapped = controlStoreError(new ReplyError(reply), control);
    expect(mapped?.code).toBe(ErrorCode.ControlStore);
    expect(mapped?.message).toMatch(reason);
  });

  it.each([
    ['a bug', new TypeError("Cannot read properties of undefined (reading 'id')")],
    ['a script error', new ReplyError('ERR Error running script: attempt to compare nil with number')],
    ['not an Error', 'ECONNREFUSED'],
  ])('leaves %s alone (500, not 503)', (_case, error) => {
    expect(controlUnavailableReason(error)).toBeUndefined();
    expect(controlStoreError(error, control)).toBeUndefined();
  });

  it('brackets an IPv6 address', () => {
    const mapped = controlStoreError(new Error('Connection is closed.'), { host: '::1', port: 6379 });
    expect(mapped?.message).toMatch(/^control Redis at \[::1\]:6379 is unreachable/);
  });
});
