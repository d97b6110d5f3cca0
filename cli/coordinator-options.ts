// The CLI's options for reaching a coordinator service's job API (submit, watch, status, cancel).

import type { Command } from 'commander';

export function addCoordinatorClientOptions(cmd: Command): Command {
  cmd.optionsGroup('Coordinator service (token also from ARROW_QUANT_COORDINATOR_TOKEN):');
  return cmd
    .option('--coordinator <host:port>', 'the job API of an `arrowquant coordinator`')
    .option('--auth-token-file <file>', 'a file holding the bearer token')
    .option('--grpc-tls-ca <file>', 'trust this CA for the coordinator (TLS)')
    .option('--grpc-tls-cert <file>', 'client certificate for mutual TLS (with --grpc-tls-key)')
    .option('--grpc-tls-key <file>', 'the private key of --grpc-tls-cert');
}
