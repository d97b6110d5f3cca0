// The TypeScript side of the native SIMD kernels (native/src, built by native/build-addon.mjs
// into native/build/Release/arrowquant_native.node).
//
// This module owns argument validation and its messages ("Expected X for name but received V"):
// the C++ side trusts what it is given. It loads the addon once, exposes every compiled variant
// that this CPU can run as a QuantKernel, and picks one for the pipeline (selectKernel), falling
// back to the TypeScript reference with one warning when the addon is missing.

import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ArrowQuantError } from '../core/errors.js';
import { dtypeSize, SOURCE_DTYPES, type SourceDtype } from '../core/quant/dtype.js';
import {
  GROUP_SIZES, QUANT_BITS, STATS_PER_ROW, groupsPerRow, packedBytes,
  type DequantizeRowsArgs, type QuantizeRowsOutput,
} from '../core/quant/reference.js';
import {
  V2_GROUP_SIZES, v2Layout, v2ParamBytes, v2SuperGroups, type DequantizeRowsV2Args, type QuantizeRowsV2Output,
} from '../core/quant/reference-v2.js';
import type { KernelVariant, QuantizeCall, QuantizeV2Call, QuantKernel } from '../core/quant/kernel.js';
import { referenceKernel } from './reference-kernel.js';

/**
 * Roughly how much slower the TypeScript reference is than the best native variant, single
 * thread, BF16 → INT4 g128 (`npm run bench:kernels` on a 2-core AMD EPYC with AVX2: about 100×
 * for round-to-nearest and 120× with refine: search).
 */
export const REFERENCE_SLOWDOWN = 100;

/** A kernel argument that does not match rows/cols/bits/groupSize (a caller bug). */
export class KernelArgumentError extends ArrowQuantError {
  constructor(
    readonly argument: string,
    readonly expected: string,
    readonly received: string,
  ) {
    super(`Expected ${expected} for ${argument} but received ${received}`);
  }
}

/** The native addon failed while running, or a requested variant cannot run here. */
export class NativeKernelError extends ArrowQuantError {
  constructor(
    message: string,
    readonly variant: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** ARROW_QUANT_KERNEL names a kernel that does not exist or cannot run on this machine. */
export class KernelSelectionError extends ArrowQuantError {
  override readonly exitCode = 2;
  constructor(
    message: string,
    readonly requested: string,
  ) {
    super(message);
  }
}

// ---------------------------------------------------------------------------------------------
// The addon

interface NativeAddon {
  variants: { name: string; supported: boolean }[];
  quantizeSync(id: number, src: Uint8Array, dtype: number, rows: number, cols: number, bits: number, groupSize: number,
    refine: boolean, colScale: Float32Array | null, packed: Uint8Array, scales: Uint16Array, zeroPoints: Uint16Array,
    rowStats: Float64Array): number;
  quantize(id: number, src: Uint8Array, dtype: number, rows: number, cols: number, bits: number, groupSize: number,
    refine: boolean, colScale: Float32Array | null, packed: Uint8Array, scales: Uint16Array, zeroPoints: Uint16Array,
    rowStats: Float64Array): Promise<number>;
  dequantize(id: number, packed: Uint8Array, scales: Uint16Array, zeroPoints: Uint16Array, rows: number, cols: number,
    bits: number, groupSize: number, colScale: Float32Array | null, out: Float32Array): void;
  quantizeV2Sync(id: number, src: Uint8Array, dtype: number, rows: number, cols: number, bits: number, groupSize: number,
    colScale: Float32Array | null, packed: Uint8Array, groupParams: Uint8Array, superScales: Uint16Array, superOffsets: Uint16Array,
    rowStats: Float64Array): number;
  quantizeV2(id: number, src: Uint8Array, dtype: number, rows: number, cols: number, bits: number, groupSize: number,
    colScale: Float32Array | null, packed: Uint8Array, groupParams: Uint8Array, superScales: Uint16Array, superOffsets: Uint16Array,
    rowStats: Float64Array): Promise<number>;
  dequantizeV2(id: number, packed: Uint8Array, groupParams: Uint8Array, superScales: Uint16Array, superOffsets: Uint16Array,
    firstGroup: number, rows: number, cols: number, bits: number, groupSize: number, colScale: Float32Array | null, out: Float32Array): void;
  columnAbsMax(id: number, src: Uint8Array, dtype: number, rows: number, cols: number, out: Float32Array): void;
  memcpy(dst: Uint8Array, src: Uint8Array): number;
}

const ADDON_FILE = 'arrowquant_native.node';
const DTYPE_CODE: Record<SourceDtype, number> = { F32: 0, F16: 1, BF16: 2 };

/** The directory holding package.json, from this file in native/ or dist/native/. */
function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    const up = dirname(dir);
    if (up === dir) return dirname(fileURLToPath(import.meta.url));
    dir = up;
  }
}

