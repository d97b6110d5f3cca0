// Format v2 (double-quantized group parameters): quantizeRowsV2Ref and dequantizeRowsV2Ref of
// core/quant/reference-v2.ts, operation for operation. Each variant's translation unit includes
// this header inside its target region (scalar.cc: none; avx2.cc, avx512.cc, neon.cc: their ISA),
// so the lane loops below — 16 independent float32 accumulators, the reference's lane order — are
// vectorized by the compiler for that ISA. Without -ffast-math the compiler may not reassociate
// or fuse anything, so every variant gives the reference's bits; only the speed differs.
#pragma once

#include "common.h"

#if defined(__GNUC__) && !defined(__clang__)
// The generic vectors below are wider than the baseline ISA of scalar.cc; every function using
// them has internal linkage and is inlined, so the vector ABI GCC warns about never applies.
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

namespace aq {
namespace {

constexpr int V2_MAX_GROUP = 32;
constexpr int V2_MAX_SUPER = 64;
constexpr int V2_REFIT_ROUNDS = 1;

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

// The quantizer works on a whole super-group at once, transposed: xt[i][j] is element i of group
// j, so every step is a loop over the super-group's groups that the compiler vectorizes (each
// group still sees exactly the reference's operations in the reference's order: lane sums over
// its own elements i, lane i mod 16, reduced pairwise). Elements past a short group's end are 0
// and masked out: a masked lane adds +0, which leaves every sum here unchanged (none is −0).

constexpr int NB = V2_MAX_SUPER;

template <bool B>
struct V2Flag {
  static constexpr bool value = B;
};
using Row = float[NB];

// GCC/Clang generic vectors: VW groups per operation, lowered to this translation unit's ISA
// (SSE2 pairs for scalar.cc, AVX2, AVX-512 with AQ_V2_VECTOR_BYTES 64, NEON pairs). Every lane
// does the scalar operation.
#ifndef AQ_V2_VECTOR_BYTES
#define AQ_V2_VECTOR_BYTES 32
#endif
typedef float vf __attribute__((vector_size(AQ_V2_VECTOR_BYTES), may_alias));
typedef int vi __attribute__((vector_size(AQ_V2_VECTOR_BYTES), may_alias));
constexpr int VW = AQ_V2_VECTOR_BYTES / 4;
inline vf* VF(float* p) { return reinterpret_cast<vf*>(p); }
inline const vf* VF(const float* p) { return reinterpret_cast<const vf*>(p); }
inline vf splat(float f) { return vf{} + f; }

/** rne of t ∈ [0, 255] (or NaN): adding and subtracting 2^23 rounds half to even in float32. */
inline float v2_rne_small(float t) { return (t + 8388608.0f) - 8388608.0f; }

/** clamp to [0, L] as the reference's `if (t < 0) t = 0; else if (t > L) t = L` (NaN stays), then rne. */
inline vf v2_clamp_rne_v(vf t, vf L) {
  const vf z = splat(0.0f), c = splat(8388608.0f);
  t = t < z ? z : t;
  t = t > L ? L : t;
  return (t + c) - c;
}

/** laneReduce of 16 lanes of every group at once: lane l of group j is acc[l][j]. */
inline void v2_reduce(Row* acc, int nv, float* out) {
  for (int w = LANES / 2; w >= 1; w >>= 1)
    for (int l = 0; l < w; l++)
      for (int v = 0; v < nv; v++) VF(acc[l])[v] = VF(acc[l])[v] + VF(acc[l + w])[v];
  for (int v = 0; v < nv; v++) VF(out)[v] = VF(acc[0])[v];
}

struct V2Batch {
  int nv;  // vectors of 8 groups in use (groups past the super-group's end are padding)
  int G;
  float levels;
  alignas(64) Row xt[V2_MAX_GROUP];
  alignas(64) Row mask[V2_MAX_GROUP];  // 1 where element i exists in group j
  alignas(64) Row qt[V2_MAX_GROUP];    // codes (floats) of the current candidate
  alignas(64) Row acc[4][LANES];
  alignas(64) float count[NB];  // elements of each group, as a float (n of fitToCodes)
  bool full;                    // every group has G elements (and there is no padding)

