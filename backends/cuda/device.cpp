#include "cuda/device.hpp"

#include <cuda_runtime_api.h>

#include <cstdlib>
#include <mutex>

#include "cuda/cuda_libs.hpp"
#include "thea/error.hpp"

namespace thea::cuda {
namespace {

int selected_ordinal() {
  const char* env = std::getenv("THEA_CUDA_DEVICE");
  if (!env || !*env) return 0;
  char* end = nullptr;
  long v = std::strtol(env, &end, 10);
  if (*end != '\0' || v < 0)
    throw BackendError(std::string("THEA_CUDA_DEVICE='") + env + "' is not a device number");
  return static_cast<int>(v);
}

std::string version_str(int v) {
  return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10);
}

struct State {
  std::string reason;
  DeviceInfo info;
};

const State& state() {
  static State s = [] {
    State st;
    int runtime = 0;
    cudaRuntimeGetVersion(&runtime);
    int driver = 0;
    cudaDriverGetVersion(&driver);
    st.info.runtime_version = runtime;
    st.info.driver_version = driver;
    if (driver == 0) {
      st.reason =
          "no NVIDIA driver found (libcuda.so.1 could not be loaded): this machine has no "
          "usable GPU driver";
      return st;
    }
    if (driver / 1000 < runtime / 1000) {
      st.reason = "the NVIDIA driver supports CUDA " + version_str(driver) +
                  " but thea was built "
                  "with CUDA " +
                  version_str(runtime) + "; update the driver";
      return st;
    }
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) {
      cudaGetLastError();
      st.reason = "cudaGetDeviceCount failed: " + cuda_error_str(err);
      return st;
    }
    if (count == 0) {
      st.reason = "the NVIDIA driver reports no CUDA device";
      return st;
    }
    int ordinal = 0;
    try {
      ordinal = selected_ordinal();
    } catch (const BackendError& e) {
      st.reason = e.what();
      return st;
    }
    if (ordinal >= count) {
      st.reason = "THEA_CUDA_DEVICE=" + std::to_string(ordinal) + " but only " +
                  std::to_string(count) + " device(s) exist";
      return st;
    }
    cudaDeviceProp p{};
    err = cudaGetDeviceProperties(&p, ordinal);
    if (err != cudaSuccess) {
      cudaGetLastError();
      st.reason = "cudaGetDeviceProperties failed: " + cuda_error_str(err);
      return st;
    }
    DeviceInfo& d = st.info;
    d.ordinal = ordinal;
    d.name = p.name;
    d.cc_major = p.major;
    d.cc_minor = p.minor;
    d.sm_count = p.multiProcessorCount;
    d.max_threads_per_block = p.maxThreadsPerBlock;
    d.max_threads_per_sm = p.maxThreadsPerMultiProcessor;
    d.warp_size = p.warpSize;
    d.shared_mem_per_block = p.sharedMemPerBlock;
    d.l2_bytes = static_cast<std::size_t>(p.l2CacheSize);
    d.total_mem = p.totalGlobalMem;
    // The libraries every program needs; cuDNN is optional.
    try {
      nvrtc();
      cublas();
    } catch (const BackendError& e) {
      st.reason = e.what();
      return st;
    }
    return st;
  }();
  return s;
}

}  // namespace

std::string unavailable_reason() { return state().reason; }

const DeviceInfo& device() {
  const State& s = state();
  if (!s.reason.empty()) throw BackendError("cuda backend unavailable: " + s.reason);
  return s.info;
}

void make_current() {
  // cudaSetDevice is cheap when already current; called on every entry from a new thread.
  thread_local int current = -1;
  int ordinal = device().ordinal;
  if (current == ordinal) return;
  check_cuda(cudaSetDevice(ordinal), "cudaSetDevice");
  current = ordinal;
}

std::string CompileTarget::str() const {
  return (cubin ? "sm_" : "compute_") + std::to_string(arch);
}
std::string CompileTarget::option() const { return "-arch=" + str(); }

CompileTarget choose_target(int cc, const int* supported, int n_supported) {
  CompileTarget t;
  int best_below = 0;
  for (int i = 0; i < n_supported; ++i) {
    if (supported[i] == cc) {
      t.arch = cc;
      t.cubin = true;
      return t;
    }
    if (supported[i] < cc && supported[i] > best_below) best_below = supported[i];
  }
  if (best_below == 0)
    throw BackendError("NVRTC supports no architecture at or below compute capability " +
                       std::to_string(cc / 10) + "." + std::to_string(cc % 10));
  // SASS only runs on its own major architecture; PTX is forward compatible.
  t.arch = best_below;
  t.cubin = false;
  return t;
}

}  // namespace thea::cuda