interface AddonState {
  addon: NativeAddon | null;
  /** why the addon is not there, when it is not */
  reason: string | null;
  path: string;
}

let state: AddonState | null = null;

/** The addon of this package (loaded once), or of the package at `root` (tests, tools). */
function loadAddon(root?: string): AddonState {
  if (root === undefined && state) return state;
  const s = loadAddonAt(root ?? packageRoot());
  if (root === undefined) state = s;
  return s;
}

function loadAddonAt(root: string): AddonState {
  const path = join(root, 'native', 'build', 'Release', ADDON_FILE);
  const failed = join(root, 'native', 'build', 'BUILD_FAILED.txt');
  try {
    const addon = createRequire(import.meta.url)(path) as NativeAddon;
    return { addon, reason: null, path };
  } catch (err) {
    let reason: string;
    if (existsSync(failed)) {
      const lines = readFileSync(failed, 'utf8').trim().split('\n');
      const detail = lines.slice(1).find((l) => /error|ERR!|not found|No such/i.test(l))?.trim();
      reason = `the native build failed (native/build/BUILD_FAILED.txt: ${lines[0]}${detail ? ` ${detail}` : ''})`;
    } else if (!existsSync(path)) {
      reason = `${path} does not exist (run \`node native/build-addon.mjs\` or \`npm install\`)`;
    } else {
      reason = `loading ${path} failed: ${(err as Error).message.split('\n')[0]}`;
    }
    return { addon: null, reason, path };
  }
}

/** Whether the addon loaded, and why not (`root`: another package directory, for tests). */
export function nativeAddonStatus(root?: string): { loaded: boolean; reason: string | null; path: string } {
  const s = loadAddon(root);
  return { loaded: s.addon !== null, reason: s.reason, path: s.path };
}

/** Every variant compiled into the addon (also those this CPU cannot run); [] without the addon. */
export function compiledVariants(): string[] {
  return loadAddon().addon?.variants.map((v) => v.name) ?? [];
}

/** Compiled variants with whether this CPU can run each. */
export function variantSupport(): { name: string; supported: boolean }[] {
  return loadAddon().addon?.variants.map((v) => ({ ...v })) ?? [];
}

const kernels = new Map<string, QuantKernel>();

/** The native kernel of one compiled variant; a clear error if it is not compiled or cannot run here. */
export function nativeKernel(variant: string): QuantKernel {
  const cached = kernels.get(variant);
  if (cached) return cached;
  const { addon, reason } = loadAddon();
  if (!addon) throw new NativeKernelError(`native kernels are not available: ${reason}`, variant);
  const id = addon.variants.findIndex((v) => v.name === variant);
  if (id < 0) {
    throw new NativeKernelError(
      `the ${variant} kernels are not compiled into this build (compiled: ${compiledVariants().join(', ')})`, variant);
  }
  if (!addon.variants[id]!.supported) {
    throw new NativeKernelError(`the ${variant} kernels cannot run on this CPU (${cpuRequirement(variant)})`, variant);
  }
  const k = makeNativeKernel(addon, id, variant as KernelVariant);
  kernels.set(variant, k);
  return k;
}

function cpuRequirement(variant: string): string {
  if (variant === 'avx2') return 'needs AVX2, FMA and F16C';
  if (variant === 'avx512') return 'needs AVX-512 F, BW, VL and DQ';
  if (variant === 'neon') return 'needs arm64';
  return 'unsupported';
}

/** Every compiled variant this CPU can run, worst first (scalar, then SIMD). */
export function nativeKernels(): QuantKernel[] {
  return variantSupport().filter((v) => v.supported).map((v) => nativeKernel(v.name));
}

