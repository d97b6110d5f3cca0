// The portable scalar variant: a line-by-line transliteration of quantizeRowsRef,
// dequantizeRowsRef and columnAbsMaxRef (core/quant/reference.ts), with the dtype decoding fused
// in. It runs on any CPU and is the fallback when no SIMD variant can.
#include "common.h"
#include "v2_kernel.h"
#include "variants.h"

namespace aq {
namespace {

int64_t quantize_scalar(const QuantJob& a) {
  const int64_t total = a.rows * a.cols;
  // firstNonFinite over the whole range before anything is written, as the reference does.
  for (int64_t i = 0; i < total; i++)
    if (!is_finite_f32(load_elem(a.src, a.dtype, i))) return i;
  const float levels = (float)((1 << a.bits) - 1);
  const int64_t gpr = (a.cols + a.groupSize - 1) / a.groupSize;
  float x[MAX_GROUP], w[MAX_GROUP];
  uint8_t codes[MAX_GROUP];
  BitWriter bw(a.packed, a.bits);
  for (int64_t r = 0; r < a.rows; r++) {
    double rowSums[4] = {0, 0, 0, 0};
    for (int64_t g = 0; g < gpr; g++) {
      const int64_t c0 = g * a.groupSize;
      const int n = (int)(a.cols - c0 < a.groupSize ? a.cols - c0 : a.groupSize);
      const int64_t base = r * a.cols + c0;
      float lo = INFINITY, hi = -INFINITY;
      for (int i = 0; i < n; i++) {
        w[i] = load_elem(a.src, a.dtype, base + i);
        const float v = a.colScale ? w[i] * a.colScale[c0 + i] : w[i];
        x[i] = v;
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
      const Params p = a.refine ? search_params(lo, hi, levels, [&](const Params& c) { return group_sq_error_scalar(x, n, c, levels); })
                                : choose_params(lo, hi, levels);
      a.scales[r * gpr + g] = p.scaleBits;
      a.zeroPoints[r * gpr + g] = p.zeroBits;
      float sums[4];
      quant_group_scalar(x, w, a.colScale ? a.colScale + c0 : nullptr, n, p, levels, codes, sums);
      bw.put_all(codes, n);
      for (int k = 0; k < 4; k++) rowSums[k] += (double)sums[k];
    }
    for (int k = 0; k < 4; k++) a.rowStats[r * 4 + k] = rowSums[k];
  }
  bw.finish();
  return -1;
}

void dequantize_scalar(const DequantJob& a) {
  const int64_t gpr = (a.cols + a.groupSize - 1) / a.groupSize;
  const uint32_t mask = (1u << a.bits) - 1u;
  uint64_t bitPos = 0;
  for (int64_t r = 0; r < a.rows; r++) {
    for (int64_t g = 0; g < gpr; g++) {
      const int64_t c0 = g * a.groupSize;
      const int n = (int)(a.cols - c0 < a.groupSize ? a.cols - c0 : a.groupSize);
      const float scale = f16_bits_to_f32(a.scales[r * gpr + g]);
      const float zero = f16_bits_to_f32(a.zeroPoints[r * gpr + g]);
      for (int i = 0; i < n; i++) {
        const uint32_t q = (a.packed[bitPos >> 3] >> (bitPos & 7)) & mask;
        bitPos += (uint64_t)a.bits;
        float wh = dequantize_value((float)q, scale, zero);
        if (a.colScale) wh = wh / a.colScale[c0 + i];
        a.out[r * a.cols + c0 + i] = wh;
      }
    }
  }
}

void column_abs_max_scalar(const ColumnAbsMaxJob& a) {
  for (int64_t r = 0; r < a.rows; r++) {
    for (int64_t c = 0; c < a.cols; c++) {
      const float v = std::fabs(load_elem(a.src, a.dtype, r * a.cols + c));
      if (v > a.out[c]) a.out[c] = v;
    }
  }
}

int64_t quantize_v2_scalar(const QuantV2Job& a) { return quantize_v2_impl(a); }
void dequantize_v2_scalar(const DequantV2Job& a) { dequantize_v2_impl(a); }

}  // namespace

const KernelFns kScalarKernel = {"scalar", quantize_scalar, dequantize_scalar, column_abs_max_scalar, quantize_v2_scalar,
                                 dequantize_v2_scalar};

}  // namespace aq
