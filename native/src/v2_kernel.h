// Format v2 (double-quantized group parameters): quantizeRowsV2Ref and dequantizeRowsV2Ref of
// core/quant/reference-v2.ts, operation for operation. Each variant's translation unit includes
// this header inside its target region (scalar.cc: none; avx2.cc, avx512.cc, neon.cc: their ISA),
// so the lane loops below — 16 independent float32 accumulators, the reference's lane order — are
// vectorized by the compiler for that ISA. Without -ffast-math the compiler may not reassociate
// or fuse anything, so every variant gives the reference's bits; only the speed differs.
#pragma once

#include "common.h"

namespace aq {
namespace {

constexpr int V2_MAX_GROUP = 32;
constexpr int V2_MAX_SUPER = 64;
constexpr int V2_NCAND = 5;
constexpr int V2_REFIT_ROUNDS = 2;

/** CAND_DELTA of reference-v2.ts (exact in float32). */
inline float v2_cand_delta(int c) {
  static const float d[V2_NCAND] = {0.0f, -0.5f, 0.5f, -1.0f, 1.0f};
  return d[c];
}

/** LOG_STEPS: fround(2^(−j/4)), j = 0..3. */
inline float v2_log_step(int j) {
  static const uint32_t bits[4] = {0x3f800000u, 0x3f5744fdu, 0x3f3504f3u, 0x3f1837f0u};
  return bits_to_f32(bits[j]);
}

struct V2Layout {
  int scaleBits;
  int offsetBits;
  int superGroups;
  bool logScale;
};

/** v2Layout of reference-v2.ts. */
inline V2Layout v2_layout(int bits, int groupSize) {
  if (bits == 4 && groupSize == 16) return {3, 4, 64, true};
  if (bits == 2) return {4, 4, 512 / groupSize, false};
  return {6, 6, 512 / groupSize, false};
}

/** scaleMultiplier: qs, or LOG_STEPS[(QS − qs) & 3] · 2^−((QS − qs) >> 2) (exact). */
inline float v2_scale_multiplier(int qs, const V2Layout& L) {
  if (!L.logScale) return (float)qs;
  const int j = ((1 << L.scaleBits) - 1) - qs;
  return std::ldexp(v2_log_step(j & 3), -(j >> 2));
}

inline float v2_clamp_rne(float t, float levels) {
  if (t < 0.0f) t = 0.0f;
  else if (t > levels) t = levels;
  return std::nearbyintf(t);
}

inline float v2_lane_sum(float* acc) { return lane_reduce(acc); }

/** codesAndError: codes from (offset, inv), Σ (x − ŵ)² in lane order. */
inline float v2_codes_and_error(const float* x, int n, float scale, float offset, float inv, float levels, uint8_t* codes) {
  float acc[LANES] = {0};
  int k = 0;
  for (; k + LANES <= n; k += LANES) {
    for (int l = 0; l < LANES; l++) {
      const float q = v2_clamp_rne((x[k + l] + offset) * inv, levels);
      codes[k + l] = (uint8_t)code_of(q);  // NaN (only from infinite fits) → 0, as a JS Uint8Array stores it
      const float e = x[k + l] - (q * scale - offset);
      acc[l] = acc[l] + e * e;
    }
  }
  for (int l = 0; k + l < n; l++) {
    const float q = v2_clamp_rne((x[k + l] + offset) * inv, levels);
    codes[k + l] = (uint8_t)code_of(q);
    const float e = x[k + l] - (q * scale - offset);
    acc[l] = acc[l] + e * e;
  }
  return v2_lane_sum(acc);
}

inline float v2_sum_lanes(const float* x, int n) {
  float acc[LANES] = {0};
  for (int i = 0; i < n; i++) acc[i % LANES] = acc[i % LANES] + x[i];
  return v2_lane_sum(acc);
}

/** fitToCodes: least-squares (scale, offset ≥ 0); false when no positive scale. */
inline bool v2_fit_to_codes(const float* x, int n, const uint8_t* codes, float sx, float* scale, float* offset) {
  float a[LANES] = {0}, b[LANES] = {0}, c[LANES] = {0};
  for (int i = 0; i < n; i++) {
    const float q = (float)codes[i];
    const int l = i % LANES;
    a[l] = a[l] + q;
    b[l] = b[l] + q * q;
    c[l] = c[l] + x[i] * q;
  }
  const float sl = v2_lane_sum(a), sll = v2_lane_sum(b), sxl = v2_lane_sum(c);
  const float nf = (float)n;
  const float det = sll * nf - sl * sl;
  if (det > 0.0f) {
    const float s = (sxl * nf - sl * sx) / det;
    const float o = (sxl * sl - sll * sx) / det;
    if (s > 0.0f && o >= 0.0f) {
      *scale = s;
      *offset = o;
      return true;
    }
  }
  if (sll > 0.0f) {
    const float s = sxl / sll;
    if (s > 0.0f) {
      *scale = s;
      *offset = 0.0f;
      return true;
    }
  }
  return false;
}

/** fitGroup (step A). `codes` is scratch. */
inline void v2_fit_group(const float* x, int n, float levels, uint8_t* codes, float* outScale, float* outOffset) {
  float lo = INFINITY, hi = -INFINITY;
  for (int i = 0; i < n; i++) {
    const float v = x[i];
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  if (lo > 0.0f) lo = 0.0f;
  const float range = hi - lo;
  const float offset0 = -lo;
  if (!(range > 0.0f)) {
    *outScale = 0.0f;
    *outOffset = offset0;
    return;
  }
  float bs = range / levels, bo = offset0;
  float bestErr = v2_codes_and_error(x, n, bs, bo, 1.0f / bs, levels, codes);
  const float sx = v2_sum_lanes(x, n);
  for (int c = 0; c < V2_NCAND; c++) {
    const float iscale = (levels + v2_cand_delta(c)) / range;
    for (int i = 0; i < n; i++) {
      const float q = v2_clamp_rne((x[i] - lo) * iscale, levels);
      codes[i] = (uint8_t)code_of(q);  // NaN (an infinite range) → 0, as a JS Uint8Array stores it
    }
    float fs, fo;
    if (!v2_fit_to_codes(x, n, codes, sx, &fs, &fo)) continue;
    const float err = v2_codes_and_error(x, n, fs, fo, 1.0f / fs, levels, codes);
    if (err < bestErr) {
      bestErr = err;
      bs = fs;
      bo = fo;
    }
  }
  *outScale = bs;
  *outOffset = bo;
}

inline uint16_t v2_factor_bits(float max, float imax) {
  float f = max / imax;
  if (f > F16_MAX) f = F16_MAX;
  return f32_to_f16_bits(f);
}

inline int v2_floor_level(const float* levels, int count, float v) {
  int q = 0;
  for (int i = 1; i < count; i++)
    if (levels[i] <= v) q = i;
  return q;
}

inline int v2_nearest_level(const float* levels, int count, float v) {
  const int q = v2_floor_level(levels, count, v);
  if (q + 1 < count && (levels[q + 1] - v) < (v - levels[q])) return q + 1;
  return q;
}

inline float v2_inv(float scale) { return scale > 0.0f ? 1.0f / scale : 0.0f; }

struct V2FieldWriter {
  uint8_t* out;
  size_t pos = 0;
  uint32_t cur = 0;
  int nbits = 0;
  explicit V2FieldWriter(uint8_t* o) : out(o) {}
  inline void put(uint32_t v, int width) {
    cur |= v << nbits;
    nbits += width;
    while (nbits >= 8) {
      out[pos++] = (uint8_t)(cur & 0xffu);
      cur >>= 8;
      nbits -= 8;
    }
  }
  inline void finish() {
    if (nbits > 0) out[pos++] = (uint8_t)(cur & 0xffu);
    cur = 0;
    nbits = 0;
  }
};

inline uint32_t v2_read_field(const uint8_t* bytes, uint64_t bit, int width) {
  uint32_t v = 0;
  for (int k = 0; k < width; k++) {
    const uint64_t b = bit + (uint64_t)k;
    v |= (uint32_t)((bytes[b >> 3] >> (b & 7)) & 1u) << k;
  }
  return v;
}

/** quantizeRowsV2Ref. */
inline int64_t quantize_v2_impl(const QuantV2Job& a) {
  const int64_t total = a.rows * a.cols;
  for (int64_t i = 0; i < total; i++)
    if (!is_finite_f32(load_elem(a.src, a.dtype, i))) return i;
  const float levels = (float)((1 << a.bits) - 1);
  const V2Layout layout = v2_layout(a.bits, a.groupSize);
  const int QS = (1 << layout.scaleBits) - 1;
  const int QM = (1 << layout.offsetBits) - 1;
  const int G = a.groupSize;
  const int S = layout.superGroups;
  const int64_t gpr = (a.cols + G - 1) / G;
  const int64_t groups = a.rows * gpr;
  alignas(64) float xs[V2_MAX_SUPER][V2_MAX_GROUP];
  alignas(64) uint8_t codes[V2_MAX_SUPER][V2_MAX_GROUP];
  alignas(64) uint8_t trial[V2_MAX_GROUP];
  float fs[V2_MAX_SUPER], fo[V2_MAX_SUPER];
  int iqs[V2_MAX_SUPER], iqm[V2_MAX_SUPER];
  float sLevels[64], oLevels[64];
  V2FieldWriter params(a.groupParams);
  BitWriter bw(a.packed, a.bits);
  double rowSums[4] = {0, 0, 0, 0};
  for (int64_t g0 = 0, k = 0; g0 < groups; g0 += S, k++) {
    const int ng = (int)(groups - g0 < S ? groups - g0 : S);
    float maxS = 0.0f, maxO = 0.0f;
    for (int j = 0; j < ng; j++) {
      const int64_t r = (g0 + j) / gpr;
      const int64_t c0 = ((g0 + j) % gpr) * G;
      const int n = (int)(a.cols - c0 < G ? a.cols - c0 : G);
      float* x = xs[j];
      for (int i = 0; i < n; i++) {
        const float w = load_elem(a.src, a.dtype, r * a.cols + c0 + i);
        x[i] = a.colScale ? w * a.colScale[c0 + i] : w;
      }
      v2_fit_group(x, n, levels, codes[j], &fs[j], &fo[j]);
      if (fs[j] > maxS) maxS = fs[j];
      if (fo[j] > maxO) maxO = fo[j];
    }
    const uint16_t dBits = v2_factor_bits(maxS, v2_scale_multiplier(QS, layout));
    const uint16_t mBits = v2_factor_bits(maxO, (float)QM);
    const float d = f16_bits_to_f32(dBits), m = f16_bits_to_f32(mBits);
    a.superScales[k] = dBits;
    a.superOffsets[k] = mBits;
    for (int q = 0; q <= QS; q++) sLevels[q] = d * v2_scale_multiplier(q, layout);
    for (int q = 0; q <= QM; q++) oLevels[q] = m * (float)q;
    for (int j = 0; j < ng; j++) {
      const int64_t c0 = ((g0 + j) % gpr) * G;
      const int n = (int)(a.cols - c0 < G ? a.cols - c0 : G);
      const float* x = xs[j];
      const int qs0 = v2_floor_level(sLevels, QS + 1, fs[j]);
      const int qm0 = v2_floor_level(oLevels, QM + 1, fo[j]);
      int qs = qs0, qm = qm0;
      float err = v2_codes_and_error(x, n, sLevels[qs], oLevels[qm], v2_inv(sLevels[qs]), levels, codes[j]);
      for (int c = 1; c < 4; c++) {
        const int qs2 = qs0 + (c & 1) < QS ? qs0 + (c & 1) : QS;
        const int qm2 = qm0 + (c >> 1) < QM ? qm0 + (c >> 1) : QM;
        const float err2 = v2_codes_and_error(x, n, sLevels[qs2], oLevels[qm2], v2_inv(sLevels[qs2]), levels, trial);
        if (err2 < err) {
          qs = qs2;
          qm = qm2;
          err = err2;
          std::memcpy(codes[j], trial, (size_t)n);
        }
      }
      const float sx = v2_sum_lanes(x, n);
      for (int round = 0; round < V2_REFIT_ROUNDS; round++) {
        float fitS, fitO;
        if (!v2_fit_to_codes(x, n, codes[j], sx, &fitS, &fitO)) break;
        const int qs2 = v2_nearest_level(sLevels, QS + 1, fitS);
        const int qm2 = v2_nearest_level(oLevels, QM + 1, fitO);
        if (qs2 == qs && qm2 == qm) break;
        const float err2 = v2_codes_and_error(x, n, sLevels[qs2], oLevels[qm2], v2_inv(sLevels[qs2]), levels, trial);
        if (!(err2 < err)) break;
        qs = qs2;
        qm = qm2;
        err = err2;
        std::memcpy(codes[j], trial, (size_t)n);
      }
      iqs[j] = qs;
      iqm[j] = qm;
      params.put((uint32_t)qs, layout.scaleBits);
      params.put((uint32_t)qm, layout.offsetBits);
    }
    for (int j = 0; j < ng; j++) {
      const int64_t gi = g0 + j;
      const int64_t r = gi / gpr;
      const int64_t c0 = (gi % gpr) * G;
      const int n = (int)(a.cols - c0 < G ? a.cols - c0 : G);
      const float scale = sLevels[iqs[j]], offset = oLevels[iqm[j]];
      float w2[LANES] = {0}, e2[LANES] = {0}, wq[LANES] = {0}, q2[LANES] = {0};
      for (int i = 0; i < n; i++) {
        const float w = load_elem(a.src, a.dtype, r * a.cols + c0 + i);
        float wh = (float)codes[j][i] * scale - offset;
        if (a.colScale) wh = wh / a.colScale[c0 + i];
        const float e = w - wh;
        const int l = i % LANES;
        w2[l] = w2[l] + w * w;
        e2[l] = e2[l] + e * e;
        wq[l] = wq[l] + w * wh;
        q2[l] = q2[l] + wh * wh;
      }
      bw.put_all(codes[j], n);
      rowSums[0] += (double)lane_reduce(w2);
      rowSums[1] += (double)lane_reduce(e2);
      rowSums[2] += (double)lane_reduce(wq);
      rowSums[3] += (double)lane_reduce(q2);
      if ((gi + 1) % gpr == 0) {
        for (int s = 0; s < 4; s++) {
          a.rowStats[r * 4 + s] = rowSums[s];
          rowSums[s] = 0;
        }
      }
    }
  }
  params.finish();
  bw.finish();
  return -1;
}

/** dequantizeRowsV2Ref. */
inline void dequantize_v2_impl(const DequantV2Job& a) {
  const V2Layout layout = v2_layout(a.bits, a.groupSize);
  const int pw = layout.scaleBits + layout.offsetBits;
  const int64_t gpr = (a.cols + a.groupSize - 1) / a.groupSize;
  const uint32_t mask = (1u << a.bits) - 1u;
  uint64_t bitPos = 0;
  for (int64_t r = 0; r < a.rows; r++) {
    for (int64_t g = 0; g < gpr; g++) {
      const int64_t gi = a.firstGroup + r * gpr + g;
      const int64_t k = gi / layout.superGroups;
      const int qs = (int)v2_read_field(a.groupParams, (uint64_t)gi * pw, layout.scaleBits);
      const int qm = (int)v2_read_field(a.groupParams, (uint64_t)gi * pw + layout.scaleBits, layout.offsetBits);
      const float scale = f16_bits_to_f32(a.superScales[k]) * v2_scale_multiplier(qs, layout);
      const float offset = f16_bits_to_f32(a.superOffsets[k]) * (float)qm;
      const int64_t c0 = g * a.groupSize;
      const int n = (int)(a.cols - c0 < a.groupSize ? a.cols - c0 : a.groupSize);
      for (int i = 0; i < n; i++) {
        const uint32_t q = (a.packed[bitPos >> 3] >> (bitPos & 7)) & mask;
        bitPos += (uint64_t)a.bits;
        float wh = (float)q * scale - offset;
        if (a.colScale) wh = wh / a.colScale[c0 + i];
        a.out[r * a.cols + c0 + i] = wh;
      }
    }
  }
}

}  // namespace
}  // namespace aq
