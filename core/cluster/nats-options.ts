// Connecting to NATS: servers, credentials (token, user/password, creds file) and TLS, from
// command-line options or ARROW_QUANT_NATS_* variables (secrets belong in the environment, not
// in argv). Reconnects forever: a NATS restart is survived by coordinator and workers.

import { readFileSync } from 'node:fs';
import { connect, credsAuthenticator, type ConnectionOptions, type NatsConnection } from 'nats';
import { UsageError } from '../errors.js';
import { NatsConnectionError } from './errors.js';

export interface NatsOptions {
  servers: string[];
  token?: string;
  user?: string;
  pass?: string;
  credsFile?: string;
  tls?: { caFile?: string; certFile?: string; keyFile?: string } | null;
  name: string;
}

/** The NATS flags' values, keyed by flag name (the CLI declares them in cli/nats-options.ts). */
export type NatsFlag =
  | 'nats' | 'nats-token' | 'nats-token-file' | 'nats-user' | 'nats-password' | 'nats-password-file' | 'nats-creds' | 'nats-tls-ca' | 'nats-tls-cert' | 'nats-tls-key';
export type NatsValues = Partial<Record<NatsFlag, string>>;

export function natsOptionsFrom(values: NatsValues, env: NodeJS.ProcessEnv, name: string): NatsOptions | null {
  const pick = (flag: NatsFlag, envName: string) => values[flag] ?? env[`ARROW_QUANT_NATS_${envName}`];
  const url = pick('nats', 'URL');
  if (!url) return null;
  const servers = url.split(',').map((s) => s.trim()).filter(Boolean);
  for (const s of servers) {
    if (!/^(nats|tls|ws|wss):\/\/[^\s]+$|^[^\s:/]+:\d+$/.test(s)) throw new UsageError(`--nats: "${s}" is not a NATS server URL (nats://host:port or tls://host:port)`);
  }
  const ca = pick('nats-tls-ca', 'TLS_CA');
  const cert = pick('nats-tls-cert', 'TLS_CERT');
  const key = pick('nats-tls-key', 'TLS_KEY');
  if ((cert && !key) || (key && !cert)) throw new UsageError('--nats-tls-cert and --nats-tls-key go together');
  // A secret from a file (a mounted Kubernetes secret) stays out of argv and the environment.
  const secret = (flag: NatsFlag, envName: string): string | undefined => {
    const fileFlag = `${flag}-file` as NatsFlag;
    const fromFlags = values[flag] !== undefined || values[fileFlag] !== undefined;
    const direct = fromFlags ? values[flag] : env[`ARROW_QUANT_NATS_${envName}`];
    const file = fromFlags ? values[fileFlag] : env[`ARROW_QUANT_NATS_${envName}_FILE`];
    if (file === undefined) return direct;
    if (direct !== undefined) throw new UsageError(`--${flag} and --${fileFlag} exclude each other`);
    let text: string;
    try {
      text = readFileSync(file, 'utf8').replace(/\r?\n$/, '');
    } catch (e) {
      throw new UsageError(`--${flag}-file ${file}: cannot read it (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
    }
    if (!text) throw new UsageError(`--${flag}-file ${file} is empty`);
    return text;
  };
  const user = pick('nats-user', 'USER');
  const pass = secret('nats-password', 'PASSWORD');
  if ((user && !pass) || (pass && !user)) throw new UsageError('--nats-user and --nats-password go together');
  return {
    servers,
    token: secret('nats-token', 'TOKEN'),
    user,
    pass,
    credsFile: pick('nats-creds', 'CREDS'),
    tls: ca || cert || servers.some((s) => s.startsWith('tls://')) ? { caFile: ca, certFile: cert, keyFile: key } : null,
    name,
  };
}

export async function connectNats(o: NatsOptions): Promise<NatsConnection> {
  const opts: ConnectionOptions = {
    servers: o.servers,
    name: o.name,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 250,
    pingInterval: 10_000,
    timeout: 10_000,
  };
  if (o.token) opts.token = o.token;
  if (o.user) Object.assign(opts, { user: o.user, pass: o.pass });
  if (o.credsFile) {
    let creds: Uint8Array;
    try {
      creds = readFileSync(o.credsFile);
    } catch (e) {
      throw new NatsConnectionError(`cannot read NATS credentials ${o.credsFile}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, o.servers);
    }
    opts.authenticator = credsAuthenticator(creds);
  }
  if (o.tls) {
    opts.tls = {};
    if (o.tls.caFile) opts.tls.caFile = o.tls.caFile;
    if (o.tls.certFile) Object.assign(opts.tls, { certFile: o.tls.certFile, keyFile: o.tls.keyFile });
  }
  try {
    return await connect(opts);
  } catch (e) {
    throw new NatsConnectionError(`cannot connect to NATS at ${o.servers.join(', ')}: ${(e as Error).message}`, o.servers, { cause: e });
  }
}
