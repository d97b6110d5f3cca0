// Per-chunk work done for eight groups at once (AVX2 + F16C; also used by the AVX-512
// variant): horizontal minima / maxima, and chooseParams with blends instead of branches.
// Included inside each x86 variant's target region.
#pragma once

namespace aq {
namespace {

struct X86Batch {
  /** r[g] = min (or max) over the 8 lanes of v[g], for g = 0..7 (a transposing reduction). */
  template <bool MAX>
  static inline __m256 reduce8(const __m256* v) {
    auto op = [](__m256 a, __m256 b) { return MAX ? _mm256_max_ps(a, b) : _mm256_min_ps(a, b); };
    // [g0 g1 g0 g1 | ...] pairs of lanes, then quads, then the two 128-bit halves.
    const __m256 t0 = op(_mm256_unpacklo_ps(v[0], v[1]), _mm256_unpackhi_ps(v[0], v[1]));
    const __m256 t1 = op(_mm256_unpacklo_ps(v[2], v[3]), _mm256_unpackhi_ps(v[2], v[3]));
    const __m256 t2 = op(_mm256_unpacklo_ps(v[4], v[5]), _mm256_unpackhi_ps(v[4], v[5]));
    const __m256 t3 = op(_mm256_unpacklo_ps(v[6], v[7]), _mm256_unpackhi_ps(v[6], v[7]));
    const __m256 u0 = op(_mm256_shuffle_ps(t0, t1, _MM_SHUFFLE(1, 0, 1, 0)), _mm256_shuffle_ps(t0, t1, _MM_SHUFFLE(3, 2, 3, 2)));
    const __m256 u1 = op(_mm256_shuffle_ps(t2, t3, _MM_SHUFFLE(1, 0, 1, 0)), _mm256_shuffle_ps(t2, t3, _MM_SHUFFLE(3, 2, 3, 2)));
    return op(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
  }

  /**
   * chooseParams (common.h) for eight groups, lane for lane: the same IEEE operations, the
   * branches as blends. F16C converts only finite values here (s ≤ 65504, zero points clamped),
   * where it equals f32ToF16Bits.
   */
  static inline void choose_params8(const float* loIn, const float* hiIn, float levels, uint16_t* sbOut,
                                    uint16_t* zbOut, float* scaleOut, float* zeroOut, float* invOut) {
    const __m256 lo = _mm256_loadu_ps(loIn), hi = _mm256_loadu_ps(hiIn);
    const __m256 sign = _mm256_set1_ps(-0.0f), fmax = _mm256_set1_ps(F16_MAX), fmin = _mm256_set1_ps(-F16_MAX);
    const __m256 neglo = _mm256_xor_ps(lo, sign);
    const __m256 eq = _mm256_cmp_ps(lo, hi, _CMP_EQ_OQ);
    __m256 s = _mm256_div_ps(_mm256_sub_ps(hi, lo), _mm256_set1_ps(levels));
    const __m256 sz = _mm256_div_ps(_mm256_andnot_ps(sign, lo), _mm256_set1_ps(Z_LIMIT));
    s = _mm256_blendv_ps(s, sz, _mm256_cmp_ps(sz, s, _CMP_GT_OQ));      // if (sz > s) s = sz
    s = _mm256_blendv_ps(s, fmax, _mm256_cmp_ps(s, fmax, _CMP_GT_OQ));  // if (s > F16_MAX) s = F16_MAX
    const __m128i sb = _mm256_cvtps_ph(s, _MM_FROUND_TO_NEAREST_INT);
    const __m128i sbZero = _mm_cmpeq_epi16(_mm_and_si128(sb, _mm_set1_epi16(0x7fff)), _mm_setzero_si128());
    const __m256i eqi = _mm256_castps_si256(eq);
    // scale stays 1 (and the zero point is −lo) for constant groups and scales that round to 0
    const __m128i keep16 = _mm_or_si128(sbZero, _mm_packs_epi32(_mm256_castsi256_si128(eqi), _mm256_extracti128_si256(eqi, 1)));
    const __m256 keep32 = _mm256_castsi256_ps(_mm256_cvtepi16_epi32(keep16));
    const __m256 z = _mm256_div_ps(neglo, _mm256_cvtph_ps(sb));  // unused (blended away) where keep
    const __m128i scaleBits = _mm_blendv_epi8(sb, _mm_set1_epi16(0x3c00), keep16);
    __m256 zs = _mm256_blendv_ps(z, neglo, keep32);
    zs = _mm256_blendv_ps(zs, fmax, _mm256_cmp_ps(zs, fmax, _CMP_GT_OQ));  // clampF16
    zs = _mm256_blendv_ps(zs, fmin, _mm256_cmp_ps(zs, fmin, _CMP_LT_OQ));
    const __m128i zeroBits = _mm256_cvtps_ph(zs, _MM_FROUND_TO_NEAREST_INT);
    const __m256 scale = _mm256_cvtph_ps(scaleBits);
    _mm_storeu_si128((__m128i*)sbOut, scaleBits);
    _mm_storeu_si128((__m128i*)zbOut, zeroBits);
    _mm256_storeu_ps(scaleOut, scale);
    _mm256_storeu_ps(zeroOut, _mm256_cvtph_ps(zeroBits));
    _mm256_storeu_ps(invOut, _mm256_div_ps(_mm256_set1_ps(1.0f), scale));
  }
};

}  // namespace
}  // namespace aq
