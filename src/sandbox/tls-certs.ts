/**
 * A throwaway certificate authority for TLS sandboxes, made with the `openssl` command line: one CA,
 * one server certificate every node presents (valid for 127.0.0.1 and localhost), and one client
 * certificate for slotfleet and the sandbox's own connections. Keys are EC P-256, which openssl makes
 * in milliseconds where RSA takes a noticeable share of a test's start.
 *
 * The server certificate is also a client certificate (extendedKeyUsage serverAuth, clientAuth): with
 * `tls-cluster yes` and `tls-replication yes` a node presents its `tls-cert-file` when it connects to
 * another node (cluster bus, replication, MIGRATE), and `tls-auth-clients yes` checks it there too.
 * Calling `createSandboxCertificates` twice gives two unrelated CAs: the second is a wrong CA for
 * servers started with the first.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ConnectionOptions } from 'node:tls';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

/** PEM files, each a path. */
export interface SandboxCertificates {
  /** The directory holding them all; `removeSandboxCertificates` deletes it. */
  readonly dir: string;
  /** The CA certificate: servers trust clients signed by it, clients trust servers signed by it. */
  readonly caFile: string;
  /** What every server presents (`tls-cert-file`): subjectAltName IP:127.0.0.1, DNS:localhost. */
  readonly serverCertFile: string;
  readonly serverKeyFile: string;
  /** What clients present when the server asks (`tls-auth-clients yes`). */
  readonly clientCertFile: string;
  readonly clientKeyFile: string;
}

export interface SandboxCertificatesOptions {
  /** Where to write the files. @defaultValue a new `os.tmpdir()/slotfleet-tls-*` */
  dir?: string;
  /** The CA's common name, to tell two CAs apart in messages. @defaultValue `slotfleet sandbox CA <random>` */
  caName?: string;
  /** How long every certificate is valid. @defaultValue 7 */
  validDays?: number;
}

/** An openssl missing is a failure that names how to install it, as a missing redis-server is. */
export const OPENSSL_INSTALL_HINT = 'sudo apt-get install openssl';

const CURVE = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1'];

/** Our own openssl config, so the system's openssl.cnf (and its default extensions) plays no part. */
const OPENSSL_CONFIG = `[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
`;

export async function createSandboxCertificates(
  options: SandboxCertificatesOptions = {},
): Promise<SandboxCertificates> {
  const dir = options.dir ?? (await mkdtemp(join(tmpdir(), 'slotfleet-tls-')));
  const days = String(options.validDays ?? 7);
  const path = (name: string) => join(dir, name);
  const certificates: SandboxCertificates = {
    dir,
    caFile: path('ca.crt'),
    serverCertFile: path('server.crt'),
    serverKeyFile: path('server.key'),
    clientCertFile: path('client.crt'),
    clientKeyFile: path('client.key'),
  };
  try {
    const config = path('openssl.cnf');
    await writeFile(config, OPENSSL_CONFIG);
    const caName = options.caName ?? `slotfleet sandbox CA ${randomBytes(4).toString('hex')}`;
    // biome-ignore format: each option next to its value reads as the openssl command line it is
    await openssl([
      'req', '-x509', '-new', '-nodes', ...CURVE, '-config', config, '-extensions', 'ca',
      '-subj', `/CN=${caName}`, '-days', days,
      '-keyout', path('ca.key'), '-out', certificates.caFile,
    ]);
    const sign = async (name: string, commonName: string, extensions: string) => {
      // biome-ignore format: as above
      await openssl([
        'req', '-new', '-nodes', ...CURVE, '-config', config, '-subj', `/CN=${commonName}`,
        '-keyout', path(`${name}.key`), '-out', path(`${name}.csr`),
      ]);
      // biome-ignore format: as above
      await openssl([
        'x509', '-req', '-in', path(`${name}.csr`),
        '-CA', certificates.caFile, '-CAkey', path('ca.key'),
        '-set_serial', `0x${randomBytes(8).toString('hex')}`, '-days', days,
        '-extfile', config, '-extensions', extensions, '-out', path(`${name}.crt`),
      ]);
    };
    await Promise.all([sign('server', 'localhost', 'server'), sign('client', 'slotfleet', 'client')]);
    return certificates;
  } catch (error) {
    if (options.dir === undefined) await rm(dir, { recursive: true, force: true });
    throw error;
  }
}

/**
 * What a Node client (ioredis, tls.connect) needs to talk to a sandbox server: the CA to verify it,
 * and the client certificate it may ask for. Read now, so a later removal of the files does not matter.
 */
export function sandboxTlsOptions(certificates: SandboxCertificates): ConnectionOptions {
  return {
    ca: readFileSync(certificates.caFile),
    cert: readFileSync(certificates.clientCertFile),
    key: readFileSync(certificates.clientKeyFile),
  };
}

export async function removeSandboxCertificates(certificates: SandboxCertificates): Promise<void> {
  await rm(certificates.dir, { recursive: true, force: true });
}

async function openssl(args: readonly string[]): Promise<void> {
  try {
    await execFileAsync('openssl', [...args], { timeout: 30_000 });
  } catch (error) {
    const failure = error as NodeJS.ErrnoException & { stderr?: string };
    if (failure.code === 'ENOENT') {
      throw new Error(`openssl is not installed; the TLS sandbox needs it: ${OPENSSL_INSTALL_HINT}`, {
        cause: error,
      });
    }
    throw new Error(`openssl ${args[0]} failed: ${(failure.stderr ?? failure.message).trim()}`, {
      cause: error,
    });
  }
}
