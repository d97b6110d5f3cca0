#!/usr/bin/env node
// arrowquant: the command-line entry. Exit codes: 0 ok, 1 runtime failure, 2 bad input or usage,
// 3 a layer failed its quality bar, 130 cancelled. Commander parses; main() returns the exit code
// (commander never calls process.exit here), so tests can call it in-process.

import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { CommanderError } from 'commander';
import { ArrowQuantError, exitCodeOf } from '../core/errors.js';
import { packageVersion } from '../core/package-info.js';
import { processIO, type CommandIO } from './commands/io.js';
import { printable } from './printable.js';
import { buildProgram, type CommandImpl, type Dispatch, type OptionValues } from './program.js';

/** Which quantization kernel runs here, and which were compiled (the output never depends on it). */
async function kernelLine(env: NodeJS.ProcessEnv): Promise<string> {
  const { compiledVariants, nativeAddonStatus, selectKernel } = await import('../native/kernels.js');
  try {
    const { kernel, warning } = selectKernel(env);
    const status = nativeAddonStatus();
    const compiled = status.loaded ? compiledVariants().join(', ') : 'none';
    return `kernel: ${kernel.variant} (native variants compiled: ${compiled})${warning ? `\nwarning: ${warning}` : ''}`;
  } catch (e) {
    return `kernel: unavailable (${(e as Error).message})`;
  }
}

/**
 * Parse `argv` with every command's options and hand the result to `dispatch`. Usage errors
 * (unknown option or command, bad value, missing argument) are printed with a suggestion and
 * give 2; --help gives 0. Returns null when dispatch was reached.
 */
export async function parseCommandLine(argv: string[], io: Pick<CommandIO, 'out' | 'err'>, dispatch: Dispatch): Promise<number | null> {
  const program = buildProgram(packageVersion(), dispatch);
  for (const cmd of [program, ...program.commands]) {
    cmd.exitOverride().configureOutput({ writeOut: (s) => io.out(s), writeErr: (s) => io.err(s) });
  }
  try {
    await program.parseAsync(argv, { from: 'user' });
    return null;
  } catch (e) {
    if (!(e instanceof CommanderError)) throw e;
    // help shown on request: 0; help shown for want of a command, and every parse error: usage, 2
    return e.code === 'commander.helpDisplayed' || (e.code === 'commander.help' && e.exitCode === 0) ? 0 : 2;
  }
}

export async function main(argv: string[], io: CommandIO = processIO): Promise<number> {
  if (argv[0] === '--version' || argv[0] === '-V') {
    io.out(`arrowquant ${packageVersion()}\n${await kernelLine(io.env)}\n`);
    return 0;
  }
  let code = 0;
  let running = '';
  const run = async (name: string, load: () => Promise<CommandImpl>, args: string[], values: OptionValues) => {
    running = name;
    code = await ((await load()) as (a: string[], v: OptionValues, io: CommandIO) => Promise<number>)(args, values, io);
  };
  try {
    const usage = await parseCommandLine(argv, io, run);
    return usage ?? code;
  } catch (e) {
    if (e instanceof ArrowQuantError) io.err(`arrowquant ${running}: ${printable(e.message, true)}\n`);
    else io.err(`arrowquant ${running}: internal error: ${printable((e as Error)?.stack ?? String(e), true)}\n`);
    return exitCodeOf(e);
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
  // `arrowquant … --help | head`: a reader that goes away is not an error of ours
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code !== 'EPIPE') throw e;
  });
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