/** The kernel override variable, and its older spelling (kept as an alias). */
export const KERNEL_ENV = 'ARROW_QUANT_KERNEL';
export const KERNEL_ENV_ALIAS = 'ARROWQUANT_KERNEL';

/** The requested kernel: ARROW_QUANT_KERNEL, else ARROWQUANT_KERNEL; '' when neither is set. */
export function requestedKernel(env: NodeJS.ProcessEnv = process.env): { name: string; variable: string } {
  const main = env[KERNEL_ENV];
  if (main !== undefined && main.trim() !== '') return { name: main.trim(), variable: KERNEL_ENV };
  return { name: (env[KERNEL_ENV_ALIAS] ?? '').trim(), variable: KERNEL_ENV_ALIAS };
}

/**
 * The kernel the pipeline uses. ARROW_QUANT_KERNEL (or its alias ARROWQUANT_KERNEL) = scalar |
 * avx2 | avx512 | neon | reference forces one (a native one that cannot run here is a
 * KernelSelectionError); unset or `auto` gives the best native variant, or the reference with
 * one warning saying why. `root` looks for the addon under another package directory (tests).
 */
export function selectKernel(
  env: NodeJS.ProcessEnv = process.env,
  root?: string,
): { kernel: QuantKernel; warning: string | null } {
  const { name: requested, variable } = requestedKernel(env);
  if (requested === 'reference') return { kernel: validatedReference, warning: null };
  const { addon, reason } = loadAddon(root);
  const kernelOf = (name: string): QuantKernel => {
    if (root === undefined) return nativeKernel(name);
    const id = addon!.variants.findIndex((v) => v.name === name);
    if (id < 0) throw new NativeKernelError(`the ${name} kernels are not compiled into this build`, name);
    if (!addon!.variants[id]!.supported) {
      throw new NativeKernelError(`the ${name} kernels cannot run on this CPU (${cpuRequirement(name)})`, name);
    }
    return makeNativeKernel(addon!, id, name as KernelVariant);
  };
  if (requested !== '' && requested !== 'auto') {
    const known = ['scalar', 'avx2', 'avx512', 'neon'];
    if (!known.includes(requested)) {
      throw new KernelSelectionError(
        `Expected one of ${[...known, 'reference', 'auto'].join(', ')} for ${variable} but received "${requested}"`,
        requested);
    }
    if (!addon) {
      throw new KernelSelectionError(
        `${variable}=${requested} but the native kernels are not available: ${reason}`, requested);
    }
    try {
      return { kernel: kernelOf(requested), warning: null };
    } catch (err) {
      throw new KernelSelectionError(`${variable}=${requested}: ${(err as Error).message}`, requested);
    }
  }
  const best = addon?.variants.filter((v) => v.supported).at(-1);
  if (best) return { kernel: kernelOf(best.name), warning: null };
  return {
    kernel: validatedReference,
    warning:
      `arrowquant: native kernels unavailable (${reason ?? 'no variant runs on this CPU'}); using the TypeScript ` +
      `reference kernels, about ${REFERENCE_SLOWDOWN}× slower`,
  };
}

/** memcpy in native code (the physical baseline of the benchmark): copies min(src, dst) bytes. */
export function nativeMemcpy(dst: Uint8Array, src: Uint8Array): number {
  const { addon, reason } = loadAddon();
  if (!addon) throw new NativeKernelError(`native kernels are not available: ${reason}`, 'memcpy');
  checkTyped(dst, Uint8Array, 'dst', 'a Uint8Array');
  checkTyped(src, Uint8Array, 'src', 'a Uint8Array');
  return addon.memcpy(dst, src);
}

// ---------------------------------------------------------------------------------------------
// Validation

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (v === undefined) return 'undefined';
  if (ArrayBuffer.isView(v)) {
    const name = (v as object).constructor?.name ?? 'typed array';
    return `a ${name} of ${(v as ArrayBufferView).byteLength} bytes`;
  }
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint') return String(v);
  return `a ${(v as object).constructor?.name ?? typeof v}`;
}

type TypedCtor = Uint8ArrayConstructor | Uint16ArrayConstructor | Float32ArrayConstructor | Float64ArrayConstructor;

