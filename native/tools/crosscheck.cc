// Native cross-check without Node: every SIMD variant this CPU runs against the scalar variant
// (which test/native-kernels.test.ts holds to the TypeScript reference), bit for bit, on
// heavy-tailed data, signed zeros, constants, non-finite values and colScale, for every dtype,
// bit width, group size and the row lengths of the vitest suite. Its use is the variants the
// Node tests cannot run here, under an emulator, e.g. NEON (one command line):
//   aarch64-linux-gnu-g++ -std=gnu++17 -O2 -ffp-contract=off -static -Inative/src
//     native/tools/crosscheck.cc native/src/scalar.cc native/src/dispatch.cc
//     native/src/arch/arm/neon.cc -o /tmp/crosscheck && qemu-aarch64 /tmp/crosscheck
// or AVX-512 under Intel SDE (x86: add native/src/arch/x86/avx2.cc and avx512.cc). Format v2
// (quantizeV2 / dequantizeV2) is checked the same way.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "common.h"
#include "variants.h"

using namespace aq;

static uint16_t to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
  return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static int check(const KernelFns* ref, const KernelFns* k) {
  std::mt19937 rng(1);
  std::student_t_distribution<float> st(4.0f);
  const int lens[] = {1, 2, 3, 5, 7, 8, 15, 16, 17, 31, 33, 63, 67, 127, 129, 193, 255, 1023};
  int bad = 0, total = 0;
  for (int dt = 0; dt < 3; dt++)
    for (int bits : {2, 4, 8})
      for (int gs : {32, 64, 128, 256})
        for (int cs = 0; cs < 2; cs++)
          for (int refine = 0; refine < 2; refine++)
            for (int cols : lens)
              for (int kind = 0; kind < 5; kind++) {
                const int rows = 2, n = rows * cols;
                std::vector<float> v(n);
                for (auto& x : v) x = st(rng) * 0.02f;
                if (kind == 1)
                  for (int i = 0; i < n; i++) v[i] = (i % 3 == 0) ? -0.0f : (i % 5 == 0 ? 0.0f : std::fabs(v[i]));
                if (kind == 2)
                  for (int i = 0; i < n; i++) v[i] = 0.3f;
                if (kind == 3 && n > 3) v[n / 2] = (n % 2) ? NAN : INFINITY;
                if (kind == 4)
                  for (int i = 0; i < n; i++) v[i] = (i % 2 ? 1.0f : -1.0f) * (float)(i + 1) * 1e6f;
                std::vector<uint8_t> src((size_t)n * (dt == DT_F32 ? 4 : 2));
                for (int i = 0; i < n; i++) {
                  if (dt == DT_F32) {
                    std::memcpy(&src[(size_t)i * 4], &v[i], 4);
                  } else {
                    const uint16_t h = dt == DT_BF16 ? to_bf16(v[i]) : f32_to_f16_bits(v[i]);
                    std::memcpy(&src[(size_t)i * 2], &h, 2);
                  }
                }
                std::vector<float> csv(cols);
                for (auto& c : csv) c = 0.25f + std::fabs(st(rng));
                const int gpr = (cols + gs - 1) / gs;
                const size_t pb = ((size_t)n * bits + 7) / 8;
                std::vector<uint8_t> p1(pb, 0xa5), p2(pb, 0x5a);
                std::vector<uint16_t> s1(rows * gpr, 1), s2(rows * gpr, 2), z1(rows * gpr, 3), z2(rows * gpr, 4);
                std::vector<double> r1(rows * 4, 1), r2(rows * 4, 2);
                QuantJob j{src.data(), dt, rows, cols, bits, gs, refine != 0, cs ? csv.data() : nullptr,
                           p1.data(), s1.data(), z1.data(), r1.data()};
                QuantJob jk = j;
                jk.packed = p2.data(), jk.scales = s2.data(), jk.zeroPoints = z2.data(), jk.rowStats = r2.data();
                const int64_t a1 = ref->quantize(j), a2 = k->quantize(jk);
                total++;
                const bool ok = a1 == a2 && (a1 >= 0 || (p1 == p2 && s1 == s2 && z1 == z2 &&
                                                         !std::memcmp(r1.data(), r2.data(), r1.size() * 8)));
                if (!ok) {
                  if (bad < 10)
                    std::printf("%s: quantize differs: dtype %d bits %d group %d colScale %d refine %d cols %d kind %d\n",
                                k->name, dt, bits, gs, cs, refine, cols, kind);
                  bad++;
                  continue;
                }
                if (a1 >= 0) continue;
                std::vector<float> d1(n, 1), d2(n, 2);
                DequantJob dj{p1.data(), s1.data(), z1.data(), rows, cols, bits, gs, cs ? csv.data() : nullptr, d1.data()};
                DequantJob dk = dj;
                dk.out = d2.data();
                ref->dequantize(dj);
                k->dequantize(dk);
                if (std::memcmp(d1.data(), d2.data(), (size_t)n * 4)) {
                  if (bad < 10) std::printf("%s: dequantize differs\n", k->name);
                  bad++;
                }
                std::vector<float> c1(cols, 0.01f), c2(cols, 0.01f);
                ColumnAbsMaxJob cj{src.data(), dt, rows, cols, c1.data()};
                ColumnAbsMaxJob ck = cj;
                ck.out = c2.data();
                ref->columnAbsMax(cj);
                k->columnAbsMax(ck);
                if (std::memcmp(c1.data(), c2.data(), (size_t)cols * 4)) {
                  if (bad < 10) std::printf("%s: columnAbsMax differs\n", k->name);
                  bad++;
                }
              }
  std::printf("%s vs scalar: %d mismatches in %d cases\n", k->name, bad, total);
  return bad;
}