  inline void zero(Row* a) {
    for (int l = 0; l < LANES; l++)
      for (int v = 0; v < nv; v++) VF(a[l])[v] = splat(0.0f);
  }

  /** codesAndError for every group with per-group (scale, offset, inv); codes into qt. */
  inline void codes_and_error(const float* scale, const float* offset, const float* inv, float* err) {
    if (full) return codes_and_error_t<true>(scale, offset, inv, err);
    codes_and_error_t<false>(scale, offset, inv, err);
  }

  /** FULL: every group of the super-group has G elements (no mask needed). */
  template <bool FULL>
  inline void codes_and_error_t(const float* scale, const float* offset, const float* inv, float* err) {
    Row* a = acc[0];
    zero(a);
    const vf L = splat(levels), z = splat(0.0f);
    for (int i = 0; i < G; i++) {
      vf* al = VF(a[i % LANES]);
      for (int v = 0; v < nv; v++) {
        const vf x = VF(xt[i])[v], o = VF(offset)[v];
        const vf q = v2_clamp_rne_v((x + o) * VF(inv)[v], L);
        VF(qt[i])[v] = q;
        const vf e = x - (q * VF(scale)[v] - o);
        const vf e2 = e * e;
        al[v] = al[v] + (FULL ? e2 : (VF(mask[i])[v] != z ? e2 : z));
      }
    }
    v2_reduce(a, nv, err);
  }

  /** codesAndError of four (scale, offset, inv) per group at once (step C's pairs); no codes kept. */
  template <bool FULL>
  inline void errors4(const Row* scale, const Row* offset, const Row* inv, Row* err) {
    for (int c = 0; c < 4; c++) zero(acc[c]);
    const vf L = splat(levels), z = splat(0.0f);
    for (int i = 0; i < G; i++) {
      const int l = i % LANES;
      for (int v = 0; v < nv; v++) {
        const vf x = VF(xt[i])[v];
        const vi m = VF(mask[i])[v] != z;
        for (int c = 0; c < 4; c++) {
          const vf o = VF(offset[c])[v];
          const vf q = v2_clamp_rne_v((x + o) * VF(inv[c])[v], L);
          const vf e = x - (q * VF(scale[c])[v] - o);
          const vf e2 = e * e;
          VF(acc[c][l])[v] = VF(acc[c][l])[v] + (FULL ? e2 : (m ? e2 : z));
        }
      }
    }
    for (int c = 0; c < 4; c++) v2_reduce(acc[c], nv, err[c]);
  }

  /** The codes of (offset, inv) (as codesAndError makes them) and their fit, in one pass. */
  inline void codes_fit(const float* offset, const float* inv, const float* sx, float* scale, float* off, bool* ok) {
    zero(acc[0]);
    zero(acc[1]);
    zero(acc[2]);
    const vf L = splat(levels);
    for (int i = 0; i < G; i++)
      for (int v = 0; v < nv; v++) fit_add(i, v, v2_clamp_rne_v((VF(xt[i])[v] + VF(offset)[v]) * VF(inv)[v], L));
    fit_solve(sx, scale, off, ok);
  }

  /** Step A's candidate: codes rne(clamp((x − lo)·iscale)) and their fit, in one pass (same operations). */
  inline void fit_range_codes(const float* lo, const float* iscale, const float* sx, float* scale, float* offset, bool* ok) {
    zero(acc[0]);
    zero(acc[1]);
    zero(acc[2]);
    const vf L = splat(levels);
    for (int i = 0; i < G; i++)
      for (int v = 0; v < nv; v++) fit_add(i, v, v2_clamp_rne_v((VF(xt[i])[v] - VF(lo)[v]) * VF(iscale)[v], L));
    fit_solve(sx, scale, offset, ok);
  }

  inline void fit_add(int i, int v, vf q0) {
    const vf z = splat(0.0f);
    const int l = i % LANES;
    const vf q = q0 == q0 ? q0 : z;
    const vi m = VF(mask[i])[v] != z;
    VF(acc[0][l])[v] = VF(acc[0][l])[v] + (m ? q : z);
    VF(acc[1][l])[v] = VF(acc[1][l])[v] + (m ? q * q : z);
    VF(acc[2][l])[v] = VF(acc[2][l])[v] + (m ? VF(xt[i])[v] * q : z);
  }

