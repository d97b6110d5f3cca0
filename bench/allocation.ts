// npm run bench:allocation
//
// Issue 13's "done when", recomputed from written files: on the test model (BF16) and on the
// sample model (`arrowquant sample-model`, BF16, seed 1), quantize with the heuristic, with
// uniform INT4 g128 and with the measured optimum at the same sizes, then read every .arrow back,
// dequantize each layer and compute total error = Σ params × ‖W−Ŵ‖²/‖W‖² against the source
// weights. Weighted SQNR is the written file's summary. Timing: the measured plan cold (empty
// measurement cache) against warm (every measurement cached), in the same run.
// Prints a table on stderr and one JSON document on stdout.

import { closeSync, mkdtempSync, openSync, readSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { resolveConfig } from '../core/config/load.js';
import type { PartialConfig } from '../core/config/schema.js';
import { OutputFileReader } from '../core/format/output-reader.js';
import { layerValues } from '../core/format/layer-values.js';
import { openModel } from '../core/model/model-source.js';
import { SAMPLE_LLAMA, syntheticLlamaTensors } from '../core/model/synthetic-llama.js';
import { writeSafetensors } from '../core/model/safetensors-writer.js';
import { decodeToF32 } from '../core/quant/dtype.js';
import { runLocalJob } from '../coordinator/local-run.js';
import { measuredPlan } from '../coordinator/measured-plan.js';
import { packageRoot } from '../core/package-info.js';
import { selectKernel } from '../native/kernels.js';

const { kernel } = selectKernel(process.env);

/** Σ params × ‖W−Ŵ‖²/‖W‖² of a written file against its source model, layer by layer. */
async function totalError(outPath: string, modelPath: string): Promise<number> {
  const model = openModel(modelPath);
  const file = await OutputFileReader.open(outPath);
  let total = 0;
  try {
    for (const t of model.tensors) {
      const r = await file.layer(t.index);
      const bytes = Buffer.alloc(t.byteLength);
      const fd = openSync(t.file, 'r');
      try {
        readSync(fd, bytes, 0, t.byteLength, t.dataStart);
      } finally {
        closeSync(fd);
      }
      const w = decodeToF32(bytes, t.dtype);
      const rows = t.shape.length >= 2 ? t.shape[0]! : 1;
      const wh = layerValues(kernel, r, 0, rows, new Float32Array(w.length));
      let w2 = 0;
      let e2 = 0;
      for (let i = 0; i < w.length; i++) {
        w2 += w[i]! * w[i]!;
        e2 += (w[i]! - wh[i]!) ** 2;
      }
      if (w2 > 0) total += (w.length * e2) / w2;
    }
  } finally {
    await file.close();
  }
  return total;
}

interface Written {
  name: string;
  bytes_out: number;
  total_error: number;
  weighted_sqnr_db: number | null;
}

async function main(): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'aq-bench-alloc-'));
  const cacheDir = join(work, 'cache');
  const sample = join(work, 'sample-bf16.safetensors');
  await writeSafetensors(sample, syntheticLlamaTensors(SAMPLE_LLAMA, 'BF16', 1));
  const fixture = join(packageRoot(), 'test', 'fixtures', 'stories260K', 'stories260K-bf16.safetensors');
  const results: object[] = [];
  try {
    for (const [label, modelPath, targetMb] of [['stories260K BF16', fixture, 0.22], ['sample model BF16', sample, null]] as const) {
      // The sample model's target: the same fraction of its size as 0.22 MB is of the test model's.
      const bytesIn = openModel(modelPath).totalBytes;
      const target = targetMb ?? Math.round(((0.22e6 / 585600) * bytesIn) / 1e3) / 1e3;
      let n = 0;
      const write = async (name: string, cfg: PartialConfig): Promise<Written> => {
        const out = join(work, `${label.replace(/\W+/g, '-')}-${n++}.arrow`);
        const s = await runLocalJob(modelPath, { output: out, config: resolveConfig(cfg), measurementCacheDir: cacheDir });
        const w = { name, bytes_out: s.bytes_out, total_error: await totalError(out, modelPath), weighted_sqnr_db: s.weighted_sqnr_db };
        rmSync(out);
        return w;
      };
      const mixed = { enable_mixed_precision: true };
      const measured = { ...mixed, allocation_strategy: 'measured' as const };
      const rows: { comparison: string; base: Written; measured: Written; error_reduction_pct: number; sqnr_gain_db: number | null; done_when: string; met: boolean }[] = [];
      // issue 13's bars: error ≥ 10% (sensitive forced) or ≥ 80% (defaults) below the heuristic's; SQNR ≥ uniform + 0.25 dB
      const compare = (comparison: string, base: Written, m: Written, bar: { errorPct: number } | { sqnrDb: number }) => {
        const error_reduction_pct = Number(((100 * (base.total_error - m.total_error)) / base.total_error).toFixed(2));
        const sqnr_gain_db = base.weighted_sqnr_db !== null && m.weighted_sqnr_db !== null ? Number((m.weighted_sqnr_db - base.weighted_sqnr_db).toFixed(4)) : null;
        const met = 'errorPct' in bar ? error_reduction_pct >= bar.errorPct : sqnr_gain_db !== null && sqnr_gain_db >= bar.sqnrDb;
        const done_when = 'errorPct' in bar ? `error ≥ ${bar.errorPct}% below` : `SQNR ≥ +${bar.sqnrDb} dB`;
        rows.push({ comparison, base, measured: m, error_reduction_pct, sqnr_gain_db, done_when, met: met && m.bytes_out <= Math.max(base.bytes_out, Math.round(target * 1e6)) });
      };
      for (const skip of [true, false]) {
        const tag = skip ? '--skip-sensitive' : 'defaults';
        const heuristic = await write(`heuristic ${target} MB`, { ...mixed, skip_sensitive_layers: skip, target_model_size_mb: target });
        const uniform = await write('uniform INT4 g128', { bit_width: 4, group_size: 128, skip_sensitive_layers: skip });
        const bar = { errorPct: skip ? 10 : 80 };
        // v1 candidates only (a v1 job), then v1 + v2 candidates (--double-quant --group-size 16); the baselines stay v1
        for (const [cands, extra] of [['v1', {}], ['v1+v2', { double_quant: true, group_size: 16 }]] as const) {
          const m = { ...measured, ...extra, skip_sensitive_layers: skip };
          const t = `${tag}, ${cands} candidates`;
          compare(`${t}: at ${target} MB`, heuristic, await write(`measured ${target} MB`, { ...m, target_model_size_mb: target }), bar);
          compare(`${t}: at the heuristic's ${heuristic.bytes_out} bytes`, heuristic, await write(`measured ${heuristic.bytes_out} B`, { ...m, target_model_size_mb: heuristic.bytes_out / 1e6 }), bar);
          compare(`${t}: at uniform INT4 g128's ${uniform.bytes_out} bytes`, uniform, await write(`measured ${uniform.bytes_out} B`, { ...m, target_model_size_mb: uniform.bytes_out / 1e6 }), { sqnrDb: 0.25 });
        }
      }
      // Planning time: cold (fresh cache) against warm (every measurement cached), same run.
      const planCfg = resolveConfig({ ...measured, target_model_size_mb: target });
      const coldDir = join(work, `cold-${n}`);
      const t0 = performance.now();
      const cold = await measuredPlan(modelPath, planCfg, { cacheDir: coldDir });
      const coldMs = performance.now() - t0;
      const t1 = performance.now();
      const warm = await measuredPlan(modelPath, planCfg, { cacheDir: coldDir });
      const warmMs = performance.now() - t1;
      results.push({
        model: label, bytes_in: bytesIn, target_mb: target, comparisons: rows,
        plan_timing: { cold_ms: Math.round(coldMs), warm_ms: Math.round(warmMs), cold_over_warm: Number((coldMs / warmMs).toFixed(2)), cold_measured: cold.measurements!.measured, warm_measured: warm.measurements!.measured },
      });
      for (const r of rows) {
        process.stderr.write(
          `${label} ${r.comparison}: base ${r.base.bytes_out} B error ${r.base.total_error.toFixed(1)} SQNR ${r.base.weighted_sqnr_db} dB | measured ${r.measured.bytes_out} B error ${r.measured.total_error.toFixed(1)} SQNR ${r.measured.weighted_sqnr_db} dB | error ${r.error_reduction_pct >= 0 ? '−' : '+'}${Math.abs(r.error_reduction_pct)}%, SQNR ${r.sqnr_gain_db !== null && r.sqnr_gain_db >= 0 ? '+' : ''}${r.sqnr_gain_db} dB | ${r.done_when}: ${r.met ? 'met' : 'NOT met'}\n`,
        );
      }
      process.stderr.write(`${label} plan: cold ${Math.round(coldMs)} ms (${cold.measurements!.measured} measured), warm ${Math.round(warmMs)} ms (${warm.measurements!.measured} measured)\n`);
    }
    process.stdout.write(JSON.stringify({ bench: 'allocation', kernel: kernel.variant, note: 'machine shared with other engineers: timings are noisy', results }, null, 2) + '\n');
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

await main();