/** Format v2 (quantizeV2 / dequantizeV2) of `k` against the scalar variant, byte for byte. */
static int check_v2(const KernelFns* ref, const KernelFns* k) {
  std::mt19937 rng(2);
  std::student_t_distribution<float> st(4.0f);
  const int lens[] = {1, 3, 7, 15, 16, 17, 31, 33, 64, 67, 129, 172, 255, 1023, 4096};
  int bad = 0, total = 0;
  for (int dt = 0; dt < 3; dt++)
    for (int bits : {2, 4, 8})
      for (int gs : {16, 32})
        for (int cs = 0; cs < 2; cs++)
          for (int cols : lens)
            for (int kind = 0; kind < 3; kind++) {
              const int rows = cols > 1000 ? 3 : 9, n = rows * cols;
              std::vector<float> v(n);
              for (auto& x : v) x = st(rng) * 0.02f;
              if (kind == 1)
                for (int i = 0; i < n; i++) v[i] = (i / cols) % 2 ? -0.25f : 0.0f;
              if (kind == 2 && n > 3) v[n / 2] = NAN;
              std::vector<uint8_t> src((size_t)n * (dt == DT_F32 ? 4 : 2));
              for (int i = 0; i < n; i++) {
                if (dt == DT_F32) {
                  std::memcpy(&src[(size_t)i * 4], &v[i], 4);
                } else {
                  const uint16_t h = dt == DT_BF16 ? to_bf16(v[i]) : f32_to_f16_bits(v[i]);
                  std::memcpy(&src[(size_t)i * 2], &h, 2);
                }
              }
              std::vector<float> csv(cols);
              for (auto& c : csv) c = 0.25f + std::fabs(st(rng));
              const size_t groups = (size_t)rows * ((cols + gs - 1) / gs);
              const size_t pb = ((size_t)n * bits + 7) / 8, gb = groups * 12 / 8 + 2, sg = groups;
              std::vector<uint8_t> p1(pb, 0xa5), p2(pb, 0x5a), g1(gb, 0), g2(gb, 0);
              std::vector<uint16_t> s1(sg, 1), s2(sg, 1), z1(sg, 3), z2(sg, 3);
              std::vector<double> r1(rows * 4, 1), r2(rows * 4, 2);
              QuantV2Job j{src.data(), dt, rows, cols, bits, gs, cs ? csv.data() : nullptr, p1.data(), g1.data(), s1.data(), z1.data(), r1.data()};
              QuantV2Job jk = j;
              jk.packed = p2.data(), jk.groupParams = g2.data(), jk.superScales = s2.data(), jk.superOffsets = z2.data(), jk.rowStats = r2.data();
              const int64_t a1 = ref->quantizeV2(j), a2 = k->quantizeV2(jk);
              total++;
              const bool ok = a1 == a2 && (a1 >= 0 || (p1 == p2 && g1 == g2 && s1 == s2 && z1 == z2 &&
                                                       !std::memcmp(r1.data(), r2.data(), r1.size() * 8)));
              if (!ok) {
                if (bad < 10) std::printf("%s: quantizeV2 differs: dtype %d bits %d group %d colScale %d cols %d kind %d\n", k->name, dt, bits, gs, cs, cols, kind);
                bad++;
                continue;
              }
              if (a1 >= 0) continue;
              std::vector<float> d1(n, 1), d2(n, 2);
              DequantV2Job dj{p1.data(), g1.data(), s1.data(), z1.data(), 0, rows, cols, bits, gs, cs ? csv.data() : nullptr, d1.data()};
              DequantV2Job dk = dj;
              dk.out = d2.data();
              ref->dequantizeV2(dj);
              k->dequantizeV2(dk);
              if (std::memcmp(d1.data(), d2.data(), (size_t)n * 4)) {
                if (bad < 10) std::printf("%s: dequantizeV2 differs\n", k->name);
                bad++;
              }
            }
  std::printf("%s vs scalar (format v2): %d mismatches in %d cases\n", k->name, bad, total);
  return bad;
}

int main() {
  const KernelFns* scalar = variant_at(0).fns;
  int bad = 0;
  for (int i = 1; i < variant_count(); i++) {
    if (!variant_at(i).supported) {
      std::printf("%s: not supported by this CPU, skipped\n", variant_at(i).fns->name);
      continue;
    }
    bad += check(scalar, variant_at(i).fns);
    bad += check_v2(scalar, variant_at(i).fns);
  }
  return bad ? 1 : 0;
}
