// Pattern-matching helpers shared by the op rewrites (canonicalize, stabilize, specialize,
// expand). Internal to ops/rewrites: not installed, not part of the API.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <unordered_set>
#include <vector>

#include "thea/error.hpp"
#include "thea/fgraph.hpp"
#include "thea/op.hpp"
#include "thea/ops/ops.hpp"
#include "thea/rewrite.hpp"

namespace thea::rw {

// The node's op as T, or nullptr (also for leaves).
template <class T>
const T* op_as(const NodePtr& n) {
  if (!n || n->kind != NodeKind::Apply) return nullptr;
  return dynamic_cast<const T*>(n->op.get());
}

// Whether n applies the elementwise scalar op `op`.
inline bool is_elemwise(const NodePtr& n, ScalarOp op) {
  const Elemwise* e = op_as<Elemwise>(n);
  return e && e->scalar_op() == op;
}

// The value every element of a constant holds, when they all hold the same one.
inline std::optional<double> uniform_constant(const NodePtr& n) {
  if (!n || n->kind != NodeKind::Constant || n->value.numel() == 0) return std::nullopt;
  const std::vector<double> v = n->value.to_vector();
  for (double x : v)
    if (!(x == v[0])) return std::nullopt;  // also rejects NaN
  return v[0];
}

inline bool is_constant_value(const NodePtr& n, double value) {
  const std::optional<double> v = uniform_constant(n);
  return v && *v == value;
}

// A replacement may stand in for `original` when the dtype and rank agree, no known size
// contradicts and the broadcastable (static size 1) axes are the same: consumers'
// inferred types and broadcasting then stay valid.
inline bool fits_type(const TensorType& replacement, const TensorType& original) {
  if (replacement.dtype != original.dtype || replacement.ndim() != original.ndim()) return false;
  for (int d = 0; d < original.ndim(); ++d) {
    const std::int64_t r = replacement.shape[d], o = original.shape[d];
    if ((r == 1) != (o == 1)) return false;
    if (r != kUnknownDim && o != kUnknownDim && r != o) return false;
  }
  return true;
}

// Replacements are built with the API functions (which run type inference); this gives
// every node created since `first_id` the site of the node being replaced, so errors and
// debugprint still point at the user's line.
inline NodePtr stamp_site(const NodePtr& root, const SourceSite& site, std::uint64_t first_id) {
  std::vector<Node*> todo{root.get()};
  std::unordered_set<const Node*> seen;
  while (!todo.empty()) {
    Node* m = todo.back();
    todo.pop_back();
    if (m->id <= first_id || !seen.insert(m).second) continue;
    m->site = site;
    for (const NodePtr& in : m->inputs) todo.push_back(in.get());
  }
  return root;
}

// Builds a replacement for `old` with `build()` and returns it when its type fits
// (nullptr otherwise, leaving the graph as it was: unused new nodes are just dropped).
// A rewrite must never break a graph that compiles, so a build that fails type inference
// (an unforeseen dtype combination) is treated as "no match".
template <class Build>
NodePtr build_replacement(const NodePtr& old, Build&& build) {
  const std::uint64_t first_id = next_node_id();
  NodePtr repl;
  try {
    repl = build();
  } catch (const Error&) {
    return nullptr;
  }
  if (!repl || !fits_type(repl->type, old->type)) return nullptr;
  return stamp_site(repl, old->site, first_id);
}

// Each file's passes, added from register_op_rewrites (register.cpp).
void register_canonicalize_rewrites(RewriteRegistry& registry);
void register_stabilize_rewrites(RewriteRegistry& registry);
void register_specialize_rewrites(RewriteRegistry& registry);

}  // namespace thea::rw
