// AVX2 + FMA + F16C variant (x86-64 since Haswell / Zen). Every function in this file is
// compiled with __attribute__((target("avx2,fma,f16c"))) through the region below, and only
// called after dispatch.cc has checked the CPU; nothing here is fused (FMA is never emitted:
// the build uses -ffp-contract=off and no FMA intrinsic is used).
#include <immintrin.h>

#if defined(__GNUC__) && !defined(__clang__)
// GCC 12 warns about _mm512_undefined_* inside its own intrinsics, and about the vector ABI of
// these internal-linkage helpers; neither applies (everything here is inlined, same target).
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

// Standard headers first, outside the target region (their inline functions have external
// linkage and must not be compiled for this ISA); then common.h inside it, so that its
// internal-linkage helpers (chooseParams & co.) are compiled for this ISA and inline.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#endif

#include "../../common.h"
#include "../../variants.h"
#include "x86_pack.h"
#include "x86_batch.h"

namespace aq {
namespace {

struct Avx2 : X86Pack, X86Batch {
  using V = __m256;
  static constexpr int W = 8;
  static inline V zero() { return _mm256_setzero_ps(); }
  static inline V set1(float f) { return _mm256_set1_ps(f); }
  static inline V load(const float* p) { return _mm256_load_ps(p); }
  static inline V loadu(const float* p) { return _mm256_loadu_ps(p); }
  static inline void store(float* p, V v) { _mm256_store_ps(p, v); }
  static inline void storeu(float* p, V v) { _mm256_storeu_ps(p, v); }
  template <int DT>
  static inline V load_src(const uint8_t* p) {
    if constexpr (DT == DT_F32) {
      return _mm256_loadu_ps((const float*)p);
    } else if constexpr (DT == DT_F16) {
      return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)p));
    } else {
      return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)p)), 16));
    }
  }
  static inline V add(V a, V b) { return _mm256_add_ps(a, b); }
  static inline V sub(V a, V b) { return _mm256_sub_ps(a, b); }
  static inline V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static inline V div(V a, V b) { return _mm256_div_ps(a, b); }
  static inline V min_sel(V a, V b) { return _mm256_min_ps(a, b); }  // a < b ? a : b
  static inline V max_sel(V a, V b) { return _mm256_max_ps(a, b); }  // a > b ? a : b
  static inline V round(V a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static inline V abs(V a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a); }
  static inline float hmin(V v) {
    __m128 m = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_min_ps(m, _mm_movehl_ps(m, m));
    m = _mm_min_ss(m, _mm_shuffle_ps(m, m, 1));
    return _mm_cvtss_f32(m);
  }
  static inline float hmax(V v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
    return _mm_cvtss_f32(m);
  }
  /** laneReduce over lanes 0-7 (acc[0]) and 8-15 (acc[1]): j += j+8, +4, +2, +1. */
  static inline float reduce16(const V* acc) {
    const V s = _mm256_add_ps(acc[0], acc[1]);
    __m128 t = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    t = _mm_add_ps(t, _mm_movehl_ps(t, t));
    t = _mm_add_ss(t, _mm_shuffle_ps(t, t, 1));
    return _mm_cvtss_f32(t);
  }
  /**
   * laneReduce of four statistics at once, into out[0..3].
   * Each lane sees exactly the additions of laneReduce: j += j+8, +4, +2, +1.
   */
  static inline void reduce4(const V* a, const V* b, const V* c, const V* d, float* out) {
    const __m256 A = _mm256_add_ps(a[0], a[1]), B = _mm256_add_ps(b[0], b[1]);  // j += j+8
    const __m256 C = _mm256_add_ps(c[0], c[1]), D = _mm256_add_ps(d[0], d[1]);
    const __m256 AB = _mm256_add_ps(_mm256_permute2f128_ps(A, B, 0x20), _mm256_permute2f128_ps(A, B, 0x31));  // j += j+4
    const __m256 CD = _mm256_add_ps(_mm256_permute2f128_ps(C, D, 0x20), _mm256_permute2f128_ps(C, D, 0x31));
    // [a0 a1 c0 c1 | b0 b1 d0 d1] + [a2 a3 c2 c3 | b2 b3 d2 d3]                             j += j+2
    const __m256 Z = _mm256_add_ps(_mm256_shuffle_ps(AB, CD, _MM_SHUFFLE(1, 0, 1, 0)), _mm256_shuffle_ps(AB, CD, _MM_SHUFFLE(3, 2, 3, 2)));
    // [a c a c | b d b d]                                                                     j += j+1
    const __m256 R = _mm256_add_ps(_mm256_shuffle_ps(Z, Z, _MM_SHUFFLE(2, 0, 2, 0)), _mm256_shuffle_ps(Z, Z, _MM_SHUFFLE(3, 1, 3, 1)));
    const __m128 abcd = _mm_unpacklo_ps(_mm256_castps256_ps128(R), _mm256_extractf128_ps(R, 1));
    _mm_storeu_ps(out, abcd);
  }
  /** Collects "some lane is NaN or ±Inf" as an unsigned max of |bits|. */
  static inline V nonfinite_acc(V acc, V v) {
    const __m256i m = _mm256_and_si256(_mm256_castps_si256(v), _mm256_set1_epi32(0x7fffffff));
    return _mm256_castsi256_ps(_mm256_max_epu32(_mm256_castps_si256(acc), m));
  }
  static inline bool any_nonfinite(V acc) {
    return _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_castps_si256(acc), _mm256_set1_epi32(0x7f7fffff)))) != 0;
  }
  // F16C: equal to f32ToF16Bits / F16_TABLE for the finite values chooseParams converts.
  static inline uint16_t to_f16(float v) { return (uint16_t)_cvtss_sh(v, _MM_FROUND_TO_NEAREST_INT); }
  static inline float from_f16(uint16_t h) { return _cvtsh_ss(h); }
  /**
   * Codes: two vectors (16 elements) of integral floats in [0, L] or NaN (→ 0x80000000, which
   * saturates to 0 like JS `NaN << n`) → 16-bit lanes [c0-3 c8-11 | c4-7 c12-15].
   */
  using P = __m256i;
  static inline P pack16(const V* q) { return _mm256_packs_epi32(_mm256_cvttps_epi32(q[0]), _mm256_cvttps_epi32(q[1])); }
  static inline void store16(uint8_t* dst, P p) {
    p = _mm256_permute4x64_epi64(p, _MM_SHUFFLE(3, 1, 2, 0));
    _mm_storeu_si128((__m128i*)dst, _mm_packus_epi16(_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1)));
  }
  /** 32 codes (ab = elements 0-15, cd = 16-31, as pack16 left them) → 32·BITS/8 packed bytes. */
  template <int BITS>
  static inline void pack32(P ab, P cd, uint8_t* dst) {
    // bytes: [a0-3 b0-3 c0-3 d0-3 | a4-7 b4-7 c4-7 d4-7] (a, b, c, d: elements 0-7, 8-15, 16-23, 24-31)
    const __m256i x = _mm256_packus_epi16(ab, cd);
    if constexpr (BITS == 8) {
      const __m256i o = _mm256_permutevar8x32_epi32(x, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
      _mm256_storeu_si256((__m256i*)dst, o);
    } else if constexpr (BITS == 4) {
      // 16-bit: [a01 a23 b01 b23 c01 c23 d01 d23 | a45 a67 b45 b67 ...], pair = c0 + 16·c1
      const __m256i y = _mm256_maddubs_epi16(x, _mm256_set1_epi16(0x1001));
      const __m256i z = _mm256_packus_epi16(y, y);  // bytes, per 128-bit lane
      const __m128i lo = _mm256_castsi256_si128(z), hi = _mm256_extracti128_si256(z, 1);
      _mm_storeu_si128((__m128i*)dst, _mm_unpacklo_epi16(lo, hi));
    } else {
      // 32-bit: [a0123 b0123 c0123 d0123 | a4567 ...], quad = c0 + 4·c1 + 16·c2 + 64·c3
      const __m256i y = _mm256_madd_epi16(_mm256_maddubs_epi16(x, _mm256_set1_epi16(0x0401)), _mm256_set1_epi32(0x00100001));
      const __m256i z = _mm256_packus_epi16(_mm256_packus_epi32(y, y), _mm256_setzero_si256());
      const __m128i lo = _mm256_castsi256_si128(z), hi = _mm256_extracti128_si256(z, 1);
      _mm_storel_epi64((__m128i*)dst, _mm_unpacklo_epi8(lo, hi));
    }
  }
  static inline void hmin_batch(const V* v, int n, float* out) {
    int j = 0;
    for (; j + 8 <= n; j += 8) _mm256_storeu_ps(out + j, reduce8<false>(v + j));
    for (; j < n; j++) out[j] = hmin(v[j]);
  }
  static inline void hmax_batch(const V* v, int n, float* out) {
    int j = 0;
    for (; j + 8 <= n; j += 8) _mm256_storeu_ps(out + j, reduce8<true>(v + j));
    for (; j < n; j++) out[j] = hmax(v[j]);
  }
  static inline void choose_params_batch(const float* lo, const float* hi, int n, float levels, uint16_t* sb,
                                         uint16_t* zb, float* scale, float* zero, float* inv) {
    int j = 0;
    for (; j + 8 <= n; j += 8) choose_params8(lo + j, hi + j, levels, sb + j, zb + j, scale + j, zero + j, inv + j);
    for (; j < n; j++) {
      const Params p = choose_params<Avx2>(lo[j], hi[j], levels);
      sb[j] = p.scaleBits, zb[j] = p.zeroBits, scale[j] = p.scale, zero[j] = p.zero, inv[j] = p.inv;
    }
  }
  static inline V load_codes(const uint8_t* c) {
    return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)c)));
  }
};

}  // namespace
}  // namespace aq

#include "../../simd_driver.h"
#include "../../v2_kernel.h"

namespace aq {
namespace {

__attribute__((target("avx2,fma,f16c"))) int64_t quantize_avx2(const QuantJob& a) { return quantize_entry<Avx2>(a); }
__attribute__((target("avx2,fma,f16c"))) void dequantize_avx2(const DequantJob& a) { dequantize_simd<Avx2>(a); }
__attribute__((target("avx2,fma,f16c"))) void column_abs_max_avx2(const ColumnAbsMaxJob& a) {
  column_abs_max_entry<Avx2>(a);
}

__attribute__((target("avx2,fma,f16c"))) int64_t quantize_v2_avx2(const QuantV2Job& a) { return quantize_v2_impl(a); }
__attribute__((target("avx2,fma,f16c"))) void dequantize_v2_avx2(const DequantV2Job& a) { dequantize_v2_impl(a); }

}  // namespace

const KernelFns kAvx2Kernel = {"avx2", quantize_avx2, dequantize_avx2, column_abs_max_avx2, quantize_v2_avx2, dequantize_v2_avx2};

}  // namespace aq

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
