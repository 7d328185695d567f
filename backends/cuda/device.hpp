// The GPU thea runs on: whether there is one (and if not, why), its properties, and the
// NVRTC target chosen for it.
#pragma once

#include <cstddef>
#include <string>

namespace thea::cuda {

struct DeviceInfo {
  int ordinal = 0;
  std::string name;
  int cc_major = 0;
  int cc_minor = 0;
  int sm_count = 1;
  int max_threads_per_block = 1024;
  int max_threads_per_sm = 2048;
  int warp_size = 32;
  std::size_t shared_mem_per_block = 48 * 1024;
  std::size_t l2_bytes = 0;
  std::size_t total_mem = 0;
  int driver_version = 0;  // 13000 for CUDA 13.0
  int runtime_version = 0;
};

// Why the CUDA backend cannot run in this process, or empty when it can: no driver, a
// driver too old for the runtime, no device, NVRTC or cuBLAS missing. Computed once.
std::string unavailable_reason();

// The device selected by THEA_CUDA_DEVICE (default 0); throws BackendError when
// unavailable_reason() is not empty. Makes it current on the calling thread.
const DeviceInfo& device();
void make_current();

// How kernels are compiled for a device: SASS for `arch` when NVRTC supports it, else PTX
// for the newest virtual arch NVRTC knows (the driver JITs it).
struct CompileTarget {
  int arch = 90;               // 90 -> sm_90 / compute_90
  bool cubin = true;           // false: PTX
  std::string option() const;  // "-arch=sm_90" or "-arch=compute_90"
  std::string str() const;     // "sm_90" or "compute_90"
};
// Picks the target for compute capability `cc` (e.g. 90) given the archs NVRTC supports.
CompileTarget choose_target(int cc, const int* supported, int n_supported);

}  // namespace thea::cuda
