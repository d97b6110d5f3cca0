// Byte-aligned packing and unpacking of codes with SSE4.1/SSSE3 (part of every x86 SIMD target
// here). Included inside each x86 variant's target region; n is a multiple of 16.
#pragma once

namespace aq {
namespace {

struct X86Pack {
  /** codes[0..n) (each ≤ 2^bits − 1) → n·bits/8 bytes, least-significant bits first. */
  static inline void pack_aligned(const uint8_t* codes, int n, int bits, uint8_t* out) {
    if (bits == 8) {
      std::memcpy(out, codes, (size_t)n);
    } else if (bits == 4) {
      const __m128i m = _mm_set1_epi16(0x1001);  // c0 + 16·c1
      for (int k = 0; k < n; k += 16) {
        const __m128i t = _mm_maddubs_epi16(_mm_loadu_si128((const __m128i*)(codes + k)), m);
        _mm_storel_epi64((__m128i*)(out + k / 2), _mm_packus_epi16(t, t));
      }
    } else {
      const __m128i m1 = _mm_set1_epi16(0x0401);      // c0 + 4·c1
      const __m128i m2 = _mm_set1_epi32(0x00100001);  // (c0 + 4·c1) + 16·(c2 + 4·c3)
      for (int k = 0; k < n; k += 16) {
        __m128i t = _mm_maddubs_epi16(_mm_loadu_si128((const __m128i*)(codes + k)), m1);
        t = _mm_madd_epi16(t, m2);
        t = _mm_packus_epi32(t, t);
        t = _mm_packus_epi16(t, t);
        const uint32_t v = (uint32_t)_mm_cvtsi128_si32(t);
        std::memcpy(out + k / 4, &v, 4);
      }
    }
  }

  /** The inverse: n·bits/8 bytes → n codes. */
  static inline void unpack_aligned(const uint8_t* packed, int n, int bits, uint8_t* codes) {
    if (bits == 8) {
      std::memcpy(codes, packed, (size_t)n);
    } else if (bits == 4) {
      const __m128i m = _mm_set1_epi8(0x0f);
      for (int k = 0; k < n; k += 16) {
        const __m128i v = _mm_loadl_epi64((const __m128i*)(packed + k / 2));
        const __m128i lo = _mm_and_si128(v, m);
        const __m128i hi = _mm_and_si128(_mm_srli_epi16(v, 4), m);
        _mm_storeu_si128((__m128i*)(codes + k), _mm_unpacklo_epi8(lo, hi));
      }
    } else {
      // Each byte to four bytes, then a per-byte mask of its own two bits and a multiply-free
      // shift: bytes 4i+j hold (b >> 2j) & 3 after shifting the 16-bit lanes.
      const __m128i rep = _mm_setr_epi8(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
      const __m128i m = _mm_set1_epi8(0x03);
      for (int k = 0; k < n; k += 16) {
        uint32_t b;
        std::memcpy(&b, packed + k / 4, 4);
        const __m128i v = _mm_shuffle_epi8(_mm_cvtsi32_si128((int)b), rep);
        const __m128i s0 = v;                      // j = 0
        const __m128i s1 = _mm_srli_epi16(v, 2);   // j = 1
        const __m128i s2 = _mm_srli_epi16(v, 4);   // j = 2
        const __m128i s3 = _mm_srli_epi16(v, 6);   // j = 3
        const __m128i sel1 = _mm_setr_epi8(0, -1, 0, 0, 0, -1, 0, 0, 0, -1, 0, 0, 0, -1, 0, 0);
        const __m128i sel2 = _mm_setr_epi8(0, 0, -1, 0, 0, 0, -1, 0, 0, 0, -1, 0, 0, 0, -1, 0);
        const __m128i sel3 = _mm_setr_epi8(0, 0, 0, -1, 0, 0, 0, -1, 0, 0, 0, -1, 0, 0, 0, -1);
        __m128i r = _mm_blendv_epi8(s0, s1, sel1);
        r = _mm_blendv_epi8(r, s2, sel2);
        r = _mm_blendv_epi8(r, s3, sel3);
        _mm_storeu_si128((__m128i*)(codes + k), _mm_and_si128(r, m));
      }
    }
  }
};

}  // namespace
}  // namespace aq
