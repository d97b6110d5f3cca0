// The SIMD kernels, written once over a small traits class S (one per ISA: arch/x86/avx2.cc,
// arch/x86/avx512.cc, arch/arm/neon.cc). Each arch file includes this header inside its target
// region after defining S, so every function here is compiled for that ISA only and has
// internal linkage.
//
// A row is processed in chunks of consecutive groups (CHUNK elements, in L1):
//   pass 1:  per group, load + convert the source dtype (× colScale), store x (and w), lane-wise
//            min/max and the Σw² lanes; a non-finite Σw² lane (a NaN/±Inf input, or rarely an
//            overflow) sends the chunk to a scalar search for the first non-finite element;
//   params:  horizontal min/max and chooseParams for eight groups at once where S can (blends
//            for branches, F16C), exact ±0 fix-up, or searchParams per group (SIMD squared error
//            per candidate) with refine;
//   pass 2:  per group, codes and ŵ → Σ(w−ŵ)² (packing 32 codes at a time straight into the
//            output when the group starts on a byte), then Σw·ŵ and Σŵ² in a second loop (AVX2
//            has too few registers for six accumulators at once); the four statistics are
//            reduced exactly as laneReduce (element i → lane i mod 16 → vector (i mod 16) / W,
//            lane i mod W) and added to the row in float64 in group order;
//   packing: groups that do not start on a byte, and tails, go through the bit writer.
// Groups whose length is not a multiple of 16 (the last of a row) use the scalar helpers.
//
// Required of S: V, W (8 or 16 or 4), zero, set1, load/store (aligned float buffers), loadu/storeu,
// load_src<DT>, add, sub, mul, div, min_sel(a, b) = a < b ? a : b, max_sel(a, b) = a > b ? a : b
// (x86 minps/maxps semantics, which reference.ts's comparisons have), round (ties to even),
// abs, hmin, hmax, hmin_batch, hmax_batch, choose_params_batch, reduce16
// (laneReduce of NV = 16 / W vectors), reduce4, nonfinite_acc / any_nonfinite,
// P/pack16/store16/pack32 (codes), to_f16/from_f16, load_codes (W code bytes → floats), pack_aligned, unpack_aligned.

