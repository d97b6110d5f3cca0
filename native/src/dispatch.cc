// Picks the variant once, at load: the best one this CPU supports, or the one named by
// ARROWQUANT_KERNEL (scalar | avx2 | avx512 | neon; "auto" or empty = best). Naming a variant
// that is not compiled in, or that this CPU cannot run, is an error reported to JavaScript.
#include <cstdlib>
#include <cstring>
#include <string>

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
  int selected = -1;
  std::string error;

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
    const char* env = std::getenv("ARROWQUANT_KERNEL");
    if (env && *env && std::strcmp(env, "auto") != 0 && std::strcmp(env, "reference") != 0) {
      for (int i = 0; i < count; i++) {
        if (std::strcmp(v[i].fns->name, env) != 0) continue;
        if (v[i].supported) {
          selected = i;
        } else {
          error = std::string("ARROWQUANT_KERNEL=") + env + " but this CPU cannot run the " + env + " kernels (" +
                  required_features(env) + ")";
        }
        return;
      }
      error = std::string("ARROWQUANT_KERNEL=") + env + " is not a compiled variant; expected one of: " + names() +
              ", reference or auto";
      return;
    }
    for (int i = 0; i < count; i++)
      if (v[i].supported) selected = i;
  }

  static const char* required_features(const char* name) {
    if (std::strcmp(name, "avx2") == 0) return "needs avx2, fma and f16c";
    if (std::strcmp(name, "avx512") == 0) return "needs avx512f, avx512bw, avx512vl, avx512dq, avx2, fma and f16c";
    return "unsupported CPU";
  }

  std::string names() const {
    std::string s;
    for (int i = 0; i < count; i++) {
      if (i) s += ", ";
      s += v[i].fns->name;
    }
    return s;
  }
};

Registry& registry() {
  static Registry r;
  return r;
}

}  // namespace

int variant_count() { return registry().count; }
const VariantInfo& variant_at(int i) { return registry().v[i]; }
int dispatched_variant(const char** error) {
  Registry& r = registry();
  *error = r.error.empty() ? nullptr : r.error.c_str();
  return r.selected;
}

}  // namespace aq