  inline void fit_solve(const float* sx, float* scale, float* offset, bool* ok) {
    Row *a = acc[0], *b = acc[1], *c = acc[2];
    alignas(64) float sl[NB], sll[NB], sxl[NB];
    v2_reduce(a, nv, sl);
    v2_reduce(b, nv, sll);
    v2_reduce(c, nv, sxl);
    alignas(64) int okv[NB];
    const vf z = splat(0.0f);
    for (int v = 0; v < nv; v++) {
      const vf nf = VF(count)[v], l1 = VF(sl)[v], l2 = VF(sll)[v], xl = VF(sxl)[v], x1 = VF(sx)[v];
      const vf det = l2 * nf - l1 * l1;
      const vf s1 = (xl * nf - l1 * x1) / det;
      const vf o1 = (xl * l1 - l2 * x1) / det;
      const vi first = (det > z) & (s1 > z) & (o1 >= z);
      const vf s2 = xl / l2;
      const vi second = (l2 > z) & (s2 > z);
      VF(scale)[v] = first ? s1 : s2;
      VF(offset)[v] = first ? o1 : z;
      reinterpret_cast<vi*>(okv)[v] = first | second;
    }
    for (int j = 0; j < nv * VW; j++) ok[j] = okv[j] != 0;
  }
};

/** Index of the first NaN/±Inf of n elements of `dtype` (all exponent bits set), or −1; branch-free blocks. */
inline int64_t v2_first_non_finite(const uint8_t* src, int dtype, int64_t n) {
  constexpr int64_t BLK = 256;
  for (int64_t b0 = 0; b0 < n; b0 += BLK) {
    const int64_t b1 = b0 + BLK < n ? b0 + BLK : n;
    uint32_t any = 0;
    if (dtype == DT_F32) {
      for (int64_t i = b0; i < b1; i++) {
        uint32_t u;
        std::memcpy(&u, src + i * 4, 4);
        any |= (u & 0x7f800000u) == 0x7f800000u;
      }
    } else {
      const uint16_t e = dtype == DT_F16 ? 0x7c00 : 0x7f80;
      for (int64_t i = b0; i < b1; i++) any |= (load_u16(src + i * 2) & e) == e;
    }
    if (any)
      for (int64_t i = b0; i < b1; i++)
        if (!is_finite_f32(load_elem(src, dtype, i))) return i;
  }
  return -1;
}

/** n elements of a row of `dtype` into out (exact). */
inline void v2_decode(const uint8_t* p, int dtype, int n, float* out) {
  if (dtype == DT_F32) {
    std::memcpy(out, p, (size_t)n * 4);
  } else if (dtype == DT_BF16) {
    for (int i = 0; i < n; i++) out[i] = bf16_bits_to_f32(load_u16(p + i * 2));
  } else {
    for (int i = 0; i < n; i++) out[i] = f16_bits_to_f32(load_u16(p + i * 2));
  }
}

/** quantizeRowsV2Ref. */
inline int64_t quantize_v2_impl(const QuantV2Job& a) {
  const int64_t total = a.rows * a.cols;
  const int64_t bad = v2_first_non_finite(a.src, a.dtype, total);
  if (bad >= 0) return bad;
  const float levels = (float)((1 << a.bits) - 1);
  const V2Layout layout = v2_layout(a.bits, a.groupSize);
  const int QS = (1 << layout.scaleBits) - 1;
  const int QM = (1 << layout.offsetBits) - 1;
  const int G = a.groupSize;
  const int S = layout.superGroups;
  const int64_t gpr = (a.cols + G - 1) / G;
  const int64_t groups = a.rows * gpr;
  static_assert(NB % VW == 0, "super-groups are whole vectors");
  V2Batch B;
  alignas(64) Row wt[V2_MAX_GROUP];  // the original values (before colScale)
  alignas(64) Row csv[V2_MAX_GROUP];  // colScale of each element (1 for padding)
  alignas(64) float lo[NB], hi[NB], range[NB], off0[NB], bs[NB], bo[NB], sx[NB];
  alignas(64) float cs[NB], co[NB], iscale[NB], fs[NB], fo[NB];
  alignas(64) float scale[NB], offset[NB], inv[NB], err[NB], s2[NB], o2[NB], inv2[NB], err2[NB];
  alignas(64) int qs0[NB], qm0[NB], qs[NB], qm[NB], qsn[NB], qmn[NB];
  int nlen[NB];
  bool ok[NB], active[NB];
  float sLevels[64], oLevels[64];
  V2FieldWriter params(a.groupParams);
  BitWriter bw(a.packed, a.bits);
  double rowSums[4] = {0, 0, 0, 0};
  B.G = G;
  B.levels = levels;
  for (int64_t g0 = 0, k = 0; g0 < groups; g0 += S, k++) {
    const int ng = (int)(groups - g0 < S ? groups - g0 : S);
    const int nv = (ng + VW - 1) / VW;
    const int np = nv * VW;  // groups [ng, np) are padding: all elements 0 and masked
    B.nv = nv;
    for (int j = 0; j < np; j++) {
      const int64_t r = (g0 + j) / gpr;
      const int64_t c0 = ((g0 + j) % gpr) * G;
      const int n = j >= ng ? 0 : (int)(a.cols - c0 < G ? a.cols - c0 : G);
      nlen[j] = n;
      float w[V2_MAX_GROUP];
      v2_decode(a.src + (r * a.cols + c0) * dtype_size(a.dtype), a.dtype, n, w);
      for (int i = n; i < G; i++) w[i] = 0.0f;
      if (a.colScale) {
        for (int i = 0; i < G; i++) {
          wt[i][j] = w[i];
          B.xt[i][j] = i < n ? w[i] * a.colScale[c0 + i] : w[i];
        }
      } else {
        for (int i = 0; i < G; i++) B.xt[i][j] = w[i];  // w = x: wt is not used
      }
      for (int i = 0; i < G; i++) B.mask[i][j] = i < n ? 1.0f : 0.0f;
      B.count[j] = (float)n;
    }
    B.full = np == ng;
    for (int j = 0; j < ng; j++) B.full = B.full && nlen[j] == G;
    // Step A (fitGroup), every group at once.
    // min / max, and Σx in lane order (sumLanes; padding elements are 0), in one pass
    for (int v = 0; v < nv; v++) VF(lo)[v] = splat(INFINITY), VF(hi)[v] = splat(-INFINITY);
    B.zero(B.acc[0]);
    for (int i = 0; i < G; i++)
      for (int v = 0; v < nv; v++) {
        const vf x = VF(B.xt[i])[v];
        const vi mk = VF(B.mask[i])[v] != splat(0.0f);
        VF(lo)[v] = (mk & (x < VF(lo)[v])) ? x : VF(lo)[v];
        VF(hi)[v] = (mk & (x > VF(hi)[v])) ? x : VF(hi)[v];
        VF(B.acc[0][i % LANES])[v] = VF(B.acc[0][i % LANES])[v] + x;
      }
    v2_reduce(B.acc[0], nv, sx);
    for (int j = 0; j < np; j++) {
      lo[j] = lo[j] > 0.0f ? 0.0f : lo[j];
      range[j] = hi[j] - lo[j];
      off0[j] = -lo[j];
      iscale[j] = levels / range[j];
    }
    // fitGroup: the least-squares fit to the codes of the min/max range, else that range
    B.fit_range_codes(lo, iscale, sx, cs, co, ok);
    for (int j = 0; j < np; j++) {
      bs[j] = ok[j] ? cs[j] : range[j] / levels;
      bo[j] = ok[j] ? co[j] : off0[j];
    }
    float maxS = 0.0f, maxO = 0.0f;
    for (int j = 0; j < ng; j++) {
      const bool valid = range[j] > 0.0f;
      fs[j] = valid ? bs[j] : 0.0f;
      fo[j] = valid ? bo[j] : off0[j];
      if (fs[j] > maxS) maxS = fs[j];
      if (fo[j] > maxO) maxO = fo[j];
    }
    // Step B.
    const uint16_t dBits = v2_factor_bits(maxS, v2_scale_multiplier(QS, layout));
    const uint16_t mBits = v2_factor_bits(maxO, (float)QM);
    const float d = f16_bits_to_f32(dBits), m = f16_bits_to_f32(mBits);
    a.superScales[k] = dBits;
    a.superOffsets[k] = mBits;
    for (int q = 0; q <= QS; q++) sLevels[q] = d * v2_scale_multiplier(q, layout);
    for (int q = 0; q <= QM; q++) oLevels[q] = m * (float)q;
    // Step C: floor levels, the 2 × 2 pairs, then refits while the error falls.
    for (int j = ng; j < np; j++) fs[j] = 0.0f, fo[j] = 0.0f;
    for (int j = 0; j < np; j++) qs0[j] = 0, qm0[j] = 0;
    for (int q = 1; q <= QS; q++)
      for (int j = 0; j < np; j++) qs0[j] = sLevels[q] <= fs[j] ? q : qs0[j];
    for (int q = 1; q <= QM; q++)
      for (int j = 0; j < np; j++) qm0[j] = oLevels[q] <= fo[j] ? q : qm0[j];
    alignas(64) Row s4[4], o4[4], inv4[4], err4[4];
    alignas(64) int qs4[4][NB], qm4[4][NB];
    for (int c = 0; c < 4; c++) {
      for (int j = 0; j < np; j++) {
        const int a1 = qs0[j] + (c & 1), b1 = qm0[j] + (c >> 1);
        qs4[c][j] = a1 < QS ? a1 : QS;
        qm4[c][j] = b1 < QM ? b1 : QM;
        s4[c][j] = sLevels[qs4[c][j]];
        o4[c][j] = oLevels[qm4[c][j]];
        inv4[c][j] = s4[c][j] > 0.0f ? 1.0f / s4[c][j] : 0.0f;
      }
    }
    if (B.full) B.errors4<true>(s4, o4, inv4, err4);
    else B.errors4<false>(s4, o4, inv4, err4);
    for (int c = 0; c < 4; c++) {
      for (int j = 0; j < np; j++) {
        const bool take = c == 0 || err4[c][j] < err[j];
        qs[j] = take ? qs4[c][j] : qs[j];
        qm[j] = take ? qm4[c][j] : qm[j];
        err[j] = take ? err4[c][j] : err[j];
      }
    }
    for (int j = 0; j < np; j++) active[j] = j < ng;  // sx of step A still holds Σx
    for (int round = 0; round < V2_REFIT_ROUNDS; round++) {
      for (int j = 0; j < np; j++) {
        scale[j] = sLevels[qs[j]];
        offset[j] = oLevels[qm[j]];
        inv[j] = scale[j] > 0.0f ? 1.0f / scale[j] : 0.0f;
      }
      B.codes_fit(offset, inv, sx, fs, fo, ok);  // fitToCodes of the current codes
      bool any = false;
      for (int j = 0; j < np; j++) {
        qsn[j] = active[j] && ok[j] ? v2_nearest_level(sLevels, QS + 1, fs[j]) : qs[j];
        qmn[j] = active[j] && ok[j] ? v2_nearest_level(oLevels, QM + 1, fo[j]) : qm[j];
        active[j] = active[j] && ok[j] && (qsn[j] != qs[j] || qmn[j] != qm[j]);
        any = any || active[j];
        s2[j] = sLevels[qsn[j]];
        o2[j] = oLevels[qmn[j]];
        inv2[j] = s2[j] > 0.0f ? 1.0f / s2[j] : 0.0f;
      }
      if (!any) break;
      B.codes_and_error(s2, o2, inv2, err2);
      for (int j = 0; j < np; j++) {
        active[j] = active[j] && err2[j] < err[j];
        qs[j] = active[j] ? qsn[j] : qs[j];
        qm[j] = active[j] ? qmn[j] : qm[j];
        err[j] = active[j] ? err2[j] : err[j];
      }
    }
    for (int j = 0; j < np; j++) {
      if (j < ng) {
        params.put((uint32_t)qs[j], layout.scaleBits);
        params.put((uint32_t)qm[j], layout.offsetBits);
      }
      scale[j] = sLevels[qs[j]];
      offset[j] = oLevels[qm[j]];
      inv[j] = scale[j] > 0.0f ? 1.0f / scale[j] : 0.0f;
    }
    // Codes and statistics, in group order (the codes as codesAndError makes them).
    alignas(64) float sums[4][NB];
    alignas(64) Row st[4][LANES];
    for (int s = 0; s < 4; s++) B.zero(st[s]);
    if (a.colScale) {
      // ŵ / s_j per element; padding and short groups keep ŵ (masked out below)
      for (int j = 0; j < ng; j++) {
        const int64_t c0 = ((g0 + j) % gpr) * G;
        for (int i = 0; i < nlen[j]; i++) csv[i][j] = a.colScale[c0 + i];
        for (int i = nlen[j]; i < G; i++) csv[i][j] = 1.0f;
      }
      for (int j = ng; j < np; j++)
        for (int i = 0; i < G; i++) csv[i][j] = 1.0f;
    }
    const vf z = splat(0.0f), Lv = splat(levels);
    // FULL (every group complete, no colScale): no masks needed
    auto stats = [&](auto fullTag) {
      constexpr bool FULL = decltype(fullTag)::value;
      for (int i = 0; i < G; i++) {
        const int l = i % LANES;
        for (int v = 0; v < nv; v++) {
          const vi mk = VF(B.mask[i])[v] != z;
          const vf w = !FULL && a.colScale ? VF(wt[i])[v] : VF(B.xt[i])[v];
          const vf q = v2_clamp_rne_v((VF(B.xt[i])[v] + VF(offset)[v]) * VF(inv)[v], Lv);
          VF(B.qt[i])[v] = q;
          vf wh = q * VF(scale)[v] - VF(offset)[v];
          if (!FULL && a.colScale) wh = mk ? wh / VF(csv[i])[v] : wh;
          const vf e = w - wh;
          VF(st[0][l])[v] = VF(st[0][l])[v] + (FULL ? w * w : (mk ? w * w : z));
          VF(st[1][l])[v] = VF(st[1][l])[v] + (FULL ? e * e : (mk ? e * e : z));
          VF(st[2][l])[v] = VF(st[2][l])[v] + (FULL ? w * wh : (mk ? w * wh : z));
          VF(st[3][l])[v] = VF(st[3][l])[v] + (FULL ? wh * wh : (mk ? wh * wh : z));
        }
      }
    };
    if (B.full && !a.colScale) stats(V2Flag<true>{});
    else stats(V2Flag<false>{});
    for (int s = 0; s < 4; s++) v2_reduce(st[s], nv, sums[s]);
    uint8_t codes[V2_MAX_GROUP];
    const bool direct = B.full && bw.nbits == 0;
    if (direct) {
      // Complete groups on a byte boundary: each output byte at once for every group (the
      // bit writer's bytes: codes LSB first, 8 / bits per byte).
      const int per = 8 / a.bits, bpg = G * a.bits / 8;
      alignas(64) int byte[NB];
      for (int k = 0; k < bpg; k++) {
        for (int v = 0; v < nv; v++) {
          vi acc = vi{} + 0;
          for (int t = 0; t < per; t++) {
            const vf q = VF(B.qt[k * per + t])[v];
            const vi c = __builtin_convertvector(q == q ? q : splat(0.0f), vi);
            acc = acc | (c << (t * a.bits));
          }
          reinterpret_cast<vi*>(byte)[v] = acc;
        }
        uint8_t* dst = a.packed + bw.pos + k;
        for (int j = 0; j < ng; j++) dst[(size_t)j * bpg] = (uint8_t)byte[j];
      }
      bw.pos += (size_t)ng * bpg;
    }
    for (int j = 0; j < ng; j++) {
      if (!direct) {
        for (int i = 0; i < nlen[j]; i++) codes[i] = (uint8_t)code_of(B.qt[i][j]);
        bw.put_all(codes, nlen[j]);
      }
      const int64_t gi = g0 + j;
      for (int s = 0; s < 4; s++) rowSums[s] += (double)sums[s][j];
      if ((gi + 1) % gpr == 0) {
        const int64_t r = gi / gpr;
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
