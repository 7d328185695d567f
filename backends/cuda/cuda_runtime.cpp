// The real Runtime: cudart (linked statically; it loads the driver itself), NVRTC and
// cuBLAS (dlopen'ed, cuda_libs.cpp). Kernels are loaded with cudaLibraryLoadData and
// launched with cudaLaunchKernel, so no driver API entry point is needed.
#include <cuda.h>  // driver API types only; entry points come through cudart
#include <cuda_runtime_api.h>

#include <cstdlib>
#include <map>
#include <mutex>

#include "cuda/codegen.hpp"
#include "cuda/cuda_libs.hpp"
#include "cuda/dnn.hpp"
#include "cuda/nvrtc_compiler.hpp"
#include "cuda/runtime.hpp"
#include "thea/error.hpp"

namespace thea::cuda {
namespace {

class CudaModule : public Module {
 public:
  explicit CudaModule(cudaLibrary_t lib) : lib_(lib) {}
  ~CudaModule() override {
    if (lib_) cudaLibraryUnload(lib_);
  }
  void* kernel(const std::string& name) const override {
    std::lock_guard lock(mutex_);
    auto it = kernels_.find(name);
    if (it != kernels_.end()) return it->second;
    cudaKernel_t k = nullptr;
    check_cuda(cudaLibraryGetKernel(&k, lib_, name.c_str()),
               ("cudaLibraryGetKernel(" + name + ")").c_str());
    kernels_[name] = reinterpret_cast<void*>(k);
    return k;
  }

 private:
  cudaLibrary_t lib_ = nullptr;
  mutable std::mutex mutex_;
  mutable std::map<std::string, void*> kernels_;
};

class CudaGraph : public Graph {
 public:
  CudaGraph(cudaGraph_t g, cudaGraphExec_t e) : graph_(g), exec_(e) {}
  ~CudaGraph() override {
    if (exec_) cudaGraphExecDestroy(exec_);
    if (graph_) cudaGraphDestroy(graph_);
  }
  void launch(Stream s) override {
    check_cuda(cudaGraphLaunch(exec_, static_cast<cudaStream_t>(s)), "cudaGraphLaunch");
  }

 private:
  cudaGraph_t graph_;
  cudaGraphExec_t exec_;
};

// A cuBLAS handle per stream, with its own workspace so stream capture never allocates.
struct BlasContext {
  BlasHandle handle;
  DeviceBuffer workspace;
};

class RealRuntime : public Runtime {
 public:
  RealRuntime() : cache_() {
    make_current();
    const DeviceInfo& d = device();
    auto archs = nvrtc_supported_archs();
    target_ =
        choose_target(d.cc_major * 10 + d.cc_minor, archs.data(), static_cast<int>(archs.size()));
  }

  std::string name() const override { return "cuda"; }
  const DeviceInfo& info() const override { return device(); }
  CachingAllocator& allocator() override { return device_allocator(); }

  std::shared_ptr<Module> load_module(const std::string& body, const std::string& what) override {
    make_current();
    CompiledCode code =
        compile_cuda(nvrtc_source(body), target_, default_nvrtc_options(), &cache_, what);
    cudaLibrary_t lib = nullptr;
    check_cuda(
        cudaLibraryLoadData(&lib, code.binary.data(), nullptr, nullptr, 0, nullptr, nullptr, 0),
        "cudaLibraryLoadData");
    auto m = std::make_shared<CudaModule>(lib);
    m->compile_seconds = code.seconds;
    m->from_cache = code.from_cache;
    return m;
  }

  Stream create_stream() override {
    make_current();
    cudaStream_t s = nullptr;
    check_cuda(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreate");
    return s;
  }
  void destroy_stream(Stream s) override {
    {
      std::lock_guard lock(mutex_);
      blas_.erase(s);
      dnn_.erase(s);
    }
    if (s) cudaStreamDestroy(static_cast<cudaStream_t>(s));
  }
  void synchronize(Stream s) override {
    check_cuda(cudaStreamSynchronize(static_cast<cudaStream_t>(s)), "cudaStreamSynchronize");
  }
  Event create_event() override {
    cudaEvent_t e = nullptr;
    check_cuda(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "cudaEventCreate");
    return e;
  }
  void destroy_event(Event e) override {
    if (e) cudaEventDestroy(static_cast<cudaEvent_t>(e));
  }
  void record_event(Event e, Stream s) override {
    check_cuda(cudaEventRecord(static_cast<cudaEvent_t>(e), static_cast<cudaStream_t>(s)),
               "cudaEventRecord");
  }
  void wait_event(Stream s, Event e) override {
    check_cuda(cudaStreamWaitEvent(static_cast<cudaStream_t>(s), static_cast<cudaEvent_t>(e), 0),
               "cudaStreamWaitEvent");
  }
  void event_synchronize(Event e) override {
    check_cuda(cudaEventSynchronize(static_cast<cudaEvent_t>(e)), "cudaEventSynchronize");
  }

  void memcpy_h2d(void* dst, const void* src, std::size_t n, Stream s) override {
    check_cuda(cudaMemcpyAsync(dst, src, n, cudaMemcpyHostToDevice, static_cast<cudaStream_t>(s)),
               "cudaMemcpyAsync (host to device)");
  }
  void memcpy_d2h(void* dst, const void* src, std::size_t n, Stream s) override {
    check_cuda(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToHost, static_cast<cudaStream_t>(s)),
               "cudaMemcpyAsync (device to host)");
  }
  void memcpy_d2d(void* dst, const void* src, std::size_t n, Stream s) override {
    check_cuda(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, static_cast<cudaStream_t>(s)),
               "cudaMemcpyAsync (device to device)");
  }
  void memset_d(void* dst, int value, std::size_t n, Stream s) override {
    check_cuda(cudaMemsetAsync(dst, value, n, static_cast<cudaStream_t>(s)), "cudaMemsetAsync");
  }

