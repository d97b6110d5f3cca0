// Shared definitions of the ArrowQuant native kernels: the job structs every variant takes, and
// the scalar building blocks that mirror core/quant/reference.ts and core/quant/float16.ts
// operation for operation (one IEEE float32 operation per step, compiled with
// -ffp-contract=off so nothing is fused).
//
// Everything here has internal linkage (anonymous namespace / static inline): each variant's
// translation unit compiles its own copy under its own target attributes, so the linker can never
// hand an AVX2-compiled copy of a helper to the portable scalar code.
#pragma once

#include <cfloat>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

// Bit-exactness needs every float operation rounded to float32 on its own.
#if defined(__FAST_MATH__)
#error "the ArrowQuant kernels must not be compiled with -ffast-math"
#endif
#if !defined(FLT_EVAL_METHOD) || FLT_EVAL_METHOD != 0
#error "the ArrowQuant kernels need float arithmetic without excess precision (FLT_EVAL_METHOD 0)"
#endif
#if defined(__clang__)
#pragma clang fp contract(off)
#endif

namespace aq {

enum Dtype : int { DT_F32 = 0, DT_F16 = 1, DT_BF16 = 2 };

/** One quantize call: a row range of a [rows, cols] tensor, already validated by kernels.ts. */
struct QuantJob {
  const uint8_t* src;  // rows*cols elements of dtype, little-endian, any alignment
  int dtype;
  int64_t rows;
  int64_t cols;
  int bits;       // 2, 4, 8
  int groupSize;  // 32, 64, 128, 256
  bool refine;
  const float* colScale;  // cols entries, or nullptr
  uint8_t* packed;        // ceil(rows*cols*bits/8) bytes
  uint16_t* scales;       // rows * ceil(cols/groupSize)
  uint16_t* zeroPoints;
  double* rowStats;  // rows * 4
};

struct DequantJob {
  const uint8_t* packed;
  const uint16_t* scales;
  const uint16_t* zeroPoints;
  int64_t rows;
  int64_t cols;
  int bits;
  int groupSize;
  const float* colScale;
  float* out;  // rows*cols
};

/** One format v2 call (reference-v2.ts): its first group starts a super-group. */
struct QuantV2Job {
  const uint8_t* src;
  int dtype;
  int64_t rows;
  int64_t cols;
  int bits;       // 2, 4, 8
  int groupSize;  // 16, 32
  const float* colScale;
  uint8_t* packed;        // ceil(rows*cols*bits/8) bytes
  uint8_t* groupParams;   // v2ParamBytes
  uint16_t* superScales;  // one per super-group
  uint16_t* superOffsets;
  double* rowStats;
};

struct DequantV2Job {
  const uint8_t* packed;  // the row range's codes
  const uint8_t* groupParams;
  const uint16_t* superScales;
  const uint16_t* superOffsets;
  int64_t firstGroup;  // flat group index of the range's first group
  int64_t rows;
  int64_t cols;
  int bits;
  int groupSize;
  const float* colScale;
  float* out;
};

struct ColumnAbsMaxJob {
  const uint8_t* src;
  int dtype;
  int64_t rows;
  int64_t cols;
  float* out;  // cols
};

/** The entry points of one ISA variant. */
struct KernelFns {
  const char* name;
  int64_t (*quantize)(const QuantJob&);  // -1 or index of the first non-finite element
  void (*dequantize)(const DequantJob&);
  void (*columnAbsMax)(const ColumnAbsMaxJob&);
  int64_t (*quantizeV2)(const QuantV2Job&);
  void (*dequantizeV2)(const DequantV2Job&);
};

namespace {

constexpr int LANES = 16;
constexpr int MAX_GROUP = 256;
constexpr float Z_LIMIT = 65000.0f;
constexpr float F16_MAX = 65504.0f;

inline float bits_to_f32(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint32_t f32_to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

/** CLIP_FRACTIONS = [0, .05, .1, .15, .2, .3].map(Math.fround), as exact bit patterns. */
inline float clip_fraction(int i) {
  static const uint32_t bits[6] = {0x00000000u, 0x3d4ccccdu, 0x3dcccccdu, 0x3e19999au, 0x3e4ccccdu, 0x3e99999au};
  return bits_to_f32(bits[i]);
}
constexpr int N_CLIP = 6;

/** f32ToF16Bits of float16.ts, integer for integer. */
inline uint16_t f32_to_f16_bits(float value) {
  const uint32_t x = f32_to_bits(value);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t abs = x & 0x7fffffffu;
  if (abs >= 0x7f800000u) {
    return (uint16_t)(abs > 0x7f800000u ? (sign | 0x7e00u | ((abs >> 13) & 0x3ffu)) : (sign | 0x7c00u));
  }
  if (abs >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);
  if (abs >= 0x38800000u) {
    uint32_t h = (abs >> 13) - (112u << 10);
    const uint32_t rem = abs & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u) == 1u)) h += 1;
    return (uint16_t)(sign | h);
  }
  if (abs <= 0x33000000u) return (uint16_t)sign;
  const uint32_t e = abs >> 23;
  const uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
  const uint32_t shift = 126 - e;
  uint32_t h = mant >> shift;
  const uint32_t rem = mant & ((1u << shift) - 1u);
  const uint32_t half = 1u << (shift - 1);
  if (rem > half || (rem == half && (h & 1u) == 1u)) h += 1;
  return (uint16_t)(sign | h);
}

