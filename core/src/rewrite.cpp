#include "thea/rewrite.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <sstream>
#include <unordered_map>

#include "thea/error.hpp"
#include "thea/op.hpp"

namespace thea {

namespace {

std::vector<std::string> split_csv(const char* s) {
  std::vector<std::string> out;
  if (!s) return out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}

// Common subexpression elimination: equal ops on identical inputs become one node,
// equal small constants become one constant.
bool merge_pass(FunctionGraph& fg) {
  bool changed = false;
  std::unordered_map<std::string, NodePtr> seen;
  for (const NodePtr& n : fg.toposort()) {
    std::string key;
    if (n->kind == NodeKind::Constant) {
      if (n->value.numel() > 64) continue;
      key = std::string("c:") + dtype_name(n->value.dtype()) + shape_str(n->value.shape()) + ":";
      key.append(static_cast<const char*>(n->value.raw_data()),
                 n->value.numel() * dtype_size(n->value.dtype()));
    } else if (n->kind == NodeKind::Apply) {
      key = "a:" + n->op->str();
      for (const NodePtr& in : n->inputs)
        key += ":" + std::to_string(reinterpret_cast<std::uintptr_t>(in.get()));
    } else {
      continue;
    }
    auto [it, inserted] = seen.emplace(key, n);
    if (!inserted && it->second != n && it->second->type.dtype == n->type.dtype &&
        it->second->type.ndim() == n->type.ndim()) {
      fg.replace(n, it->second, "merge");
      changed = true;
    }
  }
  return changed;
}

constexpr std::int64_t kMaxFoldElements = 1 << 16;

NodePtr constant_fold(FunctionGraph&, const NodePtr& n) {
  if (n->kind != NodeKind::Apply || n->inputs.empty()) return nullptr;
  for (const NodePtr& in : n->inputs)
    if (in->kind != NodeKind::Constant) return nullptr;
  std::vector<Tensor> values;
  for (const NodePtr& in : n->inputs) values.push_back(in->value);
  Tensor out = n->op->perform(values);
  if (out.numel() > kMaxFoldElements) return nullptr;
  NodePtr c = make_constant(out.contiguous().clone());
  c->site = n->site;
  // Keep the static type of the original (a folded value must not change its broadcasting).
  if (c->type.ndim() != n->type.ndim()) return nullptr;
  return c;
}

void verify_graph(const FunctionGraph& fg, const std::string& after) {
  for (const NodePtr& n : fg.toposort()) {
    if (n->kind != NodeKind::Apply) continue;
    TensorType t = n->op->infer_type(n->inputs);
    if (t.dtype != n->type.dtype || t.ndim() != n->type.ndim())
      throw Error("THEA_DEBUG=verify: after pass '" + after + "', node " + n->describe() +
                  " has type " + n->type.str() + " but its op now infers " + t.str());
  }
}

}  // namespace

bool debug_enabled(const std::string& flag) {
  static const std::vector<std::string> flags = split_csv(std::getenv("THEA_DEBUG"));
  return std::find(flags.begin(), flags.end(), flag) != flags.end() ||
         std::find(flags.begin(), flags.end(), "all") != flags.end();
}

RewriteRegistry& RewriteRegistry::instance() {
  static RewriteRegistry* registry = [] {
    auto* r = new RewriteRegistry;
    register_core_rewrites(*r);
    register_op_rewrites(*r);
    return r;
  }();
  return *registry;
}

void RewriteRegistry::add(RewritePass pass) {
  if (static_cast<bool>(pass.local) == static_cast<bool>(pass.global))
    throw Error("rewrite pass '" + pass.name + "' must set exactly one of local / global");
  auto it = std::find_if(passes_.begin(), passes_.end(),
                         [&](const RewritePass& p) { return p.name == pass.name; });
  if (it != passes_.end())
    *it = std::move(pass);
  else
    passes_.push_back(std::move(pass));
  std::stable_sort(passes_.begin(), passes_.end(),
                   [](const RewritePass& a, const RewritePass& b) { return a.order < b.order; });
}

std::vector<const RewritePass*> RewriteRegistry::passes() const {
  std::vector<const RewritePass*> out;
  for (const RewritePass& p : passes_) out.push_back(&p);
  return out;
}

std::vector<std::string> RewriteRegistry::names() const {
  std::vector<std::string> out;
  for (const RewritePass& p : passes_) out.push_back(p.name);
  return out;
}

void register_core_rewrites(RewriteRegistry& registry) {
  registry.add(
      {.name = "merge", .tags = {"merge"}, .order = 0, .local = nullptr, .global = merge_pass});
  registry.add({.name = "constant_folding",
                .tags = {"canonicalize"},
                .order = 1,
                .local = constant_fold,
                .global = nullptr});
  // Merge again once the later passes have created new duplicates.
  registry.add({.name = "merge_late",
                .tags = {"merge"},
                .order = 45,
                .local = nullptr,
                .global = merge_pass});
}

std::vector<PassStat> run_rewrites(FunctionGraph& fg, const std::vector<std::string>& exclude) {
  std::vector<std::string> skip = exclude;
  for (auto& s : split_csv(std::getenv("THEA_EXCLUDE"))) skip.push_back(s);
  auto excluded = [&](const RewritePass& p) {
    for (const std::string& s : skip) {
      if (s == p.name) return true;
      if (std::find(p.tags.begin(), p.tags.end(), s) != p.tags.end()) return true;
    }
    return false;
  };
  const bool verify = debug_enabled("verify");
  std::vector<PassStat> stats;
  for (const RewritePass* pass : RewriteRegistry::instance().passes()) {
    if (excluded(*pass)) continue;
    PassStat st{.name = pass->name};
    std::size_t before = fg.replacements();
    auto t0 = std::chrono::steady_clock::now();
    bool changed = true;
    while (changed && st.iterations < pass->max_iterations) {
      ++st.iterations;
      changed = false;
      if (pass->global) {
        changed = pass->global(fg);
      } else {
        for (const NodePtr& n : fg.toposort()) {
          NodePtr repl = pass->local(fg, n);
          if (repl && repl != n) {
            fg.replace(n, repl, pass->name);
            changed = true;
          }
        }
      }
    }
    st.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    st.replacements = fg.replacements() - before;
    if (verify) verify_graph(fg, pass->name);
    if (debug_enabled("passes"))
      std::fprintf(stderr, "[thea pass] %-28s %3d iter %4zu repl %8.3f ms\n", st.name.c_str(),
                   st.iterations, st.replacements, st.seconds * 1e3);
    stats.push_back(st);
  }
  return stats;
}

}  // namespace thea
