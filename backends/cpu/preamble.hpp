// Text every generated CPU translation unit starts with, embedded at build time by
// third_party/CpuBackend.cmake: the scalar functors shared by all backends
// (backends/preamble/thea_scalar.h) and the GEMM micro-kernels (thea_cpu_kernels.h).
#pragma once

namespace thea::cpu {

// nullptr when the library was built without third_party/CpuBackend.cmake.
const char* scalar_preamble();
const char* kernels_preamble();

}  // namespace thea::cpu
