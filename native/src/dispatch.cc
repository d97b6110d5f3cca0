// The compiled variants and whether this CPU can run each, found once at load. Which one runs is
// chosen in TypeScript (native/kernels.ts selectKernel, ARROW_QUANT_KERNEL).
#include "variants.h"

#if defined(AQ_X86)
#include <cpuid.h>
#endif

namespace aq {
namespace {

#if defined(AQ_X86)
/** CPUID.1:ECX.F16C[bit 29] (not every compiler's __builtin_cpu_supports knows "f16c"). */
bool cpu_has_f16c() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return false;
  return (c & (1u << 29)) != 0;
}
#endif

struct Registry {
  VariantInfo v[4];
  int count = 0;

  Registry() {
    v[count++] = {&kScalarKernel, true};
#if defined(AQ_X86)
    __builtin_cpu_init();
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c();
    const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
    v[count++] = {&kAvx2Kernel, avx2};
    v[count++] = {&kAvx512Kernel, avx512};
#endif
#if defined(AQ_ARM64)
    v[count++] = {&kNeonKernel, true};
#endif
  }
};

Registry& registry() {
  static Registry r;
  return r;
}

}  // namespace

int variant_count() { return registry().count; }
const VariantInfo& variant_at(int i) { return registry().v[i]; }

}  // namespace aq