  void launch(void* kernel, const LaunchConfig& cfg, const std::int64_t* params, std::size_t,
              const std::int64_t* args, Stream s) override {
    // The kernel takes (thea_params<N> by value, const long long* args).
    void* argv[2] = {const_cast<std::int64_t*>(params), &args};
    if (!use_driver_launch_) {
      cudaError_t err = cudaLaunchKernel(kernel, dim3(cfg.grid_x, cfg.grid_y, cfg.grid_z),
                                         dim3(cfg.block_x, cfg.block_y, cfg.block_z), argv,
                                         cfg.shared_bytes, static_cast<cudaStream_t>(s));
      if (err == cudaSuccess) return;
      if (err != cudaErrorInvalidDeviceFunction && err != cudaErrorInvalidValue &&
          err != cudaErrorInvalidResourceHandle)
        check_cuda(err, "cudaLaunchKernel");
      // A runtime that does not take library kernels as launch handles: use the driver's
      // cuLaunchKernel (reached through cudart, libcuda is never linked) from now on.
      cudaGetLastError();
      use_driver_launch_ = true;
    }
    driver_launch(kernel, cfg, argv, s);
  }

  using PfnKernelGetFunction = CUresult (*)(CUfunction*, CUkernel);
  using PfnLaunchKernel = CUresult (*)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned,
                                       unsigned, unsigned, CUstream, void**, void**);

  void driver_launch(void* kernel, const LaunchConfig& cfg, void** argv, Stream s) {
    if (!get_function_ || !launch_kernel_) {
      auto entry = [](const char* name) {
        void* fn = nullptr;
        cudaDriverEntryPointQueryResult status{};
        check_cuda(cudaGetDriverEntryPointByVersion(name, &fn, 12000, cudaEnableDefault, &status),
                   (std::string("cudaGetDriverEntryPointByVersion(") + name + ")").c_str());
        if (!fn || status != cudaDriverEntryPointSuccess)
          throw BackendError(std::string("cuda: the driver has no ") + name);
        return fn;
      };
      get_function_ = reinterpret_cast<PfnKernelGetFunction>(entry("cuKernelGetFunction"));
      launch_kernel_ = reinterpret_cast<PfnLaunchKernel>(entry("cuLaunchKernel"));
    }
    CUfunction f = nullptr;
    CUresult r = get_function_(&f, static_cast<CUkernel>(kernel));
    if (r != CUDA_SUCCESS)
      throw BackendError("cuda: cuKernelGetFunction failed with CUresult " + std::to_string(r));
    r = launch_kernel_(f, cfg.grid_x, cfg.grid_y, cfg.grid_z, cfg.block_x, cfg.block_y, cfg.block_z,
                       cfg.shared_bytes, static_cast<CUstream>(s), argv, nullptr);
    if (r != CUDA_SUCCESS)
      throw BackendError("cuda: cuLaunchKernel failed with CUresult " + std::to_string(r) + " (" +
                         cfg.str() + ")");
  }

  cublasHandle_t blas_for(Stream s) {
    std::lock_guard lock(mutex_);
    auto& ctx = blas_[s];
    if (!ctx) {
      ctx = std::make_unique<BlasContext>();
      cublasHandle_t h = ctx->handle.get(s);
      // Hopper wants 32 MiB; owning it keeps cuBLAS from allocating inside a capture.
      const std::size_t ws = 32u << 20;
      ctx->workspace = DeviceBuffer(&allocator(), ws);
      check_cublas(cublas().cublasSetWorkspace_v2(h, ctx->workspace.get(), ws),
                   "cublasSetWorkspace");
      check_cublas(cublas().cublasSetPointerMode_v2(h, CUBLAS_POINTER_MODE_DEVICE),
                   "cublasSetPointerMode");
    }
    return ctx->handle.get(s);
  }

