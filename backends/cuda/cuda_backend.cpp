// The "cuda" backend: fused NVRTC kernels, cuBLAS gemm, device-resident shared variables,
// CUDA graphs (see lower.hpp, codegen.hpp, program.hpp).
#include "cuda/cuda_backend.hpp"

#include <memory>
#include <string>

#include "cuda/device.hpp"
#include "cuda/lower.hpp"
#include "cuda/program.hpp"
#include "cuda/runtime.hpp"
#include "thea/error.hpp"

namespace thea {
namespace {

class CudaBackend : public Backend {
 public:
  explicit CudaBackend(bool emulated) : emulated_(emulated) {}
  std::string name() const override { return emulated_ ? "cuda_emu" : "cuda"; }
  std::string unavailable_reason() const override {
    return emulated_ ? std::string() : cuda::unavailable_reason();
  }
  bool supports(const FunctionGraph& fg, std::string* why) const override {
    std::string reason = cuda::unsupported_reason(fg);
    if (why) *why = reason;
    return reason.empty();
  }
  std::unique_ptr<Program> compile(const FunctionGraph& fg) override {
    cuda::Runtime& rt = emulated_ ? cuda::emu_runtime() : cuda::cuda_runtime();
    return std::make_unique<cuda::CudaProgram>(rt, fg, cuda::lower(fg));
  }

 private:
  bool emulated_;
};

}  // namespace

std::shared_ptr<Backend> make_cuda_backend() { return std::make_shared<CudaBackend>(false); }
std::shared_ptr<Backend> make_cuda_emu_backend() { return std::make_shared<CudaBackend>(true); }

}  // namespace thea
