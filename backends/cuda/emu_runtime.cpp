// The emulator Runtime: the CUDA backend's generated kernels compiled by the host C++
// compiler into a shared object and run by the SIMT emulator (simt.cpp); memory is host
// memory; cuBLAS calls are computed with cuBLAS's column-major semantics; stream capture
// records the work and replays it, as a CUDA graph would. Synchronous and slow, but it
// runs the backend's real code paths on machines without a GPU (tests, debugging).

#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>

#include "cpu/compiler.hpp"
#include "cuda/codegen.hpp"
#include "cuda/kernel_cache.hpp"
#include "cuda/runtime.hpp"
#include "cuda/simt.hpp"
#include "thea/error.hpp"
#include "thea/rewrite.hpp"

namespace thea::cuda {
namespace {

class HostMemory : public RawMemory {
 public:
  void* allocate(std::size_t n) override { return std::aligned_alloc(256, (n + 255) / 256 * 256); }
  void deallocate(void* p) override { std::free(p); }
  std::string describe() const override { return "emulated device memory"; }
};

class EmuModule : public Module {
 public:
  explicit EmuModule(std::shared_ptr<cpu::SharedLibrary> lib) : lib_(std::move(lib)) {}
  void* kernel(const std::string& name) const override {
    try {
      return lib_->symbol(name + "__emu");
    } catch (const CompileError&) {
      throw BackendError("cuda emulator: kernel " + name + " not found in module");
    }
  }

 private:
  std::shared_ptr<cpu::SharedLibrary> lib_;
};

class EmuGraph : public Graph {
 public:
  explicit EmuGraph(std::vector<std::function<void()>> ops) : ops_(std::move(ops)) {}
  void launch(Stream) override {
    for (auto& op : ops_) op();
  }

 private:
  std::vector<std::function<void()>> ops_;
};

// cuBLAS's column-major gemm on host memory: C = alpha op(A) op(B) + beta C.
template <class T>
void colmajor_gemm(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, T alpha,
                   const T* A, std::int64_t lda, const T* B, std::int64_t ldb, T beta, T* C,
                   std::int64_t ldc) {
  for (std::int64_t j = 0; j < n; ++j)
    for (std::int64_t i = 0; i < m; ++i) {
      T acc = 0;
      for (std::int64_t p = 0; p < k; ++p) {
        T a = ta ? A[p + i * lda] : A[i + p * lda];
        T b = tb ? B[j + p * ldb] : B[p + j * ldb];
        acc += a * b;
      }
      T& c = C[i + j * ldc];
      c = beta == T(0) ? alpha * acc : alpha * acc + beta * c;
    }
}

class EmuRuntime : public Runtime {
 public:
  EmuRuntime() : alloc_(std::make_unique<HostMemory>()) {
    info_.name = "thea SIMT emulator";
    info_.cc_major = 9;
    info_.cc_minor = 0;
    info_.sm_count = 2;  // small grids: every kernel loops over its grid stride
    info_.max_threads_per_block = 1024;
    info_.max_threads_per_sm = 2048;
    info_.warp_size = 32;
    info_.total_mem = std::size_t{1} << 34;
    // The cpu backend's JIT and cache build the emulated kernels, at a low optimisation level
    // (they run under the emulator's coroutines, compile time dominates).
    const std::string dir = KernelCache::default_dir();
    cache_ = std::make_unique<cpu::KernelCache>(dir.empty() ? dir : dir + "/emu");
    compiler_ = cpu::host_compiler();
    compiler_.flags = {"-std=c++17", "-O1", "-shared", "-fPIC", "-w"};
    compiler_.libs.clear();
  }

  std::string name() const override { return "cuda-emu"; }
  const DeviceInfo& info() const override { return info_; }
  CachingAllocator& allocator() override { return alloc_; }

  std::shared_ptr<Module> load_module(const std::string& body, const std::string& what) override {
    cpu::BuildResult built;
    try {
      built = cache_->load_or_build(emu_source(body), compiler_);
    } catch (const CompileError& e) {
      throw CompileError("cuda emulator: the host compiler failed on " + what + ": " + e.what());
    }
    using Bind = void (*)(const thea_emu_hooks*);
    reinterpret_cast<Bind>(built.library->symbol("thea_emu_bind"))(simt_hooks());
    auto m = std::make_shared<EmuModule>(built.library);
    m->compile_seconds = built.seconds;
    m->from_cache = built.cache_hit;
    return m;
  }

  Stream create_stream() override { return reinterpret_cast<Stream>(++next_token_); }
  void destroy_stream(Stream) override {}
  void synchronize(Stream) override {}
  Event create_event() override { return reinterpret_cast<Event>(++next_token_); }
  void destroy_event(Event) override {}
  void record_event(Event, Stream) override {}
  void wait_event(Stream, Event) override {}
  void event_synchronize(Event) override {}

  // cuDNN is not emulated: the program falls back to its own softmax kernel.
  bool dnn_softmax(Dtype, bool, std::int64_t, std::int64_t, const void*, void*, Stream) override {
    return false;
  }