function checkTyped(v: unknown, ctor: TypedCtor, name: string, what: string, minLength?: number): void {
  if (!(v instanceof ctor)) throw new KernelArgumentError(name, what, describe(v));
  if (minLength !== undefined && v.length < minLength) {
    const unit = ctor.BYTES_PER_ELEMENT === 1 ? 'bytes' : 'elements';
    throw new KernelArgumentError(name, `${what} of at least ${minLength} ${unit}`,
      `${v.length} ${unit}`);
  }
}

function checkCount(v: unknown, name: string, min: number): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) {
    throw new KernelArgumentError(name, `an integer ≥ ${min}`, describe(v));
  }
  return v;
}

function checkOneOf<T>(v: unknown, allowed: readonly T[], name: string): T {
  if (!allowed.includes(v as T)) throw new KernelArgumentError(name, `one of ${allowed.join(', ')}`, describe(v));
  return v as T;
}

function checkColScale(v: unknown, cols: number, name: string): Float32Array | null {
  if (v === null || v === undefined) return null;
  if (!(v instanceof Float32Array)) throw new KernelArgumentError(name, 'a Float32Array or null', describe(v));
  if (v.length !== cols) throw new KernelArgumentError(name, `a Float32Array of ${cols} elements (cols)`, `${v.length} elements`);
  return v;
}

/** Throws a KernelArgumentError unless `call` and `out` are consistent (sizes are minimums). */
export function validateQuantize(call: QuantizeCall, out: QuantizeRowsOutput): void {
  if (call === null || typeof call !== 'object') throw new KernelArgumentError('call', 'a QuantizeCall object', describe(call));
  if (out === null || typeof out !== 'object') throw new KernelArgumentError('out', 'a QuantizeRowsOutput object', describe(out));
  const dtype = checkOneOf(call.dtype, SOURCE_DTYPES, 'call.dtype');
  const rows = checkCount(call.rows, 'call.rows', 0);
  const cols = checkCount(call.cols, 'call.cols', 1);
  const bits = checkOneOf(call.bits, QUANT_BITS, 'call.bits');
  const groupSize = checkOneOf(call.groupSize, GROUP_SIZES, 'call.groupSize');
  if (typeof call.refine !== 'boolean') throw new KernelArgumentError('call.refine', 'a boolean', describe(call.refine));
  checkTyped(call.src, Uint8Array, 'call.src', `a Uint8Array (${rows} × ${cols} ${dtype})`, rows * cols * dtypeSize(dtype));
  checkColScale(call.colScale, cols, 'call.colScale');
  const groups = rows * groupsPerRow(cols, groupSize);
  checkTyped(out.packed, Uint8Array, 'out.packed', 'a Uint8Array', packedBytes(rows * cols, bits));
  checkTyped(out.scales, Uint16Array, 'out.scales', 'a Uint16Array', groups);
  checkTyped(out.zeroPoints, Uint16Array, 'out.zeroPoints', 'a Uint16Array', groups);
  checkTyped(out.rowStats, Float64Array, 'out.rowStats', 'a Float64Array', rows * STATS_PER_ROW);
}

export function validateDequantize(args: DequantizeRowsArgs, out: Float32Array): void {
  if (args === null || typeof args !== 'object') throw new KernelArgumentError('args', 'a DequantizeRowsArgs object', describe(args));
  const rows = checkCount(args.rows, 'args.rows', 0);
  const cols = checkCount(args.cols, 'args.cols', 1);
  const bits = checkOneOf(args.bits, QUANT_BITS, 'args.bits');
  const groupSize = checkOneOf(args.groupSize, GROUP_SIZES, 'args.groupSize');
  const groups = rows * groupsPerRow(cols, groupSize);
  checkTyped(args.packed, Uint8Array, 'args.packed', 'a Uint8Array', packedBytes(rows * cols, bits));
  checkTyped(args.scales, Uint16Array, 'args.scales', 'a Uint16Array', groups);
  checkTyped(args.zeroPoints, Uint16Array, 'args.zeroPoints', 'a Uint16Array', groups);
  checkColScale(args.colScale, cols, 'args.colScale');
  checkTyped(out, Float32Array, 'out', 'a Float32Array', rows * cols);
}

