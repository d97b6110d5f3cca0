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

export const NATS_CLI_OPTIONS = {
  nats: { type: 'string' },
  'nats-token': { type: 'string' },
  'nats-user': { type: 'string' },
  'nats-password': { type: 'string' },
  'nats-creds': { type: 'string' },
  'nats-tls-ca': { type: 'string' },
  'nats-tls-cert': { type: 'string' },
  'nats-tls-key': { type: 'string' },
} as const;

export const NATS_OPTIONS_HELP = `NATS (also ARROW_QUANT_NATS_URL, _TOKEN, _USER, _PASSWORD, _CREDS, _TLS_CA, _TLS_CERT, _TLS_KEY):
  --nats URL[,URL…]          NATS servers (nats:// or tls://)
  --nats-token T | --nats-user U --nats-password P | --nats-creds FILE
  --nats-tls-ca FILE [--nats-tls-cert FILE --nats-tls-key FILE]   TLS (and client certificate)`;

type NatsValues = Partial<Record<keyof typeof NATS_CLI_OPTIONS, string>>;

export function natsOptionsFrom(values: NatsValues, env: NodeJS.ProcessEnv, name: string): NatsOptions | null {
  const pick = (flag: keyof typeof NATS_CLI_OPTIONS, envName: string) => values[flag] ?? env[`ARROW_QUANT_NATS_${envName}`];
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
  const user = pick('nats-user', 'USER');
  const pass = pick('nats-password', 'PASSWORD');
  if ((user && !pass) || (pass && !user)) throw new UsageError('--nats-user and --nats-password go together');
  return {
    servers,
    token: pick('nats-token', 'TOKEN'),
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