/** The exact value of a float16 (F16_TABLE). */
inline float f16_bits_to_f32(uint16_t h) {
  const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  if (exp == 0) {
    const float v = (float)mant * 5.9604644775390625e-8f;  // mant · 2^-24, exact
    return bits_to_f32(f32_to_bits(v) | sign);
  }
  if (exp == 31) return bits_to_f32(sign | 0x7f800000u | (mant ? (0x400000u | (mant << 13)) : 0u));
  return bits_to_f32(sign | ((exp + 112u) << 23) | (mant << 13));
}

inline float bf16_bits_to_f32(uint16_t b) { return bits_to_f32((uint32_t)b << 16); }

inline uint16_t load_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

/** Element i of a little-endian source of `dtype`, as float32 (exact). */
inline float load_elem(const uint8_t* src, int dtype, int64_t i) {
  if (dtype == DT_F32) {
    float f;
    std::memcpy(&f, src + i * 4, 4);
    return f;
  }
  const uint16_t b = load_u16(src + i * 2);
  return dtype == DT_F16 ? f16_bits_to_f32(b) : bf16_bits_to_f32(b);
}

inline int dtype_size(int dtype) { return dtype == DT_F32 ? 4 : 2; }

inline bool is_finite_f32(float v) { return (f32_to_bits(v) & 0x7f800000u) != 0x7f800000u; }

struct Params {
  uint16_t scaleBits;
  uint16_t zeroBits;
  float scale;
  float zero;
  float inv;
};

inline float clamp_f16(float v) { return v > F16_MAX ? F16_MAX : v < -F16_MAX ? -F16_MAX : v; }

/** float32 ↔ float16 by the bit-exact software routines (F16C variants substitute vcvtps2ph/vcvtph2ps). */
struct SoftF16 {
  static inline uint16_t to_f16(float v) { return f32_to_f16_bits(v); }
  static inline float from_f16(uint16_t h) { return f16_bits_to_f32(h); }
};

/**
 * chooseParams of reference.ts. Every value converted to float16 here is finite (clamped to
 * ±65504 or a non-negative scale ≤ 65504), which is where F16C agrees with f32ToF16Bits.
 */
template <class C = SoftF16>
inline Params choose_params(float lo, float hi, float levels) {
  uint16_t scaleBits = 0x3c00;
  uint16_t zeroBits;
  if (lo == hi) {
    zeroBits = C::to_f16(clamp_f16(-lo));
  } else {
    const float range = hi - lo;
    float s = range / levels;
    const float sz = std::fabs(lo) / Z_LIMIT;
    if (sz > s) s = sz;
    if (s > F16_MAX) s = F16_MAX;
    const uint16_t sb = C::to_f16(s);
    if ((sb & 0x7fff) == 0) {
      zeroBits = C::to_f16(clamp_f16(-lo));
    } else {
      scaleBits = sb;
      const float z = -lo / C::from_f16(sb);
      zeroBits = C::to_f16(clamp_f16(z));
    }
  }
  Params p;
  p.scaleBits = scaleBits;
  p.zeroBits = zeroBits;
  p.scale = C::from_f16(scaleBits);
  p.zero = C::from_f16(zeroBits);
  p.inv = 1.0f / p.scale;
  return p;
}

/** quantizeValue of reference.ts, as a float (an integer in [0, L], or NaN). */
inline float quantize_value(float x, const Params& p, float levels) {
  float t = x * p.inv;
  t = t + p.zero;
  if (t < 0.0f) t = 0.0f;
  else if (t > levels) t = levels;
  return std::nearbyintf(t);  // default rounding mode: nearest, ties to even
}

inline float dequantize_value(float q, float scale, float zero) {
  const float d = q - zero;
  return d * scale;
}

