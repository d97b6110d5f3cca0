// The command tree: every command, argument and option with its help text, in one place, so the
// generated --help cannot drift from what is parsed. Implementations load on demand (--help stays fast).

import { Command, Option } from 'commander';
import { SAMPLE_LLAMA } from '../core/model/synthetic-llama.js';
import { addGrpcClientOptions, addGrpcServerOptions } from './grpc-options.js';
import { addNatsOptions } from './nats-options.js';
import { addCoordinatorClientOptions } from './coordinator-options.js';
import { collect, integerAtLeast } from './option-values.js';
import { addConfigOptions } from './options.js';
import type { CommandIO } from './commands/io.js';

/** Option values keyed by the flag's name as typed on the command line ("group-size", "model-root"). */
export type OptionValues = Record<string, unknown>;

/** A command's implementation: its positional arguments and options; resolves to the exit code. */
export type CommandImpl = (args: string[], values: never, io: CommandIO) => Promise<number>;

/** What an action does with the parsed command: run it (main) or only record it (parse checks). */
export type Dispatch = (name: string, load: () => Promise<CommandImpl>, args: string[], values: OptionValues) => Promise<void>;

export const EXIT_CODES_HELP = `Exit codes:
  0    ok
  1    runtime failure (I/O, network, verify found a mismatch)
  2    bad input or usage (unknown option, invalid value, malformed model or config)
  3    a layer failed its quality bar (--fail-fast) or fallbacks broke the size budget
  130  cancelled (SIGINT, SIGTERM or arrowquant cancel)`;

export const DOCS_HELP = `Documentation: README.md; the output format is docs/format.md, the cluster protocol docs/cluster.md.`;

const MEASUREMENT_CACHE_HELP = 'measurement cache for --strategy measured (default $XDG_CACHE_HOME/arrowquant or ~/.cache/arrowquant)';

/** Help text as paragraphs: commander wraps lines to the terminal, so single newlines become spaces. */
const prose = (s: string): string => s.replace(/(?<!\n)\n(?!\n)/g, ' ');