namespace aq {
namespace {

/** The first element equal to zero, with its sign (what `if (v < lo) lo = v` keeps). */
inline float first_zero(const float* x, int n) {
  for (int i = 0; i < n; i++)
    if (x[i] == 0.0f) return x[i];
  return 0.0f;
}

template <class S>
inline float group_sq_error_simd(const float* xb, int n, const Params& p, float levels) {
  using V = typename S::V;
  constexpr int W = S::W;
  constexpr int NV = LANES / W;
  const V inv = S::set1(p.inv), zero = S::set1(p.zero), scale = S::set1(p.scale);
  const V vL = S::set1(levels), v0 = S::zero();
  V acc[NV];
  for (int u = 0; u < NV; u++) acc[u] = S::zero();
  for (int k = 0; k < n; k += LANES) {
    for (int u = 0; u < NV; u++) {
      const V x = S::load(xb + k + u * W);
      V t = S::add(S::mul(x, inv), zero);
      t = S::min_sel(vL, S::max_sel(v0, t));
      const V q = S::round(t);
      const V d = S::mul(S::sub(q, zero), scale);
      const V e = S::sub(x, d);
      acc[u] = S::add(acc[u], S::mul(e, e));
    }
  }
  return S::reduce16(acc);
}

/**
 * Pass 2 of a group whose length is a multiple of 16: the codes, packed straight into `dst` when
 * DIRECT (byte-aligned start, n a multiple of 32), else one byte per code into `codes`; and the
 * four statistics (Σw² lanes from pass 1 in w2, then Σ(w−ŵ)², Σw·ŵ, Σŵ²), lane-reduced into
 * sums[0..3] (float32; the caller adds them to the row in float64, in group order).
 */
template <class S, bool CS, int BITS, bool DIRECT>
inline void quant_group_simd(const float* xb, const float* wb, const float* cs, int n, const Params& p, float levels,
                             uint8_t* codes, uint8_t* dst, const typename S::V* w2, float* sums) {
  using V = typename S::V;
  constexpr int W = S::W;
  constexpr int NV = LANES / W;
  constexpr int STEP = DIRECT ? 2 * LANES : LANES;
  const V inv = S::set1(p.inv), zero = S::set1(p.zero), scale = S::set1(p.scale);
  const V vL = S::set1(levels), v0 = S::zero();
  // Two loops, so that neither needs more registers than AVX2 has (spilled accumulators would
  // turn their additions into a store-to-load chain): codes, ŵ (kept in whb) and Σ(w−ŵ)² first,
  // then Σw·ŵ and Σŵ².
  alignas(64) float whb[MAX_GROUP];
  V e2[NV], wq[NV], q2[NV];
  for (int u = 0; u < NV; u++) e2[u] = wq[u] = q2[u] = S::zero();
  for (int k = 0; k < n; k += STEP) {
    typename S::P half[2];  // 16 codes each, narrowed as soon as they exist
    for (int h = 0; h < STEP / LANES; h++) {
      V qv[NV];
      for (int u = 0; u < NV; u++) {
        const int i = k + h * LANES + u * W;  // lane (i mod 16) = u·W + l → accumulator u
        const V x = S::load(xb + i);
        V t = S::add(S::mul(x, inv), zero);
        // reference: if (t < 0) t = 0; else if (t > L) t = L;  (NaN stays NaN, −0 stays −0)
        t = S::min_sel(vL, S::max_sel(v0, t));
        const V q = S::round(t);
        qv[u] = q;
        V wh = S::mul(S::sub(q, zero), scale);
        if (CS) wh = S::div(wh, S::loadu(cs + i));
        S::store(whb + i, wh);
        const V w = CS ? S::load(wb + i) : x;
        const V e = S::sub(w, wh);
        e2[u] = S::add(e2[u], S::mul(e, e));
      }
      half[h] = S::pack16(qv);
    }
    if constexpr (DIRECT) {
      S::template pack32<BITS>(half[0], half[1], dst + k * BITS / 8);
    } else {
      S::store16(codes + k, half[0]);
    }
  }
  for (int k = 0; k < n; k += LANES) {
    for (int u = 0; u < NV; u++) {
      const int i = k + u * W;
      const V w = S::load(wb + i), wh = S::load(whb + i);
      wq[u] = S::add(wq[u], S::mul(w, wh));
      q2[u] = S::add(q2[u], S::mul(wh, wh));
    }
  }
  S::reduce4(w2, e2, wq, q2, sums);
}

template <class S, bool CS>
inline void quant_group_simd_any(int bits, bool direct, const float* xb, const float* wb, const float* cs, int n,
                                 const Params& p, float levels, uint8_t* codes, uint8_t* dst, const typename S::V* w2,
                                 float* sums) {
  if (direct) {
    if (bits == 4) return quant_group_simd<S, CS, 4, true>(xb, wb, cs, n, p, levels, codes, dst, w2, sums);
    if (bits == 2) return quant_group_simd<S, CS, 2, true>(xb, wb, cs, n, p, levels, codes, dst, w2, sums);
    return quant_group_simd<S, CS, 8, true>(xb, wb, cs, n, p, levels, codes, dst, w2, sums);
  }
  quant_group_simd<S, CS, 0, false>(xb, wb, cs, n, p, levels, codes, dst, w2, sums);
}

#ifndef AQ_PREFETCH
#define AQ_PREFETCH 4096
#endif

/** Elements per chunk: a run of consecutive groups of one row whose values stay in L1. */
constexpr int CHUNK = 2048;

/**
 * Rows are processed in chunks of up to CHUNK elements (whole groups): pass 1 over the chunk
 * (convert, store, min/max, Σw²), then the parameters of all its groups (independent scalar
 * latency chains the CPU overlaps), then pass 2 + packing group by group. Row sums are still
 * added in group order.
 */
template <class S, int DT, bool CS>
int64_t quantize_simd(const QuantJob& a) {
  using V = typename S::V;
  constexpr int W = S::W;
  constexpr int NV = LANES / W;
  constexpr int ESZ = DT == DT_F32 ? 4 : 2;
  constexpr int MAXG = CHUNK / 32;
  const float levels = (float)((1 << a.bits) - 1);
  const int G = a.groupSize;
  const int64_t gpr = (a.cols + G - 1) / G;
  const int K = CHUNK / G;
  alignas(64) float xb[CHUNK];
  alignas(64) float wbuf[CS ? CHUNK : LANES];
  alignas(64) uint8_t codes[MAX_GROUP];
  alignas(64) float glo[MAXG], ghi[MAXG];
  V gvlo[MAXG], gvhi[MAXG];  // lane-wise min / max of each group, from pass 1
  V gw2[MAXG * NV];          // Σw² lanes of each group, from pass 1
  Params gp[MAXG];
  alignas(64) uint16_t gsb[MAXG], gzb[MAXG];
  alignas(64) float gsum[4 * MAXG];  // the four lane-reduced sums of each group
  alignas(64) float gscale[MAXG], gzero[MAXG], ginv[MAXG];
  BitWriter bw(a.packed, a.bits);
  const V vinf = S::set1(INFINITY), vninf = S::set1(-INFINITY);
  for (int64_t r = 0; r < a.rows; r++) {
    double rowSums[4] = {0, 0, 0, 0};
    const uint8_t* row = a.src + r * a.cols * ESZ;
    for (int64_t g0 = 0; g0 < gpr; g0 += K) {
      const int ng = (int)(gpr - g0 < K ? gpr - g0 : K);
      // Pass 1. Non-finite values make Σw² lanes non-finite (so, rarely, does overflow): `bad`
      // collects that, and the chunk is then searched in order for the first real one.
      V bad = S::zero();
      bool tailBad = false;
      int tailJ = -1;
      float tailLo = 0, tailHi = 0;
      for (int j = 0; j < ng; j++) {
        const int64_t c0 = (g0 + j) * G;
        const int n = (int)(a.cols - c0 < G ? a.cols - c0 : G);
        const uint8_t* p = row + c0 * ESZ;
        float* x = xb + j * G;
        float* w = CS ? wbuf + j * G : x;
        if ((n % LANES) == 0) {
          V vlo = vinf, vhi = vninf, w2[NV];
          for (int u = 0; u < NV; u++) w2[u] = S::zero();
          auto body = [&](int i, int u) {
            const V v = S::template load_src<DT>(p + i * ESZ);
            V xv = v;
            if (CS) {
              S::store(w + i, v);
              xv = S::mul(v, S::loadu(a.colScale + c0 + i));
            }
            S::store(x + i, xv);
            vlo = S::min_sel(xv, vlo);
            vhi = S::max_sel(xv, vhi);
            w2[u] = S::add(w2[u], S::mul(v, v));
          };
          int k = 0;
          for (; k + 2 * LANES <= n; k += 2 * LANES) {
            // Software prefetch, AQ_PREFETCH bytes ahead, one per 64 bytes: the hardware
            // streamer stops at 4 KiB page boundaries, and a chunk is only a few pages.
            __builtin_prefetch(p + k * ESZ + AQ_PREFETCH, 0, 3);
            if (ESZ == 4) __builtin_prefetch(p + k * ESZ + 64 + AQ_PREFETCH, 0, 3);
            for (int h = 0; h < 2; h++)
              for (int u = 0; u < NV; u++) body(k + h * LANES + u * W, u);
          }
          for (; k < n; k += LANES)
            for (int u = 0; u < NV; u++) body(k + u * W, u);
          for (int u = 0; u < NV; u++) {
            gw2[j * NV + u] = w2[u];
            bad = S::nonfinite_acc(bad, w2[u]);
          }
          gvlo[j] = vlo;
          gvhi[j] = vhi;
        } else {
          float lo = INFINITY, hi = -INFINITY;
          for (int i = 0; i < n; i++) {
            const float wi = load_elem(p, DT, i);
            if (!is_finite_f32(wi)) tailBad = true;
            const float v = CS ? wi * a.colScale[c0 + i] : wi;
            if (CS) w[i] = wi;
            x[i] = v;
            if (v < lo) lo = v;
            if (v > hi) hi = v;
          }
          tailLo = lo;
          tailHi = hi;
          tailJ = j;
          gvlo[j] = vinf;  // placeholders for the batched reductions
          gvhi[j] = vninf;
        }
      }
      if (tailBad || S::any_nonfinite(bad)) {
        for (int j = 0; j < ng; j++) {
          const int64_t c0 = (g0 + j) * G;
          const int n = (int)(a.cols - c0 < G ? a.cols - c0 : G);
          const int i = first_non_finite(CS ? wbuf + j * G : xb + j * G, n);
          if (i >= 0) return r * a.cols + c0 + i;
        }
      }
      // Group minima and maxima, several groups at a time; the reference keeps the first of equal
      // values, and only ±0 can tell the difference.
      S::hmin_batch(gvlo, ng, glo);
      S::hmax_batch(gvhi, ng, ghi);
      if (tailJ >= 0) {
        glo[tailJ] = tailLo;
        ghi[tailJ] = tailHi;
      }
      for (int j = 0; j < ng; j++) {
        if (j == tailJ) continue;
        const int n = (int)(a.cols - (g0 + j) * G < G ? a.cols - (g0 + j) * G : G);
        if (glo[j] == 0.0f) glo[j] = first_zero(xb + j * G, n);
        if (ghi[j] == 0.0f) ghi[j] = first_zero(xb + j * G, n);
      }
      // Parameters.
      if (!a.refine) {
        S::choose_params_batch(glo, ghi, ng, levels, gsb, gzb, gscale, gzero, ginv);
        for (int j = 0; j < ng; j++) gp[j] = Params{gsb[j], gzb[j], gscale[j], gzero[j], ginv[j]};
        std::memcpy(a.scales + r * gpr + g0, gsb, (size_t)ng * 2);
        std::memcpy(a.zeroPoints + r * gpr + g0, gzb, (size_t)ng * 2);
      }
      for (int j = 0; j < ng && a.refine; j++) {
        const int64_t c0 = (g0 + j) * G;
        const int n = (int)(a.cols - c0 < G ? a.cols - c0 : G);
        const float* x = xb + j * G;
        Params prm;
        if ((n % LANES) == 0) {
          prm = search_params<S>(glo[j], ghi[j], levels, [&](const Params& c) { return group_sq_error_simd<S>(x, n, c, levels); });
        } else {
          prm = search_params<S>(glo[j], ghi[j], levels, [&](const Params& c) { return group_sq_error_scalar(x, n, c, levels); });
        }
        gp[j] = prm;
        a.scales[r * gpr + g0 + j] = prm.scaleBits;
        a.zeroPoints[r * gpr + g0 + j] = prm.zeroBits;
      }
      // Pass 2 and packing.
      for (int j = 0; j < ng; j++) {
        const int64_t c0 = (g0 + j) * G;
        const int n = (int)(a.cols - c0 < G ? a.cols - c0 : G);
        const float* x = xb + j * G;
        const float* w = CS ? wbuf + j * G : x;
        const float* cs = CS ? a.colScale + c0 : nullptr;
        if ((n % LANES) == 0) {
          const bool direct = bw.nbits == 0 && (n % (2 * LANES)) == 0;
          quant_group_simd_any<S, CS>(a.bits, direct, x, w, cs, n, gp[j], levels, codes, a.packed + bw.pos,
                                      gw2 + j * NV, gsum + 4 * j);
          if (direct) {
            bw.pos += (size_t)(n * a.bits / 8);
          } else if (bw.nbits == 0) {
            S::pack_aligned(codes, n, a.bits, a.packed + bw.pos);
            bw.pos += (size_t)(n * a.bits / 8);
          } else {
            bw.put_all(codes, n);
          }
        } else {
          quant_group_scalar(x, w, cs, n, gp[j], levels, codes, gsum + 4 * j);
          bw.put_all(codes, n);
        }
      }
      // Row sums, in group order (kept out of pass 2's way: a chain of float64 additions).
      for (int j = 0; j < ng; j++)
        for (int k = 0; k < 4; k++) rowSums[k] += (double)gsum[4 * j + k];
    }
    for (int k = 0; k < 4; k++) a.rowStats[r * 4 + k] = rowSums[k];
  }
  bw.finish();
  return -1;
}

template <class S>
int64_t quantize_entry(const QuantJob& a) {
  const bool cs = a.colScale != nullptr;
  switch (a.dtype) {
    case DT_F32:
      return cs ? quantize_simd<S, DT_F32, true>(a) : quantize_simd<S, DT_F32, false>(a);
    case DT_F16:
      return cs ? quantize_simd<S, DT_F16, true>(a) : quantize_simd<S, DT_F16, false>(a);
    default:
      return cs ? quantize_simd<S, DT_BF16, true>(a) : quantize_simd<S, DT_BF16, false>(a);
  }
}

template <class S>
void dequantize_simd(const DequantJob& a) {
  using V = typename S::V;
  constexpr int W = S::W;
  const int64_t gpr = (a.cols + a.groupSize - 1) / a.groupSize;
  alignas(64) uint8_t codes[MAX_GROUP];
  uint64_t bitPos = 0;
  for (int64_t r = 0; r < a.rows; r++) {
    for (int64_t g = 0; g < gpr; g++) {
      const int64_t c0 = g * a.groupSize;
      const int n = (int)(a.cols - c0 < a.groupSize ? a.cols - c0 : a.groupSize);
      const float scale = f16_bits_to_f32(a.scales[r * gpr + g]);
      const float zero = f16_bits_to_f32(a.zeroPoints[r * gpr + g]);
      float* o = a.out + r * a.cols + c0;
      const float* cs = a.colScale ? a.colScale + c0 : nullptr;
      if ((n % LANES) == 0 && (bitPos & 7) == 0) {
        S::unpack_aligned(a.packed + (bitPos >> 3), n, a.bits, codes);
      } else {
        unpack_codes_generic(a.packed, bitPos, a.bits, n, codes);
      }
      bitPos += (uint64_t)n * (uint64_t)a.bits;
      int i = 0;
      const V vs = S::set1(scale), vz = S::set1(zero);
      for (; i + W <= n; i += W) {
        V wh = S::mul(S::sub(S::load_codes(codes + i), vz), vs);
        if (cs) wh = S::div(wh, S::loadu(cs + i));
        S::storeu(o + i, wh);
      }
      for (; i < n; i++) {
        float wh = dequantize_value((float)codes[i], scale, zero);
        if (cs) wh = wh / cs[i];
        o[i] = wh;
      }
    }
  }
}

template <class S, int DT>
void column_abs_max_simd(const ColumnAbsMaxJob& a) {
  constexpr int W = S::W;
  constexpr int ESZ = DT == DT_F32 ? 4 : 2;
  for (int64_t r = 0; r < a.rows; r++) {
    const uint8_t* row = a.src + r * a.cols * ESZ;
    int64_t c = 0;
    for (; c + W <= a.cols; c += W) {
      const auto v = S::abs(S::template load_src<DT>(row + c * ESZ));
      // reference: if (a > out[c]) out[c] = a;  (maxps keeps its second operand on NaN)
      S::storeu(a.out + c, S::max_sel(v, S::loadu(a.out + c)));
    }
    for (; c < a.cols; c++) {
      const float v = std::fabs(load_elem(row, DT, c));
      if (v > a.out[c]) a.out[c] = v;
    }
  }
}

template <class S>
void column_abs_max_entry(const ColumnAbsMaxJob& a) {
  switch (a.dtype) {
    case DT_F32:
      return column_abs_max_simd<S, DT_F32>(a);
    case DT_F16:
      return column_abs_max_simd<S, DT_F16>(a);
    default:
      return column_abs_max_simd<S, DT_BF16>(a);
  }
}

}  // namespace
}  // namespace aq
