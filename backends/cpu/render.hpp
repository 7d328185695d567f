// Renders a schedule as one C++ translation unit: every loop kernel and every generated
// GEMM of a function, after the shared scalar preamble and the GEMM micro-kernels.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "thea/memplan.hpp"
#include "thea/schedule.hpp"

namespace thea::cpu {

// How the Program launches a kernel.
enum class Launch : std::uint8_t {
  Loop,      // fn(P, D, S, part, nparts) over the outer iterations, then finish(P, D, S, nparts)
  GemmRows,  // prep(P, D, S) once, then fn(P, D, S, part, nparts) over rows of C
  GemmTN,    // prep(P, D, S) once, then fn(P, D, S, part, nparts) over lane-chunks of C's rows
  Blas,      // the Program calls OpenBLAS itself (prep still copies C_in when not in place)
  Host,      // the Program runs the op's perform()
  Chain,     // a sched::RowChain: prep, fn over parts of the rows, combine over ranges, finish
  Absorbed,  // run inside the launch of the chain that contains it
};

struct KernelCode {
  Launch launch = Launch::Host;
  std::string fn, finish, prep;    // exported symbols; empty when absent
  std::string combine;             // Chain that reduces: sums the parts' products (CombineFn)
  int finals = 0;                  // Loop: final reductions (8-byte partials per part each)
  std::int64_t scratch_bytes = 0;  // Gemm: packed operand scratch
  int lanes = 1;                   // GemmTN: chunk granularity of the parallel split
  // Chain: the scratch is [head gemm's packed operand | loop partials | per-part products];
  // the generated code derives the offsets from nparts the same way (chain_scratch_bytes).
  bool chain_reduces = false;         // the chain ends with the row-reducing product
  std::int64_t chain_part_bytes = 0;  // bytes of one part's partial product
  // D[chain_prefetch_slot]: rows of A's array after A (prefetched as the next minibatch).
  int chain_prefetch_slot = -1;
  // The shared variable (buffer) the chain keeps transposed between calls, or -1: P[it] is
  // then the N x K copy (the Program's TransposedCopy mirror), read without packing and
  // updated in place; the row-major value is rebuilt only when something else reads it.
  int chain_transposed = -1;
};

// The backend's THEA_CPU_* switches (chains, prefetch, transposed weights): set to 0 in the
// environment turns the feature off, for comparisons and debugging.
bool env_switched_off(const char* name);

// Bytes of a chain's scratch for `nparts` parts (layout above, each region 64-byte aligned).
std::int64_t chain_scratch_bytes(const KernelCode& chain, int nparts);

struct Rendered {
  std::string source;               // empty when no kernel needs generated code
  std::vector<KernelCode> kernels;  // one per schedule kernel
};

// Signature of generated kernels.
using PartFn = void (*)(void* const* P, const std::int64_t* D, void* S, int part, int nparts);
using FinishFn = void (*)(void* const* P, const std::int64_t* D, void* S, int nparts);
using PrepFn = void (*)(void* const* P, const std::int64_t* D, void* S);
// A chain's combine: range `part` of `nsplit` of the sum of its `nparts` partial products.
using CombineFn = void (*)(void* const* P, const std::int64_t* D, void* S, int part, int nsplit,
                           int nparts);

// `vector_bytes`: SIMD width the micro-kernels are built for (16/32/64).
Rendered render(const sched::Schedule& s, const sched::MemPlan& plan, int vector_bytes);

}  // namespace thea::cpu
