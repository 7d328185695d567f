#include "cuda/cuda_libs.hpp"

#include <dlfcn.h>

#include <cstdlib>
#include <mutex>
#include <sstream>
#include <vector>

#include "thea/error.hpp"

namespace thea::cuda {
namespace {

#define THEA_STR2(x) #x
#define THEA_STR(x) THEA_STR2(x)

// Opens `soname` through the loader's own search (LD_LIBRARY_PATH, rpath, ld.so.cache),
// then from each fallback directory; RTLD_LOCAL keeps their symbols out of the global scope.
void* open_library(const std::string& soname, std::string* loaded_path, std::string* tried) {
  std::ostringstream log;
  if (void* h = dlopen(soname.c_str(), RTLD_NOW | RTLD_LOCAL)) {
    *loaded_path = soname;
    return h;
  }
  log << soname << " (" << dlerror() << ")";
  for (const std::string& dir : library_search_dirs()) {
    std::string path = dir + "/" + soname;
    if (void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL)) {
      *loaded_path = path;
      return h;
    }
    log << "; " << path;
  }
  *tried = log.str();
  return nullptr;
}

template <class Api>
void load_symbol(void* handle, const char* name, Api& api, auto Api::*member,
                 std::string* missing) {
  void* sym = dlsym(handle, name);
  if (!sym) {
    *missing += (missing->empty() ? "" : ", ") + std::string(name);
    return;
  }
  api.*member = reinterpret_cast<std::remove_reference_t<decltype(api.*member)>>(sym);
}

// Loads a library into a static Api table once; later calls rethrow the first failure.
template <class Api, class Fill>
const Api& load_once(const std::string& soname, const char* what, Fill fill) {
  static std::once_flag once;
  static Api api;
  static std::string error;
  std::call_once(once, [&] {
    std::string tried;
    void* handle = open_library(soname, &api.path, &tried);
    if (!handle) {
      error = std::string("cannot load ") + what + " (" + soname + "); tried: " + tried +
              ". Put the CUDA " THEA_STR(THEA_CUDA_MAJOR) ".x libraries on LD_LIBRARY_PATH or "
              "set THEA_CUDA_LIB_DIR";
      return;
    }
    std::string missing;
    fill(handle, api, &missing);
    if (!missing.empty())
      error = std::string(what) + " at " + api.path + " lacks " + missing +
              " (an older version than the CUDA " THEA_STR(THEA_CUDA_MAJOR) " thea was built for?)";
  });
  if (!error.empty()) throw BackendError(error);
  return api;
}

}  // namespace

std::string nvrtc_soname() { return "libnvrtc.so." THEA_STR(THEA_CUDA_MAJOR); }
std::string cublas_soname() { return "libcublas.so." THEA_STR(THEA_CUDA_MAJOR); }
std::string cudnn_soname() { return "libcudnn.so." THEA_STR(THEA_CUDNN_MAJOR); }

std::vector<std::string> library_search_dirs() {
  std::vector<std::string> dirs;
  if (const char* env = std::getenv("THEA_CUDA_LIB_DIR"); env && *env) {
    std::string s = env;
    std::size_t start = 0;
    while (start <= s.size()) {
      std::size_t end = s.find(':', start);
      if (end == std::string::npos) end = s.size();
      if (end > start) dirs.push_back(s.substr(start, end - start));
      start = end + 1;
    }
  }
  dirs.push_back(THEA_CUDA_TOOLKIT_LIB_DIR);
  dirs.push_back("/usr/local/cuda/lib64");
  return dirs;
}

const NvrtcApi& nvrtc() {
  return load_once<NvrtcApi>(nvrtc_soname(), "NVRTC", [](void* h, NvrtcApi& api, std::string* m) {
#define THEA_LOAD(name) load_symbol(h, #name, api, &NvrtcApi::name, m);
    THEA_NVRTC_FUNCS(THEA_LOAD)
#undef THEA_LOAD
  });
}

const CublasApi& cublas() {
  return load_once<CublasApi>(cublas_soname(), "cuBLAS",
                              [](void* h, CublasApi& api, std::string* m) {
#define THEA_LOAD(name) load_symbol(h, #name, api, &CublasApi::name, m);
                                THEA_CUBLAS_FUNCS(THEA_LOAD)
#undef THEA_LOAD
                              });
}

#if THEA_CUDNN_MAJOR > 0
const CudnnApi& cudnn() {
  return load_once<CudnnApi>(cudnn_soname(), "cuDNN", [](void* h, CudnnApi& api, std::string* m) {
#define THEA_LOAD(name) load_symbol(h, #name, api, &CudnnApi::name, m);
    THEA_CUDNN_FUNCS(THEA_LOAD)
#undef THEA_LOAD
  });
}
#endif

bool cudnn_available(std::string* why) {
#if THEA_CUDNN_MAJOR > 0
  try {
    cudnn();
    return true;
  } catch (const BackendError& e) {
    if (why) *why = e.what();
    return false;
  }
#else
  if (why) *why = "thea was built without cudnn.h";
  return false;
#endif
}

std::string cuda_error_str(cudaError_t err) {
  return std::string(cudaGetErrorName(err)) + ": " + cudaGetErrorString(err);
}

void check_cuda(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return;
  cudaGetLastError();  // clear the sticky non-fatal error so the next call starts clean
  throw BackendError(std::string("cuda: ") + what + " failed: " + cuda_error_str(err));
}

void check_cublas(cublasStatus_t status, const char* what) {
  if (status == CUBLAS_STATUS_SUCCESS) return;
  const char* s = cublas().cublasGetStatusString ? cublas().cublasGetStatusString(status) : "";
  throw BackendError(std::string("cuda: ") + what + " failed: cuBLAS status " +
                     std::to_string(static_cast<int>(status)) + " (" + s + ")");
}

void check_nvrtc(nvrtcResult result, const char* what) {
  if (result == NVRTC_SUCCESS) return;
  throw CompileError(std::string("cuda: ") + what +
                     " failed: " + nvrtc().nvrtcGetErrorString(result));
}

}  // namespace thea::cuda
