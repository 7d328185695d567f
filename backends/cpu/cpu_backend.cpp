// The cpu backend: rewrites have run; here the graph is scheduled into fused kernels, the
// memory plan decides buffers and in-place updates, the kernels are rendered as one C++
// translation unit, compiled (or found in the on-disk cache) and loaded.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <mutex>

#include "compiler.hpp"
#include "preamble.hpp"
#include "program.hpp"
#include "render.hpp"
#include "thea/backend.hpp"
#include "thea/error.hpp"
#include "thea/memplan.hpp"
#include "thea/rewrite.hpp"
#include "thea/schedule.hpp"

#if defined(THEA_HAVE_OPENBLAS)
#include <cblas.h>
#endif

namespace thea {

namespace {

bool env_flag(const char* name) {
  const char* v = std::getenv(name);
  return v && *v && std::string(v) != "0";
}

class CpuBackend : public Backend {
 public:
  std::string name() const override { return "cpu"; }

  std::string unavailable_reason() const override {
    std::string why = cpu::host_compiler().unavailable;
    if (why.empty() && !cpu::scalar_preamble())
      why = "the library was built without third_party/CpuBackend.cmake (kernel preamble)";
    if (!why.empty()) {
      static std::once_flag warned;
      std::call_once(warned, [&] {
        std::fprintf(stderr,
                     "thea: the cpu backend is unavailable (%s); functions run on the reference "
                     "backend\n",
                     why.c_str());
      });
    }
    return why;
  }

  bool supports(const FunctionGraph&, std::string*) const override {
    // Every op runs: the ones without generated code run their perform() as a host step.
    return true;
  }

  std::unique_ptr<Program> compile(const FunctionGraph& fg) override {
    auto t0 = std::chrono::steady_clock::now();
    static std::once_flag blas_once;
#if defined(THEA_HAVE_OPENBLAS)
    // thea splits products across its own pool; OpenBLAS threads on top would oversubscribe.
    std::call_once(blas_once, [] { openblas_set_num_threads(1); });
#else
    (void)blas_once;
#endif
    sched::ScheduleOptions opts;
    opts.fuse = !env_flag("THEA_CPU_NOFUSE");
    sched::Schedule s = sched::make_schedule(fg, opts);
    sched::MemPlan plan = sched::make_memplan(s);
    const cpu::CompilerInfo& cc = cpu::host_compiler();
    cpu::Rendered r = cpu::render(s, plan, cc.vector_bytes);
    if (debug_enabled("schedule"))
      std::fprintf(stderr, "[thea cpu] schedule:\n%s[thea cpu] memory plan:\n%s",
                   s.describe().c_str(), plan.describe(s).c_str());
    if (debug_enabled("kernels") && !r.source.empty())
      std::fprintf(stderr, "[thea cpu] generated kernels:\n%s\n", r.source.c_str());
    std::shared_ptr<cpu::SharedLibrary> lib;
    cpu::CompileInfo info;
    if (!r.source.empty()) {
      static cpu::KernelCache* cache = new cpu::KernelCache();
      cpu::BuildResult built = cache->load_or_build(r.source, cc);
      lib = built.library;
      info.cache_hit = built.cache_hit;
      info.library_path = built.path;
    }
    info.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return std::make_unique<cpu::CpuProgram>(fg, std::move(s), std::move(plan), std::move(r),
                                             std::move(lib), info);
  }
};

}  // namespace

std::shared_ptr<Backend> make_cpu_backend() { return std::make_shared<CpuBackend>(); }

}  // namespace thea