/** The packed code of a quantized value: JS `q << n` turns NaN into 0. */
inline uint32_t code_of(float q) { return q == q ? (uint32_t)q : 0u; }

/** laneReduce: lane j += lane j+8, then +4, +2, +1. */
inline float lane_reduce(float* acc) {
  for (int w = LANES / 2; w >= 1; w >>= 1) {
    for (int j = 0; j < w; j++) acc[j] = acc[j] + acc[j + w];
  }
  return acc[0];
}

/** groupSquaredError of reference.ts (scalar). */
inline float group_sq_error_scalar(const float* x, int n, const Params& p, float levels) {
  float acc[LANES] = {0};
  for (int i = 0; i < n; i++) {
    const float e = x[i] - dequantize_value(quantize_value(x[i], p, levels), p.scale, p.zero);
    const float e2 = e * e;
    acc[i % LANES] = acc[i % LANES] + e2;
  }
  return lane_reduce(acc);
}

/** searchParams of reference.ts; `err(p)` is groupSquaredError of the group under p. */
template <class C = SoftF16, class ErrFn>
inline Params search_params(float lo, float hi, float levels, ErrFn&& err) {
  const float range = hi - lo;
  Params best = choose_params<C>(lo, hi, levels);
  if (lo == hi || !is_finite_f32(range)) return best;
  float bestErr = err(best);
  for (int i = 0; i < N_CLIP; i++) {
    const float clo = lo + range * clip_fraction(i);
    for (int j = 0; j < N_CLIP; j++) {
      if (i == 0 && j == 0) continue;
      const float chi = hi - range * clip_fraction(j);
      const Params p = choose_params<C>(clo, chi, levels);
      const float e = err(p);
      if (e < bestErr) {
        bestErr = e;
        best = p;
      }
    }
  }
  return best;
}

/**
 * Codes and statistics of one group of n values (any n), scalar, exactly as quantizeRowsRef's
 * inner loop. x: the values quantized (w·s with colScale), w: the original values, cs: colScale
 * of the group's columns or nullptr. sums: the four lane-reduced group sums.
 */
inline void quant_group_scalar(const float* x, const float* w, const float* cs, int n, const Params& p, float levels,
                               uint8_t* codes, float sums[4]) {
  float w2[LANES] = {0}, e2[LANES] = {0}, wq[LANES] = {0}, q2[LANES] = {0};
  for (int i = 0; i < n; i++) {
    const float q = quantize_value(x[i], p, levels);
    codes[i] = (uint8_t)code_of(q);
    const float wi = w[i];
    float wh = dequantize_value(q, p.scale, p.zero);
    if (cs) wh = wh / cs[i];
    const float e = wi - wh;
    const int l = i % LANES;
    w2[l] = w2[l] + wi * wi;
    e2[l] = e2[l] + e * e;
    wq[l] = wq[l] + wi * wh;
    q2[l] = q2[l] + wh * wh;
  }
  sums[0] = lane_reduce(w2);
  sums[1] = lane_reduce(e2);
  sums[2] = lane_reduce(wq);
  sums[3] = lane_reduce(q2);
}

/** Least-significant-bits-first packing, continuous over groups and rows. Codes never straddle bytes. */
struct BitWriter {
  uint8_t* out;
  size_t pos = 0;
  uint32_t cur = 0;
  int nbits = 0;
  int bits;
  BitWriter(uint8_t* o, int b) : out(o), bits(b) {}
  inline void put_all(const uint8_t* codes, int n) {
    for (int i = 0; i < n; i++) {
      cur |= (uint32_t)codes[i] << nbits;
      nbits += bits;
      if (nbits == 8) {
        out[pos++] = (uint8_t)cur;
        cur = 0;
        nbits = 0;
      }
    }
  }
  inline void finish() {
    if (nbits > 0) out[pos++] = (uint8_t)cur;
    cur = 0;
    nbits = 0;
  }
};

/** Reads codes from a bit position (codes never straddle bytes since bits divides 8). */
inline void unpack_codes_generic(const uint8_t* packed, uint64_t bitPos, int bits, int n, uint8_t* codes) {
  const uint32_t mask = (1u << bits) - 1u;
  for (int i = 0; i < n; i++) {
    codes[i] = (uint8_t)((packed[bitPos >> 3] >> (bitPos & 7)) & mask);
    bitPos += (uint64_t)bits;
  }
}

/** Index of the first non-finite value of w[0..n), or -1. */
inline int first_non_finite(const float* w, int n) {
  for (int i = 0; i < n; i++)
    if (!is_finite_f32(w[i])) return i;
  return -1;
}

}  // namespace
}  // namespace aq
