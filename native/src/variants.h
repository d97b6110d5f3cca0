// The compiled variants. Which ones exist depends on the target architecture; which ones run
// depends on the CPU (dispatch.cc).
#pragma once

#include "common.h"

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#define AQ_X86 1
#endif
#if defined(__aarch64__)
#define AQ_ARM64 1
#endif

namespace aq {

extern const KernelFns kScalarKernel;
#if defined(AQ_X86)
extern const KernelFns kAvx2Kernel;
extern const KernelFns kAvx512Kernel;
#endif
#if defined(AQ_ARM64)
extern const KernelFns kNeonKernel;
#endif

struct VariantInfo {
  const KernelFns* fns;
  bool supported;  // this CPU (and OS) can run it
};

/** Every compiled variant, worst first. */
int variant_count();
const VariantInfo& variant_at(int i);

}  // namespace aq
