// Test certificates made with the openssl CLI in a temporary directory: a CA, a server
// certificate for localhost / 127.0.0.1 signed by it, a client certificate signed by it, and an
// unrelated CA (to show that trusting the wrong CA fails). EC P-256 keys, valid for two days.
// Used by the gRPC tests and reusable for NATS TLS.

import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface PemPair {
  /** paths */
  certFile: string;
  keyFile: string;
  /** contents */
  cert: Buffer;
  key: Buffer;
}

export interface TestCerts {
  dir: string;
  ca: PemPair;
  /** SAN: DNS:localhost, IP:127.0.0.1; extendedKeyUsage serverAuth */
  server: PemPair;
  /** CN=arrowquant-test-client; extendedKeyUsage clientAuth */
  client: PemPair;
  /** a CA that signed none of the above */
  otherCa: PemPair;
  cleanup(): Promise<void>;
}

const EC_KEY = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

async function openssl(dir: string, args: string[]): Promise<void> {
  try {
    await run('openssl', args, { cwd: dir });
  } catch (e) {
    const err = e as Error & { stderr?: string };
    throw new Error(`openssl ${args[0]} failed: ${err.stderr || err.message}`);
  }
}

async function load(dir: string, name: string): Promise<PemPair> {
  const certFile = join(dir, `${name}.crt`);
  const keyFile = join(dir, `${name}.key`);
  return { certFile, keyFile, cert: await readFile(certFile), key: await readFile(keyFile) };
}

async function makeCa(dir: string, name: string, cn: string): Promise<PemPair> {
  await openssl(dir, [
    'req', '-x509', ...EC_KEY, '-keyout', `${name}.key`, '-out', `${name}.crt`, '-days', '2', '-subj', `/CN=${cn}`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  return load(dir, name);
}

async function makeLeaf(dir: string, name: string, cn: string, ca: string, extensions: string): Promise<PemPair> {
  await writeFile(join(dir, `${name}.ext`), `${extensions}\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n`);
  await openssl(dir, ['req', ...EC_KEY, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${cn}`]);
  await openssl(dir, [
    'x509', '-req', '-in', `${name}.csr`, '-CA', `${ca}.crt`, '-CAkey', `${ca}.key`, '-set_serial', `0x${randomBytes(8).toString('hex')}`,
    '-days', '2', '-out', `${name}.crt`, '-extfile', `${name}.ext`,
  ]);
  return load(dir, name);
}

export async function generateTestCerts(): Promise<TestCerts> {
  const dir = await mkdtemp(join(tmpdir(), 'aq-certs-'));
  try {
    const [ca, otherCa] = await Promise.all([makeCa(dir, 'ca', 'ArrowQuant Test CA'), makeCa(dir, 'other-ca', 'Unrelated Test CA')]);
    const [server, client] = await Promise.all([
      makeLeaf(dir, 'server', 'localhost', 'ca', 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth'),
      makeLeaf(dir, 'client', 'arrowquant-test-client', 'ca', 'extendedKeyUsage=clientAuth'),
    ]);
    return { dir, ca, server, client, otherCa, cleanup: () => rm(dir, { recursive: true, force: true }) };
  } catch (e) {
    await rm(dir, { recursive: true, force: true });
    throw e;
  }
}