export function buildProgram(version: string, dispatch: Dispatch): Command {
  const program = new Command('arrowquant')
    .description('mixed-precision weight quantizer: safetensors in, one Arrow IPC file out')
    .usage('<command> [options]')
    .option('-V, --version', 'print the version and which quantization kernel runs here')
    .showSuggestionAfterError(true)
    .showHelpAfterError('(run with --help for usage)')
    .addHelpText('after', `\n${EXIT_CODES_HELP}\n\n${DOCS_HELP}\narrowquant ${version}`);

  const command = (name: string, summary: string, load: () => Promise<CommandImpl>): Command => {
    const cmd = program.command(name).summary(summary).description(summary);
    cmd.action(async (...params: unknown[]) => {
      const self = params[params.length - 1] as Command;
      await dispatch(name, load, self.processedArgs.filter((a): a is string => typeof a === 'string'), valuesOf(self));
    });
    return cmd;
  };
  const json = (cmd: Command, what: string) => cmd.option('--json', what);

  // plan
  const plan = command('plan', 'scan headers, print the per-layer plan and totals vs target', async () => (await import('./commands/plan.js')).planCommand)
    .argument('<model>', 'a .safetensors file, or a directory of shards with model.safetensors.index.json')
    .description(prose(`Reads the safetensors headers only (no weights; with --strategy measured it measures every
layer at each candidate width × group size, or reads the measurements from the cache, and picks
the exact optimum for the size target) and prints the per-layer plan: bit width, method, group
size and exact bytes_out (docs/format.md), with totals against the size target; with --strategy
measured also the heuristic and uniform INT4 beside the optimum at their sizes.`));
  json(plan, 'print {"layers": [...], "total_bytes_in", "total_bytes_out", "target_bytes", "target_met", "warnings"} on stdout; with --strategy measured also "allocation" (the comparisons and the size–error curve) and "measurements"');
  plan.option('--cache-dir <dir>', MEASUREMENT_CACHE_HELP);
  addConfigOptions(plan);

  // quantize
  const quantize = command('quantize', 'quantize a model into one Arrow file on this machine (threads, native kernels)', async () => (await import('./commands/quantize.js')).quantizeCommand)
    .argument('<model>', 'a .safetensors file, or a directory of shards with model.safetensors.index.json')
    .description(prose(`Quantizes every layer of <model> into one Arrow IPC file (docs/format.md), on this machine:
an in-process coordinator and a pool of worker threads running the native kernels. The file
appears at -o only when the whole job succeeded.

Cluster mode (--nats URL): this process coordinates the job; the workers of the cluster
quantize (docs/cluster.md). The output is byte-identical to the local run. Run it again after
a crash to resume.`))
    .requiredOption('-o, --output <file>', 'the Arrow file to write (its directory must exist)');
  json(quantize, 'print the run summary as JSON on stdout');
  quantize.option('--cache-dir <dir>', `${MEASUREMENT_CACHE_HELP} (with --nats: the coordinator's; the workers measure only what it lacks)`);
  quantize.optionsGroup('Cluster mode:')
    .option('--listen <host:port>', 'where workers upload shards', '0.0.0.0:0')
    .option('--advertise <host:port>', "the address workers use (default: this host's name and the port)")
    .option('--allow-download', 'workers that cannot read the model files download tensors from here')
    .option('--stall-timeout <seconds>', 'fail the job when no layer arrives for this long, saying why (default 600)', integerAtLeast(1))
    .option('--data <dir>', 'staging directory root (default: next to the output)')
    .option('--reorder-window-mb <n>', 'shard MB held in memory until their turn in the output; the rest is copied from stage files (0: all)', integerAtLeast(0), 256)
    .option('--max-uploads <n>', 'shard uploads received at once (the others wait)', integerAtLeast(1), 4);
  addNatsOptions(quantize);
  addGrpcServerOptions(quantize);
  addConfigOptions(quantize);

  // worker
  const worker = command('worker', 'run a cluster worker (NATS JetStream tasks, gRPC shard uploads)', async () => (await import('./commands/worker.js')).workerCommand)
    .description(prose(`A long-running cluster worker (docs/cluster.md): pulls layer tasks from NATS JetStream, reads
each layer's bytes from the model file when it lies under a --model-root (else downloads it
from the coordinator if the task allows), quantizes with the native kernels, uploads the shard
over gRPC, then acks. SIGTERM finishes in-flight tasks (or releases them after --grace
seconds) and exits.`))
    .option('--concurrency <n>', 'tasks at a time', integerAtLeast(1), 1)
    .option('--threads <n>', 'quantization threads (0 = all cores)', integerAtLeast(0), 0)
    .option('--model-root <dir>', 'a directory whose model files this worker may read (repeatable)', collect)
    .option('--work-dir <dir>', 'scratch space for shards in flight (default: the system temp dir)')
    .option('--grace <seconds>', 'seconds in-flight tasks get on SIGTERM', integerAtLeast(0), 30)
    .option('--id <name>', 'worker id (default: host-pid-random)')
    .option('--allow-download', 'download a tensor from its coordinator when its file is not under a --model-root (only jobs started with --allow-download)')
    .option('--allow-coordinator <host>', 'upload only to coordinators on this host (repeatable; "*.example.com" for a domain, a subnet such as 10.0.0.0/8, or "*" for any; or ARROW_QUANT_ALLOW_COORDINATOR, comma-separated). Default without gRPC TLS: loopback only; with TLS: any host whose certificate --grpc-tls-ca verifies', collect)
    .option('--health-listen <host:port>', 'serve the standard gRPC health service (Kubernetes grpc probes): SERVING while connected and pulling, NOT_SERVING while stopping')
    .option('--metrics-listen <host:port>', 'serve Prometheus metrics at http://HOST:PORT/metrics (layers done, failed, redelivered, bytes, durations, in flight)');
  addNatsOptions(worker);
  addGrpcClientOptions(worker);

  // coordinator, submit, watch
  const coordinator = command('coordinator', 'run the coordinator service: a gRPC job API, jobs queued and run on the cluster', async () => (await import('./commands/coordinator.js')).coordinatorCommand)
    .description(prose(`A long-running coordinator (docs/cluster.md, "The job API"): serves the job API (Submit, Watch, Get, List,
Cancel) and the gRPC health service on --listen, queues submitted jobs and runs them in turn on
the cluster's workers, keeping job state in NATS JetStream so that a restarted coordinator resumes
queued and running jobs. Models are accepted only under a --model-root, outputs only under the
output root. SIGTERM stops taking jobs and gives running ones --grace seconds; what is still
running then is resumed by the next coordinator.`))
    .requiredOption('--listen <host:port>', 'where the job API and the health service listen')
    .requiredOption('--data <dir>', 'staging directory root (and the default output root, DIR/out)')
    .option('--model-root <dir>', 'a directory whose models jobs may read (repeatable; at least one)', collect)
    .option('--output-root <dir>', 'outputs only under this directory (default: --data DIR/out)')
    .option('--max-concurrent-jobs <n>', 'jobs running at a time', integerAtLeast(1), 1)
    .option('--auth-token-file <file>', 'require this bearer token (also ARROW_QUANT_COORDINATOR_TOKEN)')
    .option('--shard-listen <host:port>', 'where workers upload shards', '0.0.0.0:0')
    .option('--advertise <host:port>', "the shard address workers use (default: this host's name and the port)")
    .option('--allow-download', 'workers that cannot read the model files download tensors from here')
    .option('--metrics-listen <host:port>', 'serve Prometheus metrics at http://HOST:PORT/metrics')
    .addOption(new Option('--log-format <format>', 'log lines on stderr').choices(['text', 'json']).default('text'))
    .option('--grace <seconds>', 'seconds running jobs get on SIGTERM', integerAtLeast(0), 30)
    .option('--name <name>', 'the service name: its jobs are kept in the NATS bucket aq-coordinator-NAME (run one coordinator per name)', 'default');
  addNatsOptions(coordinator);
  addGrpcServerOptions(coordinator);

  const submit = command('submit', 'submit a job to a coordinator service and follow it', async () => (await import('./commands/submit.js')).submitCommand)
    .argument('[model]', "the model's path on the coordinator (under one of its --model-root directories)")
    .description(prose(`Sends a job to an \`arrowquant coordinator\` and follows it: a progress bar on a terminal, JSON
events with --json. The exit code is the job's, as a local quantize would give (0/1/2/3/130);
SIGINT cancels the job. --detach prints the job id and returns; --follow JOB follows an existing job.`))
    .option('-o, --output <file>', "the Arrow file to write, on the coordinator (relative paths are under its output root)")
    .option('--detach', 'print the job id and return at once')
    .option('--follow <job>', 'follow an existing job instead of submitting one');
  json(submit, 'print every job event as one JSON line on stdout');
  addCoordinatorClientOptions(submit);
  addConfigOptions(submit);
  const watch = command('watch', 'follow a job of a coordinator service (as submit --follow)', async () => (await import('./commands/submit.js')).watchCommand)
    .argument('<job>', 'the job id (as printed by submit --detach and status)');
  json(watch, 'print every job event as one JSON line on stdout');
  addCoordinatorClientOptions(watch);

  // status, cancel
  const status = command('status', 'cluster workers and jobs, from NATS or a coordinator service', async () => (await import('./commands/status.js')).statusCommand)
    .argument('[job]', 'only this job')
    .description(prose(`The cluster's live workers (id, host, kernel, threads, concurrency, in flight, layers done) and
its jobs (state, layers staged so far), read from NATS.`));
  json(status, 'print {"workers": [...], "jobs": [...]} on stdout');
  addNatsOptions(status);
  addCoordinatorClientOptions(status);
  const cancel = command('cancel', 'cancel a cluster job', async () => (await import('./commands/status.js')).cancelCommand)
    .argument('<job>', 'the job id (as printed by quantize and status)')
    .description(prose(`Asks the coordinator of JOB to cancel it: its pending tasks are withdrawn, workers drop its
layers, and the coordinator exits with code 130 leaving no output.`));
  addNatsOptions(cancel);
  addCoordinatorClientOptions(cancel);

  // inspect, verify, dequantize
  const inspect = command('inspect', 'per-layer table of an output file and its summary', async () => (await import('./commands/inspect.js')).inspectCommand)
    .argument('<file>', 'an ArrowQuant output file')
    .description('Per-layer table (bits, method, bytes, SQNR, cosine, notes) and the file\'s summary (docs/format.md).');
  json(inspect, 'print the file, its source, summary and layers on stdout');
  const verify = command('verify', 'check an output file against its source model (hashes, shapes, SQNR)', async () => (await import('./commands/verify.js')).verifyCommand)
    .argument('<file>', 'an ArrowQuant output file')
    .description(prose(`Re-reads the source and the file, dequantizes every layer from the file's columns, recomputes
SQNR and cosine against the source and checks hashes, shapes, sizes and the summary. Exit 1 on
any mismatch.`))
    .requiredOption('--against <model>', 'the source model the file was made from');
  json(verify, 'print the per-layer result on stdout');
  const dequantize = command('dequantize', 'turn an output file back into safetensors', async () => (await import('./commands/dequantize.js')).dequantizeCommand)
    .argument('<file>', 'an ArrowQuant output file')
    .description('Writes safetensors with the same tensor names, shapes and order, holding the dequantized\nweights ŵ (docs/format.md).')
    .requiredOption('-o, --output <file>', 'the safetensors file to write')
    .addOption(new Option('--dtype <dtype>', "output dtype (default: each tensor's source dtype)").choices(['f32', 'f16', 'bf16']));
  json(dequantize, 'print {"output", "tensors"} on stdout');

  // report
  command('report', 'one self-contained HTML page about an output file: summary, charts, per-layer table', async () => (await import('./commands/report.js')).reportCommand)
    .argument('<file>', 'an ArrowQuant output file')
    .description(prose(`One self-contained HTML page (inline CSS and SVG, nothing fetched) about an output file: the
summary, the allocation beside the heuristic and uniform INT4 and the size–error curve (files
written with --strategy measured), bits and SQNR per layer along depth, and the per-layer table.`))
    .option('-o, --output <file>', 'the HTML file to write (default: the input with .report.html in place of .arrow)')
    .option('--json', "print the report's data as JSON on stdout");

  // sample-model
  command('sample-model', 'write a small Llama-shaped safetensors model to try things on', async () => (await import('./commands/sample-model.js')).sampleModelCommand)
    .argument('<out>', 'a .safetensors file, or a directory with --shards N > 1')
    .description('Writes a small Llama-shaped safetensors model (Hugging Face names, heavy-tailed values).')
    .addOption(new Option('--dtype <dtype>', 'tensor dtype').choices(['bf16', 'f16', 'f32']).default('bf16'))
    .option('--layers <n>', 'decoder layers', integerAtLeast(1), SAMPLE_LLAMA.layers)
    .option('--hidden <n>', `hidden size (a multiple of ${SAMPLE_LLAMA.heads}, the attention heads)`, integerAtLeast(8), SAMPLE_LLAMA.hidden)
    .option('--intermediate <n>', 'MLP size', integerAtLeast(1), SAMPLE_LLAMA.intermediate)
    .option('--vocab <n>', 'vocabulary size', integerAtLeast(1), SAMPLE_LLAMA.vocab)
    .option('--shards <n>', 'files; > 1 writes a directory with model.safetensors.index.json', integerAtLeast(1), 1)
    .option('--seed <n>', 'random seed', integerAtLeast(0), 1);

  for (const cmd of program.commands) cmd.showHelpAfterError(`(run arrowquant ${cmd.name()} --help for usage)`).addHelpText('after', `\n${DOCS_HELP}`);
  return program;
}

/** The parsed option values of `cmd`, keyed by flag name. */
function valuesOf(cmd: Command): OptionValues {
  const values: OptionValues = {};
  for (const opt of cmd.options) {
    const v = cmd.getOptionValue(opt.attributeName());
    if (v !== undefined) values[opt.name()] = v;
  }
  return values;
}
