/**
 * Failed TLS handshakes, as Node reports them on the socket of a cluster node or the control Redis,
 * become TLS_FAILED (503) naming what is wrong, and never look like a plain unreachable server. The
 * error texts and codes are those Node 20 gave against sandbox servers (test/integration/tls.test.ts
 * meets the wrong CA for real).
 */
import { describe, expect, it } from 'vitest';
import { controlStoreError, errorBodyOf, statusForCode } from '../../src/producer/http-errors.js';
import { describeTlsFailure, mapRedisError } from '../../src/shared/cluster/error-map.js';
import { ErrorCode } from '../../src/shared/errors.js';
import { controlUnavailableReason } from '../../src/shared/queue/connections.js';

function tlsError(code: string, message: string): Error {
  return Object.assign(new Error(message), { code });
}

const OPENSSL_LINE = (reason: string, alert: number) =>
  `801CE3F6C27F0000:error:0A000418:SSL routines:ssl3_read_bytes:${reason}:../deps/openssl/openssl/ssl/record/rec_layer_s3.c:1601:SSL alert number ${alert}`;

describe('TLS failures in the error map', () => {
  it.each([
    [
      tlsError('SELF_SIGNED_CERT_IN_CHAIN', 'self-signed certificate in certificate chain'),
      /^TLS: the server's certificate is not signed by a CA slotfleet trusts \(SLOTFLEET_TLS_CA_FILE's.*\(self-signed certificate in certificate chain\)$/,
    ],
    [
      tlsError('UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'unable to verify the first certificate'),
      /not signed by a CA slotfleet trusts.*\(unable to verify the first certificate\)$/,
    ],
    [
      tlsError('UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'unable to get local issuer certificate'),
      /not signed by a CA slotfleet trusts/,
    ],
    [
      tlsError('DEPTH_ZERO_SELF_SIGNED_CERT', 'self-signed certificate'),
      /self-signed and is not SLOTFLEET_TLS_CA_FILE's certificate/,
    ],
    [
      tlsError(
        'ERR_TLS_CERT_ALTNAME_INVALID',
        "Hostname/IP does not match certificate's altnames: Host: other.example. is not in the cert's altnames: IP Address:127.0.0.1, DNS:localhost",
      ),
      /does not name the address connected to.*SLOTFLEET_TLS_SERVERNAME.*\(Hostname\/IP does not match/,
    ],
    [tlsError('CERT_HAS_EXPIRED', 'certificate has expired'), /certificate has expired \(certificate has/],
    [tlsError('CERT_NOT_YET_VALID', 'certificate is not yet valid'), /not valid yet/],
    [
      tlsError(
        'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED',
        OPENSSL_LINE('tlsv13 alert certificate required', 116),
      ),
      /requires a client certificate: set SLOTFLEET_TLS_CERT_FILE and SLOTFLEET_TLS_KEY_FILE \(tlsv13 alert certificate required\)$/,
    ],
    [
      tlsError('ERR_SSL_TLSV1_ALERT_UNKNOWN_CA', OPENSSL_LINE('tlsv1 alert unknown ca', 48)),
      /does not trust slotfleet's client certificate \(SLOTFLEET_TLS_CERT_FILE\).*\(tlsv1 alert unknown ca\)$/,
    ],
    [
      tlsError(
        'EPROTO',
        'write EPROTO 80:error:0A00010B:SSL routines:ssl3_get_record:wrong version number:../ssl/record/ssl3_record.c:354:',
      ),
      /does not answer in TLS on this port: a rediss:\/\/ URL to a plaintext port\? \(wrong version number\)$/,
    ],
  ])('%s', (error, expected) => {
    expect(describeTlsFailure(error)).toMatch(expected);
    const mapped = mapRedisError(error, 'CLUSTER NODES on 127.0.0.1:7000');
    expect(mapped.code).toBe(ErrorCode.TlsFailed);
    expect(mapped.message).toMatch(/^CLUSTER NODES on 127\.0\.0\.1:7000: TLS: /);
    expect(statusForCode(mapped.code)).toBe(503);
    // The cause stays on the error for logs, but the body is the message alone.
    expect(mapped.cause).toBe(error);
    const body = errorBodyOf(mapped);
    expect(body).toEqual({
      statusCode: 503,
      error: 'Service Unavailable',
      code: 'TLS_FAILED',
      message: mapped.message,
    });
    expect(JSON.stringify(body)).not.toMatch(/\bat .*\.(js|ts):\d+/);
  });

  it.each([
    [
      'a refused connect',
      tlsError('ECONNREFUSED', 'connect ECONNREFUSED 127.0.0.1:7000'),
      ErrorCode.Connection,
    ],
    // A plaintext client on a TLS port: the server just closes; nothing says TLS.
    ['a reset', tlsError('ECONNRESET', 'read ECONNRESET'), ErrorCode.Connection],
    [
      'a reply',
      new Error('WRONGPASS invalid username-password pair or user is disabled.'),
      ErrorCode.AuthFailed,
    ],
    ['an unknown SSL code', tlsError('ERR_SSL_SOMETHING_NEW', 'something new'), ErrorCode.RedisError],
  ])('leaves %s to the other rows', (_case, error, code) => {
    expect(describeTlsFailure(error)).toBeUndefined();
    expect(mapRedisError(error, 'test').code).toBe(code);
  });
});

describe('TLS failures of the control Redis', () => {
  const control = { host: '10.0.0.9', port: 6380, password: 'hunter2-secret' };

  it('names the TLS problem, not "unreachable"', () => {
    const error = tlsError('SELF_SIGNED_CERT_IN_CHAIN', 'self-signed certificate in certificate chain');
    expect(controlUnavailableReason(error)).toMatch(
      /^cannot be used: TLS: the server's certificate is not signed/,
    );
    const mapped = controlStoreError(error, control);
    expect(mapped?.code).toBe(ErrorCode.ControlStore);
    expect(statusForCode(mapped!.code)).toBe(503);
    expect(mapped?.message).toMatch(
      /^control Redis at 10\.0\.0\.9:6380 cannot be used: TLS: the server's certificate is not signed by a CA slotfleet trusts/,
    );
    expect(mapped?.message).not.toContain(control.password);
  });

  it("names the connection's remembered TLS failure where the command only says it could not be sent", () => {
    const offline = new Error("Stream isn't writeable and enableOfflineQueue options is false");
    const handshake = tlsError(
      'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED',
      OPENSSL_LINE('tlsv13 alert certificate required', 116),
    );
    expect(controlStoreError(offline, control)?.message).toMatch(/ is unreachable; /);
    expect(controlStoreError(offline, control, handshake)?.message).toMatch(
      /^control Redis at 10\.0\.0\.9:6380 cannot be used: TLS: the server requires a client certificate/,
    );
    // Not a control Redis failure at all: the remembered handshake does not make it one.
    expect(controlStoreError(new TypeError('a bug'), control, handshake)).toBeUndefined();
  });
});