  void gemm(Dtype dtype, const BlasPlan& p, const void* alpha, const MatView& a, const MatView& b,
            const void* beta, const MatView& c, Stream s) override {
    cublasHandle_t h = blas_for(s);
    const CublasApi& api = cublas();
    auto op = [](const BlasOperand& o) { return o.transpose ? CUBLAS_OP_T : CUBLAS_OP_N; };
    const int n = static_cast<int>(p.n), m = static_cast<int>(p.m), k = static_cast<int>(p.k);
    if (dtype == Dtype::Float32) {
      check_cublas(
          api.cublasSgemm_v2(h, op(p.b), op(p.a), n, m, k, static_cast<const float*>(alpha),
                             static_cast<const float*>(b.ptr), static_cast<int>(p.b.ld),
                             static_cast<const float*>(a.ptr), static_cast<int>(p.a.ld),
                             static_cast<const float*>(beta), static_cast<float*>(c.ptr),
                             static_cast<int>(p.ldc)),
          "cublasSgemm");
    } else {
      check_cublas(
          api.cublasDgemm_v2(h, op(p.b), op(p.a), n, m, k, static_cast<const double*>(alpha),
                             static_cast<const double*>(b.ptr), static_cast<int>(p.b.ld),
                             static_cast<const double*>(a.ptr), static_cast<int>(p.a.ld),
                             static_cast<const double*>(beta), static_cast<double*>(c.ptr),
                             static_cast<int>(p.ldc)),
          "cublasDgemm");
    }
  }

  void gemm_indirect(Dtype dtype, const BlasPlan& p, const void* alpha, void* const* a_ptr,
                     void* const* b_ptr, const void* beta, void* const* c_ptr, Stream s) override {
    cublasHandle_t h = blas_for(s);
    const CublasApi& api = cublas();
    auto op = [](const BlasOperand& o) { return o.transpose ? CUBLAS_OP_T : CUBLAS_OP_N; };
    const int n = static_cast<int>(p.n), m = static_cast<int>(p.m), k = static_cast<int>(p.k);
    if (dtype == Dtype::Float32) {
      check_cublas(api.cublasSgemmBatched(
                       h, op(p.b), op(p.a), n, m, k, static_cast<const float*>(alpha),
                       reinterpret_cast<const float* const*>(b_ptr), static_cast<int>(p.b.ld),
                       reinterpret_cast<const float* const*>(a_ptr), static_cast<int>(p.a.ld),
                       static_cast<const float*>(beta), reinterpret_cast<float* const*>(c_ptr),
                       static_cast<int>(p.ldc), 1),
                   "cublasSgemmBatched");
    } else {
      check_cublas(api.cublasDgemmBatched(
                       h, op(p.b), op(p.a), n, m, k, static_cast<const double*>(alpha),
                       reinterpret_cast<const double* const*>(b_ptr), static_cast<int>(p.b.ld),
                       reinterpret_cast<const double* const*>(a_ptr), static_cast<int>(p.a.ld),
                       static_cast<const double*>(beta), reinterpret_cast<double* const*>(c_ptr),
                       static_cast<int>(p.ldc), 1),
                   "cublasDgemmBatched");
    }
  }

  bool dnn_softmax(Dtype dtype, bool log, std::int64_t rows, std::int64_t cols, const void* x,
                   void* y, Stream s) override {
    if (!DnnHandle::available()) return false;
    std::unique_ptr<DnnHandle>* h;
    {
      std::lock_guard lock(mutex_);
      h = &dnn_[s];
      if (!*h) *h = std::make_unique<DnnHandle>();
    }
    (*h)->softmax(s, dtype, log, rows, cols, x, y);
    return true;
  }

  void* host_alloc(std::size_t n) override {
    void* p = nullptr;
    check_cuda(cudaMallocHost(&p, std::max<std::size_t>(n, 8)), "cudaMallocHost");
    return p;
  }
  void host_free(void* p) override {
    if (p) cudaFreeHost(p);
  }

  void begin_capture(Stream s) override {
    check_cuda(
        cudaStreamBeginCapture(static_cast<cudaStream_t>(s), cudaStreamCaptureModeThreadLocal),
        "cudaStreamBeginCapture");
  }
  std::unique_ptr<Graph> end_capture(Stream s) override {
    cudaGraph_t g = nullptr;
    cudaError_t err = cudaStreamEndCapture(static_cast<cudaStream_t>(s), &g);
    if (err != cudaSuccess || !g) {
      cudaGetLastError();
      if (g) cudaGraphDestroy(g);
      return nullptr;
    }
    cudaGraphExec_t exec = nullptr;
    err = cudaGraphInstantiate(&exec, g, 0);
    if (err != cudaSuccess) {
      cudaGetLastError();
      cudaGraphDestroy(g);
      return nullptr;
    }
    return std::make_unique<CudaGraph>(g, exec);
  }

 private:
  KernelCache cache_;
  CompileTarget target_;
  bool use_driver_launch_ = std::getenv("THEA_CUDA_DRIVER_LAUNCH") != nullptr;
  PfnKernelGetFunction get_function_ = nullptr;
  PfnLaunchKernel launch_kernel_ = nullptr;
  std::mutex mutex_;
  std::map<Stream, std::unique_ptr<BlasContext>> blas_;
  std::map<Stream, std::unique_ptr<DnnHandle>> dnn_;
};

}  // namespace

Runtime& cuda_runtime() {
  // Leaked: programs and mirrors may outlive static destruction order.
  static Runtime* rt = new RealRuntime();
  return *rt;
}

}  // namespace thea::cuda
