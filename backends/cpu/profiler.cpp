#include "profiler.hpp"

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "thread_pool.hpp"

namespace thea::cpu {
namespace {

struct Registry {
  std::mutex mutex;
  std::vector<std::shared_ptr<FunctionProfile>> profiles;
  ~Registry() {
    // Printed when the process exits normally (static destruction), like Theano's profiler.
    std::string report = profile_report_locked();
    if (!report.empty()) std::fputs(report.c_str(), stderr);
  }
  std::string profile_report_locked();
};

Registry& registry() {
  static Registry r;
  return r;
}

std::string fmt_line(const char* f, ...) __attribute__((format(printf, 1, 2)));
std::string fmt_line(const char* f, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, f);
  std::vsnprintf(buf, sizeof buf, f, ap);
  va_end(ap);
  return buf;
}

std::string Registry::profile_report_locked() {
  std::string out;
  if (!profiles.empty()) {
    ThreadPool& pool = ThreadPool::global();
    out += fmt_line(
        "thea profile: thread pool of %d: %llu launches shared with helpers, %llu run "
        "alone after helpers stalled\n",
        pool.threads(), static_cast<unsigned long long>(pool.helped_launches()),
        static_cast<unsigned long long>(pool.solo_launches()));
  }
  for (const auto& p : profiles) {
    if (!p) continue;
    double ktotal = 0;
    for (const KernelStats& k : p->kernels) ktotal += k.seconds;
    out += fmt_line(
        "thea profile: function %s: compile %.3f s (%s), %d thread%s, %llu calls, "
        "%.3f ms in run() (%.1f us/call; kernels %.3f ms, overhead %.1f us/call)\n",
        p->name.c_str(), p->compile_seconds, p->cache_hit ? "kernel cache hit" : "compiled",
        p->threads, p->threads == 1 ? "" : "s", static_cast<unsigned long long>(p->calls),
        p->run_seconds * 1e3, p->calls ? p->run_seconds * 1e6 / static_cast<double>(p->calls) : 0.0,
        ktotal * 1e3,
        p->calls ? (p->run_seconds - ktotal) * 1e6 / static_cast<double>(p->calls) : 0.0);
    if (p->kernels.empty()) continue;
    out += fmt_line("  %-12s %10s %12s %7s %12s  %s\n", "kernel", "calls", "time (ms)", "share",
                    "us/call", "ops");
    for (const KernelStats& k : p->kernels) {
      out +=
          fmt_line("  %-12s %10llu %12.3f %6.1f%% %12.2f  %s\n", k.name.c_str(),
                   static_cast<unsigned long long>(k.calls), k.seconds * 1e3,
                   ktotal > 0 ? 100.0 * k.seconds / ktotal : 0.0,
                   k.calls ? k.seconds * 1e6 / static_cast<double>(k.calls) : 0.0, k.what.c_str());
    }
  }
  return out;
}

}  // namespace

bool profiling_enabled() {
  static const bool on = [] {
    const char* v = std::getenv("THEA_PROFILE");
    return v && *v && std::strcmp(v, "0") != 0;
  }();
  return on;
}

std::shared_ptr<FunctionProfile> register_profile(std::string name) {
  auto p = std::make_shared<FunctionProfile>();
  p->name = std::move(name);
  Registry& r = registry();
  std::lock_guard lock(r.mutex);
  r.profiles.push_back(p);
  return p;
}

std::string profile_report() {
  Registry& r = registry();
  std::lock_guard lock(r.mutex);
  return r.profile_report_locked();
}

}  // namespace thea::cpu
