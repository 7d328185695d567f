#include "preamble.hpp"

namespace thea::cpu {

#if defined(THEA_HAVE_CPU_PREAMBLE)
const char* scalar_preamble() {
  static const char* const text =
#include "thea_cpu_scalar_preamble.inc"
      ;
  return text;
}
const char* kernels_preamble() {
  static const char* const text =
#include "thea_cpu_kernels_preamble.inc"
      ;
  return text;
}
#else
const char* scalar_preamble() { return nullptr; }
const char* kernels_preamble() { return nullptr; }
#endif

}  // namespace thea::cpu
