// NEON variant (AArch64 only: vdivq_f32, vrndnq_f32, vminvq_f32 are A64 instructions).
// Compiled only on arm64 (binding.gyp), where Advanced SIMD is part of the base ISA.
#if defined(__aarch64__)
#include <arm_neon.h>

#include "../../common.h"
#include "../../variants.h"

namespace aq {
namespace {

struct Neon {
  using V = float32x4_t;
  static constexpr int W = 4;
  static inline V zero() { return vdupq_n_f32(0.0f); }
  static inline V set1(float f) { return vdupq_n_f32(f); }
  static inline V load(const float* p) { return vld1q_f32(p); }
  static inline V loadu(const float* p) { return vreinterpretq_f32_u8(vld1q_u8((const uint8_t*)p)); }
  static inline void store(float* p, V v) { vst1q_f32(p, v); }
  static inline void storeu(float* p, V v) { vst1q_u8((uint8_t*)p, vreinterpretq_u8_f32(v)); }
  template <int DT>
  static inline V load_src(const uint8_t* p) {
    if constexpr (DT == DT_F32) {
      return vreinterpretq_f32_u8(vld1q_u8(p));
    } else if constexpr (DT == DT_F16) {
      return vcvt_f32_f16(vreinterpret_f16_u8(vld1_u8(p)));
    } else {
      return vreinterpretq_f32_u32(vshll_n_u16(vreinterpret_u16_u8(vld1_u8(p)), 16));
    }
  }
  static inline V add(V a, V b) { return vaddq_f32(a, b); }
  static inline V sub(V a, V b) { return vsubq_f32(a, b); }
  static inline V mul(V a, V b) { return vmulq_f32(a, b); }
  static inline V div(V a, V b) { return vdivq_f32(a, b); }
  // The comparisons of reference.ts (vminq_f32 would propagate NaN instead).
  static inline V min_sel(V a, V b) { return vbslq_f32(vcltq_f32(a, b), a, b); }
  static inline V max_sel(V a, V b) { return vbslq_f32(vcgtq_f32(a, b), a, b); }
  static inline V round(V a) { return vrndnq_f32(a); }
  static inline V abs(V a) { return vabsq_f32(a); }
  static inline float hmin(V v) { return vminvq_f32(v); }  // no NaN lanes here
  static inline float hmax(V v) { return vmaxvq_f32(v); }
  /** laneReduce of lanes 0-3, 4-7, 8-11, 12-15: j += j+8, +4, +2, +1. */
  static inline float reduce16(const V* acc) {
    const V a = vaddq_f32(vaddq_f32(acc[0], acc[2]), vaddq_f32(acc[1], acc[3]));
    const float32x2_t s = vadd_f32(vget_low_f32(a), vget_high_f32(a));
    return vget_lane_f32(s, 0) + vget_lane_f32(s, 1);
  }
  /** Integral floats in [0, L]; NaN converts to 0 (FCVTZU), like JS `NaN << n` → 16 bytes in order. */
  using P = uint8x16_t;
  static inline P pack16(const V* q) {
    const uint16x8_t a = vcombine_u16(vmovn_u32(vcvtq_u32_f32(q[0])), vmovn_u32(vcvtq_u32_f32(q[1])));
    const uint16x8_t b = vcombine_u16(vmovn_u32(vcvtq_u32_f32(q[2])), vmovn_u32(vcvtq_u32_f32(q[3])));
    return vcombine_u8(vmovn_u16(a), vmovn_u16(b));
  }
  static inline void store16(uint8_t* dst, P p) { vst1q_u8(dst, p); }
  static inline void reduce4(const V* a, const V* b, const V* c, const V* d, float* out) {
    out[0] = reduce16(a);
    out[1] = reduce16(b);
    out[2] = reduce16(c);
    out[3] = reduce16(d);
  }
  static inline V nonfinite_acc(V acc, V v) {
    const uint32x4_t m = vandq_u32(vreinterpretq_u32_f32(v), vdupq_n_u32(0x7fffffffu));
    return vreinterpretq_f32_u32(vmaxq_u32(vreinterpretq_u32_f32(acc), m));
  }
  static inline bool any_nonfinite(V acc) {
    return vmaxvq_u32(vcgtq_u32(vreinterpretq_u32_f32(acc), vdupq_n_u32(0x7f7fffffu))) != 0;
  }
  static inline uint16_t to_f16(float v) { return f32_to_f16_bits(v); }
  static inline float from_f16(uint16_t h) { return f16_bits_to_f32(h); }
  template <int BITS>
  static inline void pack32(P a, P b, uint8_t* dst) {
    alignas(16) uint8_t c[32];
    vst1q_u8(c, a);
    vst1q_u8(c + 16, b);
    pack_aligned(c, 32, BITS, dst);
  }
  static inline void hmin_batch(const V* v, int n, float* out) {
    for (int j = 0; j < n; j++) out[j] = hmin(v[j]);
  }
  static inline void hmax_batch(const V* v, int n, float* out) {
    for (int j = 0; j < n; j++) out[j] = hmax(v[j]);
  }
  static inline void choose_params_batch(const float* lo, const float* hi, int n, float levels, uint16_t* sb,
                                         uint16_t* zb, float* scale, float* zero, float* inv) {
    for (int j = 0; j < n; j++) {
      const Params p = choose_params<Neon>(lo[j], hi[j], levels);
      sb[j] = p.scaleBits, zb[j] = p.zeroBits, scale[j] = p.scale, zero[j] = p.zero, inv[j] = p.inv;
    }
  }
  static inline V load_codes(const uint8_t* c) {
    uint32_t b;
    std::memcpy(&b, c, 4);
    const uint16x8_t h = vmovl_u8(vcreate_u8((uint64_t)b));
    return vcvtq_f32_u32(vmovl_u16(vget_low_u16(h)));
  }
  static inline void pack_aligned(const uint8_t* codes, int n, int bits, uint8_t* out) {
    if (bits == 8) {
      std::memcpy(out, codes, (size_t)n);
    } else if (bits == 4) {
      for (int k = 0; k < n; k += 2) out[k / 2] = (uint8_t)(codes[k] | (codes[k + 1] << 4));
    } else {
      for (int k = 0; k < n; k += 4)
        out[k / 4] = (uint8_t)(codes[k] | (codes[k + 1] << 2) | (codes[k + 2] << 4) | (codes[k + 3] << 6));
    }
  }
  static inline void unpack_aligned(const uint8_t* packed, int n, int bits, uint8_t* codes) {
    unpack_codes_generic(packed, 0, bits, n, codes);
  }
};

}  // namespace
}  // namespace aq

#include "../../simd_driver.h"
#include "../../v2_kernel.h"

namespace aq {
namespace {

int64_t quantize_neon(const QuantJob& a) { return quantize_entry<Neon>(a); }
void dequantize_neon(const DequantJob& a) { dequantize_simd<Neon>(a); }
void column_abs_max_neon(const ColumnAbsMaxJob& a) { column_abs_max_entry<Neon>(a); }
int64_t quantize_v2_neon(const QuantV2Job& a) { return quantize_v2_impl(a); }
void dequantize_v2_neon(const DequantV2Job& a) { dequantize_v2_impl(a); }

}  // namespace

const KernelFns kNeonKernel = {"neon", quantize_neon, dequantize_neon, column_abs_max_neon, quantize_v2_neon, dequantize_v2_neon};

}  // namespace aq
#endif
