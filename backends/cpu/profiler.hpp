// THEA_PROFILE=1: per-kernel calls, time and share for every compiled cpu function, plus its
// compile time, printed to stderr at exit (Theano's profile=True, in one table per function).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace thea::cpu {

struct KernelStats {
  std::string name;  // "k0_gemm"
  std::string what;  // the ops it computes
  std::uint64_t calls = 0;
  double seconds = 0;
};

struct FunctionProfile {
  std::string name;
  double compile_seconds = 0;
  bool cache_hit = false;
  int threads = 1;
  std::uint64_t calls = 0;
  double run_seconds = 0;  // whole Program::run, overhead included
  std::vector<KernelStats> kernels;
};

// Whether THEA_PROFILE is set (read once).
bool profiling_enabled();

// Profiles register here and are printed at exit; the registry keeps them alive.
std::shared_ptr<FunctionProfile> register_profile(std::string name);

// The report for all registered profiles (also what is printed at exit).
std::string profile_report();

}  // namespace thea::cpu
