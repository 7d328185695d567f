// NVRTC: CUDA C++ source -> cubin (or PTX), through the on-disk KernelCache. Needs no GPU,
// so every kernel the renderer can produce is compile-tested in CI.
#pragma once

#include <string>
#include <vector>

#include "cuda/device.hpp"
#include "cuda/kernel_cache.hpp"

namespace thea::cuda {

struct CompiledCode {
  std::string binary;  // cubin image, or NUL-terminated PTX text
  bool cubin = true;
  bool from_cache = false;
  double seconds = 0;  // compile or cache-load time
  std::string log;     // NVRTC's log (warnings)
};

// "13.0"
std::string nvrtc_version();
// Architectures NVRTC can target, e.g. {75, 80, 86, 87, 89, 90, 100, ...}.
std::vector<int> nvrtc_supported_archs();

// Options every thea kernel is compiled with (besides the arch): C++17, no fast math, so
// results match the reference backend's libm to a few ulps.
std::vector<std::string> default_nvrtc_options();

// Compiles `source` (a complete translation unit; see kernel_prelude()) for `target`.
// `cache` may be null. Throws CompileError with NVRTC's log on failure; the source is then
// also written next to the cache (path in the message) for inspection.
CompiledCode compile_cuda(const std::string& source, const CompileTarget& target,
                          const std::vector<std::string>& options, const KernelCache* cache,
                          const std::string& what = "kernel");

// The SM architecture a cubin was built for (90 for sm_90), or -1 when `binary` is not a
// CUDA ELF image.
int cubin_arch(const std::string& binary);

// The cache key: everything that changes the binary.
std::string compile_key(const std::string& source, const CompileTarget& target,
                        const std::vector<std::string>& options);

// What every generated translation unit starts with: fixed-width integer typedefs for
// NVRTC (which has no <cstdint>) and the shared scalar preamble (thea_scalar.h, embedded).
const std::string& kernel_prelude();
extern const char* const kScalarPreamble;

}  // namespace thea::cuda
