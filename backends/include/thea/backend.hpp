// The backend interface. A backend turns an optimized FunctionGraph into a Program;
// everything it cannot run is refused at compile time (supports), never mid-run.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "thea/fgraph.hpp"

namespace thea {

// A compiled function body. run() computes all outputs and update values from the
// values before the call, then writes the updates into the shared variables.
class Program {
 public:
  virtual ~Program() = default;
  virtual std::vector<Tensor> run(const std::vector<Tensor>& inputs) = 0;
  // Number of kernels/library calls one run launches (for structural tests and profiling).
  virtual std::size_t kernel_count() const = 0;
  // Human-readable listing of the schedule (debugprint of a compiled function).
  virtual std::string describe() const = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  // Why this backend cannot run here (no GPU, no compiler), or empty when it can.
  virtual std::string unavailable_reason() const { return {}; }
  // Whether every node of fg can be lowered; the message says which cannot and why.
  virtual bool supports(const FunctionGraph& fg, std::string* why) const = 0;
  virtual std::unique_ptr<Program> compile(const FunctionGraph& fg) = 0;
};

// Backends by name: "reference", "cpu", "cuda". Throws BackendError for unknown names
// or one that cannot run here, saying why.
std::shared_ptr<Backend> get_backend(const std::string& name);
std::vector<std::string> backend_names();  // all built backends, available or not
// THEA_BACKEND, else the best available ("cpu" once it exists, else "reference").
std::string default_backend_name();

using BackendFactory = std::shared_ptr<Backend> (*)();
// Registered explicitly from get_backend's first call (see backends/registry.cpp).
void register_backend(const std::string& name, BackendFactory factory);

}  // namespace thea