/** Throws a KernelArgumentError unless a format v2 `call` and `out` are consistent (sizes are minimums). */
export function validateQuantizeV2(call: QuantizeV2Call, out: QuantizeRowsV2Output): void {
  if (call === null || typeof call !== 'object') throw new KernelArgumentError('call', 'a QuantizeV2Call object', describe(call));
  if (out === null || typeof out !== 'object') throw new KernelArgumentError('out', 'a QuantizeRowsV2Output object', describe(out));
  const dtype = checkOneOf(call.dtype, SOURCE_DTYPES, 'call.dtype');
  const rows = checkCount(call.rows, 'call.rows', 0);
  const cols = checkCount(call.cols, 'call.cols', 1);
  const bits = checkOneOf(call.bits, QUANT_BITS, 'call.bits');
  const groupSize = checkOneOf(call.groupSize, V2_GROUP_SIZES, 'call.groupSize');
  checkTyped(call.src, Uint8Array, 'call.src', `a Uint8Array (${rows} × ${cols} ${dtype})`, rows * cols * dtypeSize(dtype));
  checkColScale(call.colScale, cols, 'call.colScale');
  const layout = v2Layout(bits, groupSize);
  const groups = rows * groupsPerRow(cols, groupSize);
  checkTyped(out.packed, Uint8Array, 'out.packed', 'a Uint8Array', packedBytes(rows * cols, bits));
  checkTyped(out.groupParams, Uint8Array, 'out.groupParams', 'a Uint8Array', v2ParamBytes(groups, layout));
  checkTyped(out.superScales, Uint16Array, 'out.superScales', 'a Uint16Array', v2SuperGroups(groups, layout));
  checkTyped(out.superOffsets, Uint16Array, 'out.superOffsets', 'a Uint16Array', v2SuperGroups(groups, layout));
  checkTyped(out.rowStats, Float64Array, 'out.rowStats', 'a Float64Array', rows * STATS_PER_ROW);
}

export function validateDequantizeV2(args: DequantizeRowsV2Args, out: Float32Array): void {
  if (args === null || typeof args !== 'object') throw new KernelArgumentError('args', 'a DequantizeRowsV2Args object', describe(args));
  const rows = checkCount(args.rows, 'args.rows', 0);
  const cols = checkCount(args.cols, 'args.cols', 1);
  const bits = checkOneOf(args.bits, QUANT_BITS, 'args.bits');
  const groupSize = checkOneOf(args.groupSize, V2_GROUP_SIZES, 'args.groupSize');
  const firstGroup = checkCount(args.firstGroup, 'args.firstGroup', 0);
  const layout = v2Layout(bits, groupSize);
  const end = firstGroup + rows * groupsPerRow(cols, groupSize);
  checkTyped(args.packed, Uint8Array, 'args.packed', 'a Uint8Array', packedBytes(rows * cols, bits));
  checkTyped(args.groupParams, Uint8Array, 'args.groupParams', 'a Uint8Array', v2ParamBytes(end, layout));
  checkTyped(args.superScales, Uint16Array, 'args.superScales', 'a Uint16Array', v2SuperGroups(end, layout));
  checkTyped(args.superOffsets, Uint16Array, 'args.superOffsets', 'a Uint16Array', v2SuperGroups(end, layout));
  checkColScale(args.colScale, cols, 'args.colScale');
  checkTyped(out, Float32Array, 'out', 'a Float32Array', rows * cols);
}

export function validateColumnAbsMax(src: Uint8Array, dtype: SourceDtype, rows: number, cols: number, out: Float32Array): void {
  const d = checkOneOf(dtype, SOURCE_DTYPES, 'dtype');
  checkCount(rows, 'rows', 0);
  checkCount(cols, 'cols', 1);
  checkTyped(src, Uint8Array, 'src', `a Uint8Array (${rows} × ${cols} ${d})`, rows * cols * dtypeSize(d));
  checkTyped(out, Float32Array, 'out', 'a Float32Array', cols);
}

// ---------------------------------------------------------------------------------------------
// Kernels

function nativeFailure(variant: string, op: string, err: unknown): NativeKernelError {
  return new NativeKernelError(`native ${variant} ${op} failed: ${(err as Error)?.message ?? String(err)}`, variant, { cause: err });
}

