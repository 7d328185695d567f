// The "cuda" backend of a build without CUDA (-DTHEA_CUDA=OFF, or no toolkit found): it
// is listed, so asking for it explains why it cannot run instead of "unknown backend".
#include <memory>
#include <string>

#include "thea/backend.hpp"
#include "thea/error.hpp"

namespace thea {
namespace {

const char* const kReason =
    "this thea was built without CUDA support (configured with -DTHEA_CUDA=OFF, or no CUDA "
    "toolkit was found); reconfigure with the CUDA toolkit installed and -DTHEA_CUDA=ON";

class NoCudaBackend : public Backend {
 public:
  std::string name() const override { return "cuda"; }
  std::string unavailable_reason() const override { return kReason; }
  bool supports(const FunctionGraph&, std::string* why) const override {
    if (why) *why = kReason;
    return false;
  }
  std::unique_ptr<Program> compile(const FunctionGraph&) override {
    throw BackendError(std::string("backend 'cuda' is unavailable: ") + kReason);
  }
};

}  // namespace

std::shared_ptr<Backend> make_cuda_backend() { return std::make_shared<NoCudaBackend>(); }

}  // namespace thea
