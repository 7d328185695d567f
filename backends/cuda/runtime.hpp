// The device operations a CUDA program performs, behind one interface with two
// implementations: the real one (cudart + cuBLAS + NVRTC, cuda_runtime.cpp) and a host
// emulator (emu_runtime.cpp) that compiles the same generated kernels with the host C++
// compiler and runs them thread by thread, so the whole backend — lowering, codegen,
// launch parameters, buffers, updates, graph replay — is tested on machines without a GPU.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "cuda/allocator.hpp"
#include "cuda/blas.hpp"
#include "cuda/device.hpp"
#include "cuda/launch.hpp"
#include "thea/dtype.hpp"

namespace thea::cuda {

using Stream = void*;  // cudaStream_t, or an emulator token
using Event = void*;   // cudaEvent_t

// A compiled translation unit and the kernels in it.
class Module {
 public:
  virtual ~Module() = default;
  // Opaque handle passed back to Runtime::launch (cudaKernel_t or an emulator entry).
  virtual void* kernel(const std::string& name) const = 0;
  double compile_seconds = 0;
  bool from_cache = false;
};

// A replayable capture of one call's device work (a CUDA graph).
class Graph {
 public:
  virtual ~Graph() = default;
  virtual void launch(Stream stream) = 0;
};

class Runtime {
 public:
  virtual ~Runtime() = default;
  virtual std::string name() const = 0;
  virtual const DeviceInfo& info() const = 0;
  virtual CachingAllocator& allocator() = 0;

  // Compiles `body` (kernel source without prelude; see codegen.hpp) and loads it.
  virtual std::shared_ptr<Module> load_module(const std::string& body, const std::string& what) = 0;

  virtual Stream create_stream() = 0;
  virtual void destroy_stream(Stream s) = 0;
  virtual void synchronize(Stream s) = 0;
  virtual Event create_event() = 0;
  virtual void destroy_event(Event e) = 0;
  virtual void record_event(Event e, Stream s) = 0;
  virtual void wait_event(Stream s, Event e) = 0;

  // Host memory is pageable; copies are stream-ordered. A host source may be reused as
  // soon as memcpy_h2d returns; a host destination is valid after synchronize().
  virtual void memcpy_h2d(void* dst, const void* src, std::size_t n, Stream s) = 0;
  virtual void memcpy_d2h(void* dst, const void* src, std::size_t n, Stream s) = 0;
  virtual void memcpy_d2d(void* dst, const void* src, std::size_t n, Stream s) = 0;
  virtual void memset_d(void* dst, int value, std::size_t n, Stream s) = 0;

  // Launches `kernel(params, args)`: `params` is the kernel's by-value parameter block
  // (`n_words` 8-byte words), `args` a device pointer to the per-call argument block.
  virtual void launch(void* kernel, const LaunchConfig& cfg, const std::int64_t* params,
                      std::size_t n_words, const std::int64_t* args, Stream s) = 0;

  // C = alpha * A.B + beta * C on row-major views (plan from plan_gemm). alpha and beta
  // are read from device memory when the work runs (values in the argument block), so a
  // replayed graph sees this call's values.
  virtual void gemm(Dtype dtype, const BlasPlan& plan, const void* alpha, const MatView& a,
                    const MatView& b, const void* beta, const MatView& c, Stream s) = 0;
  // The same with the three matrix pointers also read from device memory (minibatch
  // slices whose address changes every call, inside a replayed graph).
  virtual void gemm_indirect(Dtype dtype, const BlasPlan& plan, const void* alpha,
                             void* const* a_ptr, void* const* b_ptr, const void* beta,
                             void* const* c_ptr, Stream s) = 0;

  // cuDNN softmax (log or not) over `rows` contiguous rows of `cols`; false when cuDNN is
  // not available here (the caller then runs its own kernel).
  virtual bool dnn_softmax(Dtype dtype, bool log, std::int64_t rows, std::int64_t cols,
                           const void* x, void* y, Stream s) = 0;

  // Page-locked host memory: copies from it are truly asynchronous (a copy from pageable
  // memory waits for the stream first).
  virtual void* host_alloc(std::size_t n) = 0;
  virtual void host_free(void* p) = 0;
  virtual void event_synchronize(Event e) = 0;

  // Stream capture into a replayable graph; nullptr when graphs are unavailable.
  virtual void begin_capture(Stream s) = 0;
  virtual std::unique_ptr<Graph> end_capture(Stream s) = 0;
};

// The process-wide real runtime; throws BackendError when CUDA is unavailable here.
Runtime& cuda_runtime();
// A process-wide emulator runtime (host compiler + thread emulation; see emu_runtime.cpp).
Runtime& emu_runtime();

}  // namespace thea::cuda
