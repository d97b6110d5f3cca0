#!/usr/bin/env node
// arrowquant: the command-line entry. Exit codes (interfaces.md): 0 ok, 1 runtime failure,
// 2 bad input or usage, 3 a layer failed its quality bar.

import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { ArrowQuantError, exitCodeOf } from '../core/errors.js';
import { packageVersion } from '../core/package-info.js';
import { processIO, type CommandIO } from './commands/io.js';

type Command = (argv: string[], io: CommandIO) => Promise<number>;

// Commands load on demand: `--version` and `--help` stay fast.
const COMMANDS: Record<string, { load: () => Promise<Command>; summary: string }> = {
  plan: { load: async () => (await import('./commands/plan.js')).planCommand, summary: 'scan headers, print the per-layer plan and totals vs target' },
  quantize: { load: async () => (await import('./commands/quantize.js')).quantizeCommand, summary: 'quantize a model into one Arrow file on this machine (threads, native kernels)' },
  worker: { load: async () => (await import('./commands/worker.js')).workerCommand, summary: 'run a cluster worker (NATS JetStream tasks, gRPC shard uploads)' },
  status: { load: async () => (await import('./commands/status.js')).statusCommand, summary: 'cluster workers and jobs, from NATS' },
  cancel: { load: async () => (await import('./commands/status.js')).cancelCommand, summary: 'cancel a cluster job' },
  inspect: { load: async () => (await import('./commands/inspect.js')).inspectCommand, summary: 'per-layer table of an output file and its summary' },
  verify: { load: async () => (await import('./commands/verify.js')).verifyCommand, summary: 'check an output file against its source model (hashes, shapes, SQNR)' },
  dequantize: { load: async () => (await import('./commands/dequantize.js')).dequantizeCommand, summary: 'turn an output file back into safetensors' },
  'sample-model': { load: async () => (await import('./commands/sample-model.js')).sampleModelCommand, summary: 'write a small Llama-shaped safetensors model to try things on' },
};

function usage(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((c) => c.length));
  return [
    `arrowquant ${packageVersion()} — mixed-precision weight quantizer: safetensors in, one Arrow IPC file out`,
    '',
    'usage: arrowquant <command> [options]   (arrowquant <command> --help for its options)',
    '',
    ...Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`),
    '',
    'Exit codes: 0 ok, 1 runtime failure, 2 bad input or usage, 3 quality bar failed.',
  ].join('\n');
}

/** Which quantization kernel runs here, and which were compiled (the output never depends on it). */
async function kernelLine(env: NodeJS.ProcessEnv): Promise<string> {
  const { compiledVariants, nativeAddonStatus, selectKernel } = await import('../native/kernels.js');
  try {
    const { kernel, warning } = selectKernel(env);
    const status = nativeAddonStatus();
    const compiled = status.loaded ? compiledVariants().join(', ') : 'none';
    return `kernel: ${kernel.variant} (native variants compiled: ${compiled}; ARROW_QUANT_KERNEL=scalar|avx2|avx512|neon|reference overrides)${warning ? `\nwarning: ${warning}` : ''}`;
  } catch (e) {
    return `kernel: unavailable (${(e as Error).message})`;
  }
}

export async function main(argv: string[], io: CommandIO = processIO): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === undefined || cmd === '--help' || cmd === '-h' || cmd === 'help') {
    io.out(usage() + '\n');
    return cmd === undefined ? 2 : 0;
  }
  if (cmd === '--version' || cmd === '-V') {
    io.out(`arrowquant ${packageVersion()}\n${await kernelLine(io.env)}\n`);
    return 0;
  }
  const command = COMMANDS[cmd];
  if (!command) {
    io.err(`arrowquant: unknown command "${cmd}"\n\n${usage()}\n`);
    return 2;
  }
  try {
    return await (await command.load())(rest, io);
  } catch (e) {
    const code = exitCodeOf(e);
    if (e instanceof ArrowQuantError) io.err(`arrowquant ${cmd}: ${e.message}\n`);
    else io.err(`arrowquant ${cmd}: internal error: ${(e as Error)?.stack ?? String(e)}\n`);
    return code;
  }
}

// Run when executed (directly, or through npx / a bin symlink), not when imported.
const isEntry = (() => {
  try {
    return process.argv[1] !== undefined && realpathSync(process.argv[1]) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
})();
if (isEntry) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (e) => {
      process.stderr.write(`arrowquant: ${(e as Error)?.stack ?? String(e)}\n`);
      process.exitCode = 1;
    },
  );
}
