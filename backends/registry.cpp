#include <cstdlib>
#include <map>
#include <mutex>

#include "thea/backend.hpp"
#include "thea/error.hpp"

namespace thea {

std::shared_ptr<Backend> make_reference_backend();
std::shared_ptr<Backend> make_cpu_backend();
std::shared_ptr<Backend> make_cuda_backend();  // backends/cuda, or backends/no_cuda stubs

namespace {

struct Registry {
  std::mutex mutex;
  std::map<std::string, BackendFactory> factories;
  std::map<std::string, std::shared_ptr<Backend>> instances;
};

Registry& registry() {
  static Registry* r = [] {
    auto* reg = new Registry;
    reg->factories["reference"] = &make_reference_backend;
    reg->factories["cuda"] = &make_cuda_backend;
    reg->factories["cpu"] = &make_cpu_backend;
    // Further built-in backends register here (cpu, cuda).
    return reg;
  }();
  return *r;
}

}  // namespace

void register_backend(const std::string& name, BackendFactory factory) {
  Registry& r = registry();
  std::lock_guard lock(r.mutex);
  r.factories[name] = factory;
  r.instances.erase(name);
}

std::vector<std::string> backend_names() {
  Registry& r = registry();
  std::lock_guard lock(r.mutex);
  std::vector<std::string> names;
  for (const auto& [name, factory] : r.factories) names.push_back(name);
  return names;
}

std::shared_ptr<Backend> get_backend(const std::string& name) {
  Registry& r = registry();
  std::lock_guard lock(r.mutex);
  auto it = r.instances.find(name);
  if (it != r.instances.end()) return it->second;
  auto f = r.factories.find(name);
  if (f == r.factories.end()) {
    std::string known;
    for (const auto& [n, unused] : r.factories) known += (known.empty() ? "" : ", ") + n;
    throw BackendError("unknown backend '" + name + "' (built backends: " + known + ")");
  }
  std::shared_ptr<Backend> backend = f->second();
  std::string why = backend->unavailable_reason();
  if (!why.empty()) throw BackendError("backend '" + name + "' is unavailable: " + why);
  r.instances[name] = backend;
  return backend;
}

std::string default_backend_name() {
  if (const char* env = std::getenv("THEA_BACKEND"); env && *env) return env;
  Registry& r = registry();
  std::lock_guard lock(r.mutex);
  if (r.factories.count("cpu")) {
    std::shared_ptr<Backend> cpu = r.factories["cpu"]();
    if (cpu->unavailable_reason().empty()) return "cpu";
  }
  return "reference";
}

}  // namespace thea
