// The NATS connection options of the CLI (core/cluster/nats-options.ts turns them into a connection).

import type { Command } from 'commander';

export function addNatsOptions(cmd: Command): Command {
  cmd.optionsGroup('NATS (each also from ARROW_QUANT_NATS_URL, _TOKEN, _TOKEN_FILE, _USER, _PASSWORD, _PASSWORD_FILE, _CREDS, _TLS_CA, _TLS_CERT, _TLS_KEY):');
  return cmd
    .option('--nats <urls>', 'NATS servers, comma-separated (nats://host:port or tls://host:port)')
    .option('--nats-token <token>', 'token authentication (prefer ARROW_QUANT_NATS_TOKEN: argv is visible to other users)')
    .option('--nats-token-file <file>', 'read the token from this file (e.g. a mounted secret)')
    .option('--nats-user <user>', 'user name (with --nats-password)')
    .option('--nats-password <password>', 'password (prefer ARROW_QUANT_NATS_PASSWORD)')
    .option('--nats-password-file <file>', 'read the password from this file')
    .option('--nats-creds <file>', 'a NATS credentials file')
    .option('--nats-tls-ca <file>', 'trust this CA for TLS to NATS')
    .option('--nats-tls-cert <file>', 'client certificate for NATS (with --nats-tls-key)')
    .option('--nats-tls-key <file>', 'the private key of --nats-tls-cert');
}
