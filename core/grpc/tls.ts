// TLS for the gRPC data plane. Options are loaded from PEM files once, at start-up
// (loadServerTls / loadClientTls), where a missing file, a non-PEM file or a key that does not
// belong to its certificate fails with the option and file named, instead of later as an
// opaque handshake failure. No options (null/undefined) means plaintext, which only an
// operator who configures no TLS gets.

import { readFileSync } from 'node:fs';
import { createSecureContext } from 'node:tls';
import { ChannelCredentials, ServerCredentials, type ChannelOptions } from '@grpc/grpc-js';
import { TlsConfigError } from './errors.js';

/** Server TLS as configured: PEM file paths. */
export interface ServerTlsFiles {
  certFile: string;
  keyFile: string;
  /** CA bundle that client certificates must chain to */
  clientCaFile?: string;
  /** mutual TLS: refuse clients without such a certificate (default: true when clientCaFile is given) */
  requireClientCert?: boolean;
}

/** Server TLS, loaded. */
export interface ServerTlsOptions {
  cert: Buffer;
  key: Buffer;
  clientCa?: Buffer | null;
  requireClientCert?: boolean;
}

/** Client TLS as configured; every field is optional ({} = TLS trusting the system roots). */
export interface ClientTlsFiles {
  /** CA bundle to trust for the server; the system roots when absent */
  caFile?: string;
  /** client certificate and key, for mutual TLS */
  certFile?: string;
  keyFile?: string;
  /** the name to verify the server certificate against, when it is not the address's host */
  serverNameOverride?: string;
}

/** Client TLS, loaded. */
export interface ClientTlsOptions {
  ca?: Buffer | null;
  cert?: Buffer | null;
  key?: Buffer | null;
  serverNameOverride?: string;
}

function readPem(option: string, file: string): Buffer {
  let pem: Buffer;
  try {
    pem = readFileSync(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : code === 'EISDIR' ? 'it is a directory' : (code ?? (e as Error).message);
    throw new TlsConfigError(`TLS ${option} ${file} cannot be read: ${why}`, option, file, { cause: e });
  }
  if (!pem.includes('-----BEGIN ')) throw new TlsConfigError(`TLS ${option} ${file} is not a PEM file (no "-----BEGIN" line)`, option, file);
  return pem;
}

type Option = 'certFile' | 'keyFile' | 'caFile' | 'clientCaFile';

/** Lets OpenSSL parse each file, then the pair, so that bad material fails here with its file named. */
function checkMaterial(files: Partial<Record<Option, string>>, caOption: 'caFile' | 'clientCaFile', pem: { cert?: Buffer; key?: Buffer; ca?: Buffer }): void {
  const attempt = (option: Option, what: string, options: Parameters<typeof createSecureContext>[0]) => {
    try {
      createSecureContext(options);
    } catch (e) {
      throw new TlsConfigError(`TLS ${option} ${files[option]} ${what}: ${(e as Error).message}`, option, files[option], { cause: e });
    }
  };
  if (pem.ca) attempt(caOption, 'holds no usable CA certificate', { ca: pem.ca });
  if (pem.cert) attempt('certFile', 'holds no usable certificate', { cert: pem.cert });
  if (pem.cert && pem.key) attempt('keyFile', `does not hold a usable private key for ${files.certFile}`, { cert: pem.cert, key: pem.key });
}

export function loadServerTls(files: ServerTlsFiles): ServerTlsOptions {
  const requireClientCert = files.requireClientCert ?? Boolean(files.clientCaFile);
  if (requireClientCert && !files.clientCaFile) {
    throw new TlsConfigError('TLS requireClientCert needs clientCaFile: the CA that client certificates must be signed by', 'clientCaFile');
  }
  const cert = readPem('certFile', files.certFile);
  const key = readPem('keyFile', files.keyFile);
  const clientCa = files.clientCaFile ? readPem('clientCaFile', files.clientCaFile) : undefined;
  checkMaterial(files, 'clientCaFile', { cert, key, ca: clientCa });
  return { cert, key, clientCa: clientCa ?? null, requireClientCert };
}

export function loadClientTls(files: ClientTlsFiles): ClientTlsOptions {
  if (Boolean(files.certFile) !== Boolean(files.keyFile)) {
    const missing = files.certFile ? 'keyFile' : 'certFile';
    throw new TlsConfigError(`TLS client ${missing} is missing: a client certificate needs both certFile and keyFile`, missing);
  }
  const ca = files.caFile ? readPem('caFile', files.caFile) : undefined;
  const cert = files.certFile ? readPem('certFile', files.certFile) : undefined;
  const key = files.keyFile ? readPem('keyFile', files.keyFile) : undefined;
  checkMaterial(files, 'caFile', { cert, key, ca });
  return { ca: ca ?? null, cert: cert ?? null, key: key ?? null, ...(files.serverNameOverride ? { serverNameOverride: files.serverNameOverride } : {}) };
}

/** Server credentials: TLS (mutual when requireClientCert) or, without options, plaintext. */
export function serverCredentials(tls?: ServerTlsOptions | null): ServerCredentials {
  if (!tls) return ServerCredentials.createInsecure();
  return ServerCredentials.createSsl(tls.clientCa ?? null, [{ cert_chain: tls.cert, private_key: tls.key }], tls.requireClientCert ?? false);
}

/** Channel credentials and the channel options they need (server name override). */
export function clientCredentials(tls?: ClientTlsOptions | null): { credentials: ChannelCredentials; channelOptions: ChannelOptions } {
  if (!tls) return { credentials: ChannelCredentials.createInsecure(), channelOptions: {} };
  return {
    credentials: ChannelCredentials.createSsl(tls.ca ?? null, tls.key ?? null, tls.cert ?? null),
    channelOptions: tls.serverNameOverride ? { 'grpc.ssl_target_name_override': tls.serverNameOverride } : {},
  };
}