function makeNativeKernel(addon: NativeAddon, id: number, variant: KernelVariant): QuantKernel {
  return {
    variant,
    quantizeSync(call, out) {
      validateQuantize(call, out);
      try {
        return addon.quantizeSync(id, call.src, DTYPE_CODE[call.dtype], call.rows, call.cols, call.bits, call.groupSize,
          call.refine, call.colScale ?? null, out.packed, out.scales, out.zeroPoints, out.rowStats);
      } catch (err) {
        throw nativeFailure(variant, 'quantize', err);
      }
    },
    async quantize(call, out) {
      validateQuantize(call, out);
      try {
        return await addon.quantize(id, call.src, DTYPE_CODE[call.dtype], call.rows, call.cols, call.bits, call.groupSize,
          call.refine, call.colScale ?? null, out.packed, out.scales, out.zeroPoints, out.rowStats);
      } catch (err) {
        throw nativeFailure(variant, 'quantize', err);
      }
    },
    dequantize(args, out) {
      validateDequantize(args, out);
      try {
        addon.dequantize(id, args.packed, args.scales, args.zeroPoints, args.rows, args.cols, args.bits, args.groupSize,
          args.colScale ?? null, out);
      } catch (err) {
        throw nativeFailure(variant, 'dequantize', err);
      }
    },
    quantizeV2Sync(call, out) {
      validateQuantizeV2(call, out);
      try {
        return addon.quantizeV2Sync(id, call.src, DTYPE_CODE[call.dtype], call.rows, call.cols, call.bits, call.groupSize,
          call.colScale ?? null, out.packed, out.groupParams, out.superScales, out.superOffsets, out.rowStats);
      } catch (err) {
        throw nativeFailure(variant, 'quantizeV2', err);
      }
    },
    async quantizeV2(call, out) {
      validateQuantizeV2(call, out);
      try {
        return await addon.quantizeV2(id, call.src, DTYPE_CODE[call.dtype], call.rows, call.cols, call.bits, call.groupSize,
          call.colScale ?? null, out.packed, out.groupParams, out.superScales, out.superOffsets, out.rowStats);
      } catch (err) {
        throw nativeFailure(variant, 'quantizeV2', err);
      }
    },
    dequantizeV2(args, out) {
      validateDequantizeV2(args, out);
      try {
        addon.dequantizeV2(id, args.packed, args.groupParams, args.superScales, args.superOffsets, args.firstGroup, args.rows,
          args.cols, args.bits, args.groupSize, args.colScale ?? null, out);
      } catch (err) {
        throw nativeFailure(variant, 'dequantizeV2', err);
      }
    },
    columnAbsMax(src, dtype, rows, cols, out) {
      validateColumnAbsMax(src, dtype, rows, cols, out);
      try {
        addon.columnAbsMax(id, src, DTYPE_CODE[dtype], rows, cols, out);
      } catch (err) {
        throw nativeFailure(variant, 'columnAbsMax', err);
      }
    },
  };
}

/** The reference kernel behind the same argument validation as the native ones. */
const validatedReference: QuantKernel = {
  variant: 'reference',
  quantizeSync(call, out) {
    validateQuantize(call, out);
    return referenceKernel.quantizeSync(call, out);
  },
  async quantize(call, out) {
    validateQuantize(call, out);
    return referenceKernel.quantizeSync(call, out);
  },
  dequantize(args, out) {
    validateDequantize(args, out);
    referenceKernel.dequantize(args, out);
  },
  quantizeV2Sync(call, out) {
    validateQuantizeV2(call, out);
    return referenceKernel.quantizeV2Sync(call, out);
  },
  async quantizeV2(call, out) {
    validateQuantizeV2(call, out);
    return referenceKernel.quantizeV2Sync(call, out);
  },
  dequantizeV2(args, out) {
    validateDequantizeV2(args, out);
    referenceKernel.dequantizeV2(args, out);
  },
  columnAbsMax(src, dtype, rows, cols, out) {
    validateColumnAbsMax(src, dtype, rows, cols, out);
    referenceKernel.columnAbsMax(src, dtype, rows, cols, out);
  },
};