  void* host_alloc(std::size_t n) override { return std::malloc(std::max<std::size_t>(n, 8)); }
  void host_free(void* p) override { std::free(p); }

  // Host<->device copies are never captured (the program makes them outside capture).
  void memcpy_h2d(void* dst, const void* src, std::size_t n, Stream s) override {
    check_not_capturing(s, "memcpy_h2d");
    std::memcpy(dst, src, n);
  }
  void memcpy_d2h(void* dst, const void* src, std::size_t n, Stream s) override {
    check_not_capturing(s, "memcpy_d2h");
    std::memcpy(dst, src, n);
  }
  void memcpy_d2d(void* dst, const void* src, std::size_t n, Stream s) override {
    run_or_record(s, [=] { std::memmove(dst, src, n); });
  }
  void memset_d(void* dst, int value, std::size_t n, Stream s) override {
    run_or_record(s, [=] { std::memset(dst, value, n); });
  }

  void launch(void* kernel, const LaunchConfig& cfg, const std::int64_t* params,
              std::size_t n_words, const std::int64_t* args, Stream s) override {
    // Parameters are captured by value, as cudaLaunchKernel copies them.
    std::vector<std::int64_t> p(params, params + n_words);
    auto entry = reinterpret_cast<thea_emu_entry>(kernel);
    launches_++;
    if (skip_kernels_) return;  // measuring the host side of a call
    run_or_record(s, [=] { simt_run(cfg, entry, p.data(), args); });
  }

  void gemm(Dtype dtype, const BlasPlan& plan, const void* alpha, const MatView& a,
            const MatView& b, const void* beta, const MatView& c, Stream s) override {
    if (skip_kernels_) return;
    void* ap = a.ptr;
    void* bp = b.ptr;
    void* cp = c.ptr;
    run_or_record(s, [=] { do_gemm(dtype, plan, alpha, ap, bp, beta, cp); });
  }
  void gemm_indirect(Dtype dtype, const BlasPlan& plan, const void* alpha, void* const* a_ptr,
                     void* const* b_ptr, const void* beta, void* const* c_ptr, Stream s) override {
    // The pointers are read when the work runs, like cublas<t>gemmBatched.
    if (skip_kernels_) return;
    run_or_record(s, [=] { do_gemm(dtype, plan, alpha, *a_ptr, *b_ptr, beta, *c_ptr); });
  }

  void begin_capture(Stream s) override {
    std::lock_guard lock(mutex_);
    capturing_[s] = {};
  }
  std::unique_ptr<Graph> end_capture(Stream s) override {
    std::lock_guard lock(mutex_);
    auto it = capturing_.find(s);
    if (it == capturing_.end()) return nullptr;
    auto g = std::make_unique<EmuGraph>(std::move(it->second));
    capturing_.erase(it);
    return g;
  }

  std::size_t launches() const { return launches_; }

 private:
  static void do_gemm(Dtype dtype, const BlasPlan& p, const void* alpha, void* a, void* b,
                      const void* beta, void* c) {
    if (dtype == Dtype::Float32)
      colmajor_gemm<float>(p.b.transpose, p.a.transpose, p.n, p.m, p.k,
                           *static_cast<const float*>(alpha), static_cast<const float*>(b), p.b.ld,
                           static_cast<const float*>(a), p.a.ld, *static_cast<const float*>(beta),
                           static_cast<float*>(c), p.ldc);
    else
      colmajor_gemm<double>(p.b.transpose, p.a.transpose, p.n, p.m, p.k,
                            *static_cast<const double*>(alpha), static_cast<const double*>(b),
                            p.b.ld, static_cast<const double*>(a), p.a.ld,
                            *static_cast<const double*>(beta), static_cast<double*>(c), p.ldc);
  }

  void run_or_record(Stream s, std::function<void()> op) {
    {
      std::lock_guard lock(mutex_);
      auto it = capturing_.find(s);
      if (it != capturing_.end()) {
        it->second.push_back(std::move(op));
        return;
      }
    }
    op();
  }
  void check_not_capturing(Stream s, const char* what) {
    std::lock_guard lock(mutex_);
    if (capturing_.count(s))
      throw BackendError(std::string("cuda emulator: ") + what + " during stream capture");
  }

  DeviceInfo info_;
  CachingAllocator alloc_;
  std::unique_ptr<cpu::KernelCache> cache_;
  cpu::CompilerInfo compiler_;
  std::mutex mutex_;
  std::map<Stream, std::vector<std::function<void()>>> capturing_;
  std::uintptr_t next_token_ = 0x1000;
  std::size_t launches_ = 0;
  // THEA_EMU_SKIP_KERNELS=1: launches do nothing (benchmarks of the per-call host path).
  bool skip_kernels_ = std::getenv("THEA_EMU_SKIP_KERNELS") != nullptr;
};

}  // namespace

Runtime& emu_runtime() {
  static Runtime* rt = new EmuRuntime();
  return *rt;
}

}  // namespace thea::cuda
