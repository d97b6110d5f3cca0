// AVX-512 (F, BW, VL, DQ) + F16C variant: one 16-lane register per accumulator, exactly the
// reference's 16 lanes. Every function in this file is compiled with
// __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c"))) through the
// region below, and only called after dispatch.cc has checked the CPU.
#include <immintrin.h>

#if defined(__GNUC__) && !defined(__clang__)
// GCC 12 warns about _mm512_undefined_* inside its own intrinsics, and about the vector ABI of
// these internal-linkage helpers; neither applies (everything here is inlined, same target).
#pragma GCC diagnostic ignored "-Wpsabi"
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

// Standard headers first, outside the target region (their inline functions have external
// linkage and must not be compiled for this ISA); then common.h inside it, so that its
// internal-linkage helpers (chooseParams & co.) are compiled for this ISA and inline.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#define AQ_AVX512_TARGET "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c"

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target(AQ_AVX512_TARGET))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")
#endif

#include "../../common.h"
#include "../../variants.h"
#include "x86_pack.h"
#include "x86_batch.h"

namespace aq {
namespace {

struct Avx512 : X86Pack, X86Batch {
  using V = __m512;
  static constexpr int W = 16;
  static inline V zero() { return _mm512_setzero_ps(); }
  static inline V set1(float f) { return _mm512_set1_ps(f); }
  static inline V load(const float* p) { return _mm512_load_ps(p); }
  static inline V loadu(const float* p) { return _mm512_loadu_ps(p); }
  static inline void store(float* p, V v) { _mm512_store_ps(p, v); }
  static inline void storeu(float* p, V v) { _mm512_storeu_ps(p, v); }
  template <int DT>
  static inline V load_src(const uint8_t* p) {
    if constexpr (DT == DT_F32) {
      return _mm512_loadu_ps((const float*)p);
    } else if constexpr (DT == DT_F16) {
      return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)p));
    } else {
      return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)p)), 16));
    }
  }
  static inline V add(V a, V b) { return _mm512_add_ps(a, b); }
  static inline V sub(V a, V b) { return _mm512_sub_ps(a, b); }
  static inline V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static inline V div(V a, V b) { return _mm512_div_ps(a, b); }
  static inline V min_sel(V a, V b) { return _mm512_min_ps(a, b); }  // a < b ? a : b
  static inline V max_sel(V a, V b) { return _mm512_max_ps(a, b); }  // a > b ? a : b
  static inline V round(V a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static inline V abs(V a) {
    return _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(a), _mm512_set1_epi32(0x7fffffff)));
  }
  static inline float hmin(V v) {
    __m256 h = _mm256_min_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    __m128 m = _mm_min_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    m = _mm_min_ps(m, _mm_movehl_ps(m, m));
    m = _mm_min_ss(m, _mm_shuffle_ps(m, m, 1));
    return _mm_cvtss_f32(m);
  }
  static inline float hmax(V v) {
    __m256 h = _mm256_max_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
    return _mm_cvtss_f32(m);
  }
  /** laneReduce of one 16-lane register: j += j+8, +4, +2, +1. */
  static inline float reduce16(const V* acc) {
    const __m256 s = _mm256_add_ps(_mm512_castps512_ps256(acc[0]), _mm512_extractf32x8_ps(acc[0], 1));
    __m128 t = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    t = _mm_add_ps(t, _mm_movehl_ps(t, t));
    t = _mm_add_ss(t, _mm_shuffle_ps(t, t, 1));
    return _mm_cvtss_f32(t);
  }
  /** Integral floats in [0, L] (NaN → 0x80000000 → truncated to 0, like JS `NaN << n`) → 16 bytes in order. */
  using P = __m128i;
  static inline P pack16(const V* q) { return _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(q[0])); }
  static inline void store16(uint8_t* dst, P p) { _mm_storeu_si128((__m128i*)dst, p); }
  /** laneReduce of four statistics at once (j += j+8, +4, +2, +1), into out[0..3]. */
  static inline void reduce4(const V* a, const V* b, const V* c, const V* d, float* out) {
    const __m256 A = _mm256_add_ps(_mm512_castps512_ps256(a[0]), _mm512_extractf32x8_ps(a[0], 1));  // j += j+8
    const __m256 B = _mm256_add_ps(_mm512_castps512_ps256(b[0]), _mm512_extractf32x8_ps(b[0], 1));
    const __m256 C = _mm256_add_ps(_mm512_castps512_ps256(c[0]), _mm512_extractf32x8_ps(c[0], 1));
    const __m256 D = _mm256_add_ps(_mm512_castps512_ps256(d[0]), _mm512_extractf32x8_ps(d[0], 1));
    const __m256 AB = _mm256_add_ps(_mm256_permute2f128_ps(A, B, 0x20), _mm256_permute2f128_ps(A, B, 0x31));  // j += j+4
    const __m256 CD = _mm256_add_ps(_mm256_permute2f128_ps(C, D, 0x20), _mm256_permute2f128_ps(C, D, 0x31));
    const __m256 Z = _mm256_add_ps(_mm256_shuffle_ps(AB, CD, _MM_SHUFFLE(1, 0, 1, 0)), _mm256_shuffle_ps(AB, CD, _MM_SHUFFLE(3, 2, 3, 2)));
    const __m256 R = _mm256_add_ps(_mm256_shuffle_ps(Z, Z, _MM_SHUFFLE(2, 0, 2, 0)), _mm256_shuffle_ps(Z, Z, _MM_SHUFFLE(3, 1, 3, 1)));
    const __m128 abcd = _mm_unpacklo_ps(_mm256_castps256_ps128(R), _mm256_extractf128_ps(R, 1));
    _mm_storeu_ps(out, abcd);
  }
  static inline V nonfinite_acc(V acc, V v) {
    const __m512i m = _mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32(0x7fffffff));
    return _mm512_castsi512_ps(_mm512_max_epu32(_mm512_castps_si512(acc), m));
  }
  static inline bool any_nonfinite(V acc) {
    return _mm512_cmpgt_epu32_mask(_mm512_castps_si512(acc), _mm512_set1_epi32(0x7f7fffff)) != 0;
  }
  // F16C: equal to f32ToF16Bits / F16_TABLE for the finite values chooseParams converts.
  static inline uint16_t to_f16(float v) { return (uint16_t)_cvtss_sh(v, _MM_FROUND_TO_NEAREST_INT); }
  static inline float from_f16(uint16_t h) { return _cvtsh_ss(h); }
  template <int BITS>
  static inline void pack32(P a, P b, uint8_t* dst) {
    alignas(32) uint8_t c[32];
    _mm_store_si128((__m128i*)c, a);
    _mm_store_si128((__m128i*)(c + 16), b);
    pack_aligned(c, 32, BITS, dst);
  }
  static inline void hmin_batch(const V* v, int n, float* out) {
    int j = 0;
    for (; j + 8 <= n; j += 8) {
      __m256 h[8];
      for (int g = 0; g < 8; g++) h[g] = _mm256_min_ps(_mm512_castps512_ps256(v[j + g]), _mm512_extractf32x8_ps(v[j + g], 1));
      _mm256_storeu_ps(out + j, reduce8<false>(h));
    }
    for (; j < n; j++) out[j] = hmin(v[j]);
  }
  static inline void hmax_batch(const V* v, int n, float* out) {
    int j = 0;
    for (; j + 8 <= n; j += 8) {
      __m256 h[8];
      for (int g = 0; g < 8; g++) h[g] = _mm256_max_ps(_mm512_castps512_ps256(v[j + g]), _mm512_extractf32x8_ps(v[j + g], 1));
      _mm256_storeu_ps(out + j, reduce8<true>(h));
    }
    for (; j < n; j++) out[j] = hmax(v[j]);
  }
  static inline void choose_params_batch(const float* lo, const float* hi, int n, float levels, uint16_t* sb,
                                         uint16_t* zb, float* scale, float* zero, float* inv) {
    int j = 0;
    for (; j + 8 <= n; j += 8) choose_params8(lo + j, hi + j, levels, sb + j, zb + j, scale + j, zero + j, inv + j);
    for (; j < n; j++) {
      const Params p = choose_params<Avx512>(lo[j], hi[j], levels);
      sb[j] = p.scaleBits, zb[j] = p.zeroBits, scale[j] = p.scale, zero[j] = p.zero, inv[j] = p.inv;
    }
  }
  static inline V load_codes(const uint8_t* c) {
    return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)c)));
  }
};

}  // namespace
}  // namespace aq

#include "../../simd_driver.h"
#define AQ_V2_VECTOR_BYTES 64
#include "../../v2_kernel.h"

namespace aq {
namespace {

__attribute__((target(AQ_AVX512_TARGET))) int64_t quantize_avx512(const QuantJob& a) { return quantize_entry<Avx512>(a); }
__attribute__((target(AQ_AVX512_TARGET))) void dequantize_avx512(const DequantJob& a) { dequantize_simd<Avx512>(a); }
__attribute__((target(AQ_AVX512_TARGET))) void column_abs_max_avx512(const ColumnAbsMaxJob& a) {
  column_abs_max_entry<Avx512>(a);
}

__attribute__((target(AQ_AVX512_TARGET))) int64_t quantize_v2_avx512(const QuantV2Job& a) { return quantize_v2_impl(a); }
__attribute__((target(AQ_AVX512_TARGET))) void dequantize_v2_avx512(const DequantV2Job& a) { dequantize_v2_impl(a); }

}  // namespace

const KernelFns kAvx512Kernel = {"avx512", quantize_avx512, dequantize_avx512, column_abs_max_avx512, quantize_v2_avx512,
                                 dequantize_v2_avx512};

}  // namespace aq

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
