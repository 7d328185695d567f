#include "cuda/lower.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <initializer_list>
#include <map>
#include <set>
#include <sstream>

#include "cuda/codegen.hpp"
#include "cuda/dnn.hpp"
#include "thea/error.hpp"
#include "thea/memplan.hpp"
#include "thea/op.hpp"
#include "thea/ops/fused.hpp"
#include "thea/ops/ops.hpp"
#include "thea/rewrite.hpp"

namespace thea::cuda {
namespace {

template <class T>
const T* op_as(const NodePtr& n) {
  return n->kind == NodeKind::Apply ? dynamic_cast<const T*>(n->op.get()) : nullptr;
}

bool is_scalar_like(const TensorType& t) {
  for (auto d : t.shape)
    if (d != 1) return false;
  return true;
}

// Same rank and the same broadcastable (static size 1) axes: one index space.
bool same_pattern(const TensorType& a, const TensorType& b) {
  if (a.ndim() != b.ndim()) return false;
  for (int d = 0; d < a.ndim(); ++d)
    if ((a.shape[d] == 1) != (b.shape[d] == 1)) return false;
  return true;
}

bool fusable_consumer(const NodePtr& c) {
  return op_as<Elemwise>(c) || op_as<Reduce>(c) || op_as<Softmax>(c) || op_as<ArgReduce>(c);
}

class Lowering {
 public:
  explicit Lowering(const FunctionGraph& fg)
      : fg_(fg), skinny_(skinny_gemm_enabled()), from_schedule_(schedule_lowering_enabled()) {}

  Plan run() {
    create_values();
    assign_places();
    if (from_schedule_) {
      groups_from_schedule();
    } else {
      find_gemm_epilogues();
      find_row_groups();
      decide_inline();
    }
    plan_updates_and_outputs();
    build_steps();
    assign_slots();
    render_kernels(plan_);
    return std::move(plan_);
  }

 private:
  int add_value(const NodePtr& n, Place place) {
    int idx = static_cast<int>(plan_.values.size());
    Value v;
    v.node = n;
    v.place = place;
    plan_.values.push_back(std::move(v));
    return idx;
  }
  Value& val(int i) { return plan_.values[static_cast<std::size_t>(i)]; }
  int idx(const NodePtr& n) const { return plan_.index.at(n.get()); }

  void create_values() {
    order_ = fg_.toposort();
    for (const NodePtr& n : order_) plan_.index[n.get()] = add_value(n, Place::Buffer);
    for (const UpdatePair& u : fg_.updates())
      if (!plan_.index.count(u.target.get())) {
        plan_.index[u.target.get()] = add_value(u.target, Place::Shared);
        order_.insert(order_.begin(), u.target);
      }
    for (const NodePtr& n : order_) {
      if (n->kind != NodeKind::Apply) continue;
      int me = idx(n);
      for (const NodePtr& in : n->inputs) {
        auto& users = val(idx(in)).users;
        if (std::find(users.begin(), users.end(), me) == users.end()) users.push_back(me);
      }
    }
    for (const NodePtr& in : fg_.inputs()) {
      auto it = plan_.index.find(in.get());
      plan_.inputs.push_back(it == plan_.index.end() ? -1 : it->second);
    }
  }

  bool is_host(const NodePtr& n) const {
    return plan_.values[static_cast<std::size_t>(plan_.index.at(n.get()))].place == Place::Host;
  }

  void assign_places() {
    for (const NodePtr& n : order_) {
      Value& v = val(idx(n));
      switch (n->kind) {
        case NodeKind::Input:
          v.place = n->type.ndim() == 0 ? Place::Host : Place::Input;
          break;
        case NodeKind::Constant:
          // Scalars (also (1,)-shaped ones) travel in the argument block, not in buffers.
          v.place = is_scalar_like(n->type) ? Place::Host : Place::Constant;
          break;
        case NodeKind::Shared:
          v.place = Place::Shared;
          break;
        case NodeKind::Apply: {
          bool all_host = std::all_of(n->inputs.begin(), n->inputs.end(),
                                      [&](const NodePtr& i) { return is_host(i); });
          const OpTraits tr = n->op->traits();
          if (tr.shape_only) {
            v.place = Place::Host;
          } else if (all_host && (tr.elementwise || tr.view) && is_scalar_like(n->type)) {
            v.place = Place::Host;  // scalar index arithmetic: cheaper on the host
          } else if (op_as<DimShuffle>(n) || op_as<Subtensor>(n) || op_as<ConcatenateGrad>(n)) {
            v.place = is_host(n->inputs[0]) ? Place::Buffer : Place::View;
            if (v.place == Place::View) v.src = idx(n->inputs[0]);
          } else if (op_as<Reshape>(n) && !is_host(n->inputs[0])) {
            // A view of the input made contiguous (copied only when it is not).
            int c = add_value(n->inputs[0], Place::Contig);
            val(c).src = idx(n->inputs[0]);
            val(idx(n)).place = Place::View;
            val(idx(n)).src = c;
          } else {
            v.place = Place::Buffer;
          }
          break;
        }
      }
      if (val(idx(n)).place == Place::Host) plan_.host_order.push_back(idx(n));
    }
    // Subtensor views whose bounds change between calls have a dynamic offset.
    for (const NodePtr& n : order_) {
      if (const auto* st = op_as<Subtensor>(n)) {
        if (val(idx(n)).place != Place::View) continue;
        for (const IndexSpec& e : st->index())
          for (const auto* b : {&e.start, &e.stop, &e.step})
            if (b->kind == IndexSpec::Bound::Kind::Input) val(idx(n)).dynamic = true;
      }
    }
    // Dynamic pointers propagate through views and Contig values built on them.
    for (std::size_t i = 0; i < plan_.values.size(); ++i) propagate_dynamic(static_cast<int>(i));
  }

  bool propagate_dynamic(int i) {
    Value& v = val(i);
    if (v.dynamic) return true;
    if ((v.place == Place::View || v.place == Place::Contig) && v.src >= 0)
      v.dynamic = propagate_dynamic(v.src);
    return v.dynamic;
  }

  // The SGD pattern: C ± [s *] dot(A, B) becomes one gemm with beta = 1 (in place when C
  // is the shared variable being updated).
  void find_gemm_epilogues() {
    for (const NodePtr& e : order_) {
      const auto* ew = op_as<Elemwise>(e);
      if (!ew || val(idx(e)).place != Place::Buffer || !is_float(e->type.dtype)) continue;
      ScalarOp sop = ew->scalar_op();
      if (sop != ScalarOp::Add && sop != ScalarOp::Sub) continue;
      for (int side = 0; side < 2; ++side) {
        if (sop == ScalarOp::Sub && side == 0) continue;  // D - C is not this pattern
        const NodePtr& term = e->inputs[static_cast<std::size_t>(side)];
        const NodePtr& c = e->inputs[static_cast<std::size_t>(1 - side)];
        NodePtr dot = term, scale, mul;
        if (const auto* m = op_as<Elemwise>(term); m && m->scalar_op() == ScalarOp::Mul) {
          for (int k = 0; k < 2; ++k) {
            const NodePtr& a = term->inputs[static_cast<std::size_t>(k)];
            const NodePtr& b = term->inputs[static_cast<std::size_t>(1 - k)];
            if (op_as<Dot>(a) && is_host(b) && b->type.ndim() == 0) {
              dot = a;
              scale = b;
              mul = term;
            }
          }
          if (!mul) continue;
        }
        if (!op_as<Dot>(dot)) continue;
        if (dot->type.ndim() != 2 || e->type.ndim() != 2 || c->type != e->type) continue;
        // A product broadcast over the sum's rows or columns (w - dot(row, w)) is not
        // C ± A·B: the gemm would read rows of A that do not exist.
        if (!same_pattern(dot->type, e->type)) continue;
        if (dot->type.dtype != e->type.dtype || dot->inputs[0]->type.dtype != e->type.dtype ||
            dot->inputs[1]->type.dtype != e->type.dtype)
          continue;
        if (is_host(c)) continue;
        if (val(idx(dot)).users.size() != 1 || val(idx(dot)).is_output) continue;
        if (mul && (val(idx(mul)).users.size() != 1)) continue;
        if (std::find(fg_.outputs().begin(), fg_.outputs().end(), dot) != fg_.outputs().end())
          continue;
        if (mul &&
            std::find(fg_.outputs().begin(), fg_.outputs().end(), mul) != fg_.outputs().end())
          continue;
        if (is_update_value(dot) || (mul && is_update_value(mul))) continue;
        Epilogue ep;
        ep.dot = dot;
        ep.c = c;
        ep.scale = scale;
        ep.alpha = sop == ScalarOp::Sub ? -1.0 : 1.0;
        epilogues_[e.get()] = ep;
        val(idx(dot)).place = Place::Inline;  // absorbed: computed by the gemm
        if (mul) val(idx(mul)).place = Place::Inline;
        break;
      }
    }
  }

  bool is_update_value(const NodePtr& n) const {
    for (const UpdatePair& u : fg_.updates())
      if (u.value == n) return true;
    return false;
  }
  bool is_output(const NodePtr& n) const {
    return std::find(fg_.outputs().begin(), fg_.outputs().end(), n) != fg_.outputs().end();
  }

  // ---- row groups ----------------------------------------------------------------------
  // Row-wise subgraphs over matrices (N, C): elementwise ops with per-row (N, 1) and
  // per-column (1, C) broadcasts, reductions over the last axis, softmax, cross-entropy and
  // their gradients. One kernel runs a whole group: a thread block sweeps each row a few
  // times, with an all-reduce between sweeps (the tutorial's step becomes gemm, one row
  // kernel, the mean, gemm).
  enum class RowClass { None, Elem, Row, Col, Scalar };

  static RowClass row_class(const TensorType& t) {
    if (is_scalar_like(t)) return RowClass::Scalar;
    if (t.ndim() == 2) {
      if (t.shape[0] != 1 && t.shape[1] != 1) return RowClass::Elem;
      if (t.shape[1] == 1) return RowClass::Row;
      return RowClass::Col;
    }
    if (t.ndim() == 1) return RowClass::Row;  // as a node value; as an elementwise input: Col
    return RowClass::None;
  }

  // Whether n can be computed inside a row group, and what its value is (Elem or Row).
  RowClass group_candidate(const NodePtr& n) const {
    if (n->kind != NodeKind::Apply) return RowClass::None;
    const Value& v = plan_.values[static_cast<std::size_t>(plan_.index.at(n.get()))];
    // Per-row dimshuffles are views elsewhere; inside a group they are register copies.
    const bool view_ok = v.place == Place::View && op_as<DimShuffle>(n) && !v.dynamic;
    if ((v.place != Place::Buffer && !view_ok) || epilogues_.count(n.get())) return RowClass::None;
    const RowClass out = row_class(n->type);
    auto cls = [&](int k) { return row_class(n->inputs[static_cast<std::size_t>(k)]->type); };
    auto rank = [&](int k) { return n->inputs[static_cast<std::size_t>(k)]->type.ndim(); };
    if (op_as<Elemwise>(n)) {
      if (out == RowClass::Elem) {
        for (std::size_t k = 0; k < n->inputs.size(); ++k) {
          RowClass c = cls(static_cast<int>(k));
          if (c == RowClass::Elem && !same_pattern(n->inputs[k]->type, n->type))
            return RowClass::None;
          if (c == RowClass::None) return RowClass::None;
          // A vector here broadcasts along the rows (a column operand): it must be loaded,
          // so it cannot be a per-row value computed in the same group.
          if (rank(static_cast<int>(k)) == 1 && n->inputs[k]->kind == NodeKind::Apply &&
              !is_host(n->inputs[k]))
            return RowClass::None;
        }
        return RowClass::Elem;
      }
      if (out == RowClass::Row) {
        for (std::size_t k = 0; k < n->inputs.size(); ++k) {
          RowClass c = cls(static_cast<int>(k));
          if (c == RowClass::Scalar) continue;
          if (c != RowClass::Row || rank(static_cast<int>(k)) != n->type.ndim())
            return RowClass::None;
        }
        return RowClass::Row;
      }
      return RowClass::None;
    }
    if (const auto* ds = op_as<DimShuffle>(n)) {
      if (out != RowClass::Row || cls(0) != RowClass::Row) return RowClass::None;
      const auto& pat = ds->pattern();
      if (rank(0) == 1 && pat == std::vector<int>{0, -1}) return RowClass::Row;
      if (rank(0) == 2 && pat == std::vector<int>{0}) return RowClass::Row;
      return RowClass::None;
    }
    if (const auto* r = op_as<Reduce>(n)) {
      if (cls(0) == RowClass::Elem && r->axes() == std::vector<int>{1}) return RowClass::Row;
      return RowClass::None;
    }
    if (const auto* a = op_as<ArgReduce>(n)) {
      if (cls(0) == RowClass::Elem && a->axis() == 1) return RowClass::Row;
      return RowClass::None;
    }
    if (op_as<Softmax>(n)) return cls(0) == RowClass::Elem ? RowClass::Elem : RowClass::None;
    if (op_as<SoftmaxGrad>(n))
      return cls(0) == RowClass::Elem && cls(1) == RowClass::Elem ? RowClass::Elem : RowClass::None;
    if (op_as<CrossentropySoftmax>(n)) {
      if (cls(0) != RowClass::Elem) return RowClass::None;
      const TensorType& y = n->inputs[1]->type;
      if (is_integer(y.dtype) ? (y.ndim() == 1 && cls(1) == RowClass::Row)
                              : (cls(1) == RowClass::Elem && same_pattern(y, n->inputs[0]->type)))
        return RowClass::Row;
      return RowClass::None;
    }
    if (op_as<CrossentropySoftmax1HotDx>(n)) {
      if (rank(0) == 1 && cls(0) == RowClass::Row && cls(1) == RowClass::Elem && rank(2) == 1 &&
          cls(2) == RowClass::Row)
        return RowClass::Elem;
      return RowClass::None;
    }
    return RowClass::None;
  }

  static bool is_row_op(const NodePtr& n) {
    return op_as<Reduce>(n) || op_as<ArgReduce>(n) || op_as<Softmax>(n) || op_as<SoftmaxGrad>(n) ||
           op_as<CrossentropySoftmax>(n) || op_as<CrossentropySoftmax1HotDx>(n);
  }

  int uf_find(std::vector<int>& p, int x) {
    while (p[static_cast<std::size_t>(x)] != x)
      x = p[static_cast<std::size_t>(x)] =
          p[static_cast<std::size_t>(p[static_cast<std::size_t>(x)])];
    return x;
  }

  void find_row_groups() {
    const std::size_t nv = plan_.values.size();
    std::vector<RowClass> cand(nv, RowClass::None);
    for (const NodePtr& n : order_) cand[static_cast<std::size_t>(idx(n))] = group_candidate(n);
    if (debug_enabled("rowgroups"))  // THEA_DEBUG=rowgroups
      for (const NodePtr& n : order_)
        std::fprintf(stderr, "rowgroup candidate %s: %d\n", n->describe().c_str(),
                     static_cast<int>(cand[static_cast<std::size_t>(idx(n))]));
    // Matrices whose column counts are equal by construction share a class.
    std::vector<int> uf(nv);
    for (std::size_t i = 0; i < nv; ++i) uf[i] = static_cast<int>(i);
    auto unite = [&](int a, int b) {
      uf[static_cast<std::size_t>(uf_find(uf, a))] = uf_find(uf, b);
    };
    auto elem_input = [&](const NodePtr& in) { return row_class(in->type) == RowClass::Elem; };
    for (const NodePtr& n : order_) {
      int i = idx(n);
      if (cand[static_cast<std::size_t>(i)] == RowClass::None) continue;
      for (const NodePtr& in : n->inputs) {
        if (!elem_input(in)) continue;
        if (cand[static_cast<std::size_t>(i)] == RowClass::Elem) unite(i, idx(in));
      }
      if (op_as<CrossentropySoftmax>(n) && elem_input(n->inputs[1]))
        unite(idx(n->inputs[0]), idx(n->inputs[1]));
    }
    // Groups in topological order; a node may not join a group that one of its inputs
    // depends on through a node outside the group (that would need two kernels).
    std::vector<int> group(nv, -1);
    std::vector<std::set<int>> tainted(nv);  // groups a node outside them depends on
    std::map<int, int> group_of_class;
    int n_groups = 0;
    for (const NodePtr& n : order_) {
      const int i = idx(n);
      const RowClass c = cand[static_cast<std::size_t>(i)];
      int g = -1;
      if (c == RowClass::Elem) {
        int k = uf_find(uf, i);
        auto it = group_of_class.find(k);
        g = it == group_of_class.end() ? (group_of_class[k] = n_groups++) : it->second;
      } else if (c == RowClass::Row) {
        if (op_as<Reduce>(n) || op_as<ArgReduce>(n) || op_as<CrossentropySoftmax>(n)) {
          int k = uf_find(uf, idx(n->inputs[0]));
          auto it = group_of_class.find(k);
          g = it == group_of_class.end() ? (group_of_class[k] = n_groups++) : it->second;
        } else {
          std::set<int> gs;
          for (const NodePtr& in : n->inputs)
            if (group[static_cast<std::size_t>(idx(in))] >= 0)
              gs.insert(group[static_cast<std::size_t>(idx(in))]);
          if (gs.size() == 1) g = *gs.begin();
        }
      }
      if (g >= 0) {
        for (const NodePtr& in : n->inputs)
          if (tainted[static_cast<std::size_t>(idx(in))].count(g)) g = -1;
      }
      group[static_cast<std::size_t>(i)] = g;
      // Host values (sizes, index arithmetic) are known before any kernel runs: no taint.
      if (val(i).place == Place::Host) continue;
      // Taint: every group this node's inputs belong to or depend on, except its own.
      for (const NodePtr& in : n->inputs) {
        int j = idx(in);
        std::set<int> t = tainted[static_cast<std::size_t>(j)];
        if (group[static_cast<std::size_t>(j)] >= 0) t.insert(group[static_cast<std::size_t>(j)]);
        for (int x : t)
          if (x != g) tainted[static_cast<std::size_t>(i)].insert(x);
      }
    }
    // Keep groups worth a kernel of their own: two or more nodes with a row operation.
    std::map<int, std::vector<int>> members;
    for (const NodePtr& n : order_)
      if (group[static_cast<std::size_t>(idx(n))] >= 0)
        members[group[static_cast<std::size_t>(idx(n))]].push_back(idx(n));
    int next = 0;
    for (auto& [g, ms] : members) {
      bool has_row_op = false;
      for (int m : ms) has_row_op |= is_row_op(val(m).node);
      if (ms.size() < 2 || !has_row_op) continue;
      const int gid = next++;
      std::set<int> in_group(ms.begin(), ms.end());
      for (int m : ms) {
        Value& v = val(m);
        v.group = gid;
        bool internal = !v.users.empty() && !is_output(v.node) && !is_update_value(v.node);
        for (int u : v.users) internal &= in_group.count(u) > 0;
        v.place = internal ? Place::Inline : Place::Buffer;
      }
      groups_.push_back(ms);
      prologues_.push_back(find_prologue(gid, in_group));
      totals_.push_back(find_total(gid, in_group));
    }
  }

  // A float sum or mean over everything of a per-row member (the tutorial's cost, the mean
  // of the rows' cross-entropies), read by nothing else in the graph's kernels: the group's
  // kernel adds its rows in order per block and its last block adds the blocks' partials in
  // order (deterministic), instead of a reduce kernel after it (-1: none).
  int find_total(int gid, const std::set<int>& in_group) {
    if (!row_total_fusion_enabled()) return -1;
    for (int m : in_group) {
      Value& mv = val(m);
      const TensorType& mt = mv.node->type;
      if (mv.place != Place::Buffer || !is_float(mt.dtype)) continue;
      if (!(mt.ndim() == 1 || (mt.ndim() == 2 && mt.shape[1] == 1 && mt.shape[0] != 1))) continue;
      int outside = -1, n_outside = 0;
      // (Host users, e.g. size_of for the mean's divisor, read only the shape.)
      for (int u : mv.users)
        if (!in_group.count(u) && val(u).place != Place::Host) {
          outside = u;
          ++n_outside;
        }
      if (n_outside != 1) continue;
      Value& uv = val(outside);
      const auto* r = op_as<Reduce>(uv.node);
      if (!r || uv.place != Place::Buffer || uv.group >= 0 || epilogues_.count(uv.node.get()))
        continue;
      if (r->kind() != ReduceKind::Sum && r->kind() != ReduceKind::Mean) continue;
      if (uv.node->type.dtype != mt.dtype || uv.node->inputs[0] != mv.node) continue;
      bool all_axes = r->axes().empty() || static_cast<int>(r->axes().size()) == mt.ndim();
      if (!all_axes) continue;
      uv.group = gid;
      // The rows are not stored when nothing else reads them.
      if (!is_output(mv.node) && !is_update_value(mv.node)) {
        bool inside = true;
        for (int u : mv.users)
          inside &= u == outside || in_group.count(u) > 0 || val(u).place == Place::Host;
        if (inside) mv.place = Place::Inline;
      }
      return outside;
    }
    return -1;
  }

  // A product whose every reader is in row group `gid` and whose value is one of the group's
  // (N, C) matrices with C <= 32 static (the tutorial's logits dot(X, w)): computed by the
  // group's kernel itself, a row at a time into shared memory, never stored (-1: none).
  int find_prologue(int gid, const std::set<int>& in_group) {
    if (!skinny_ || !skinny_fusion_enabled()) return -1;
    for (int m : in_group)
      for (const NodePtr& in : val(m).node->inputs) {
        const int d = idx(in);
        Value& dv = val(d);
        if (!op_as<Dot>(in) || dv.place != Place::Buffer || row_class(in->type) != RowClass::Elem)
          continue;
        if (is_output(in) || is_update_value(in) || dv.users.empty()) continue;
        bool inside = true;
        for (int u : dv.users) inside &= in_group.count(u) > 0;
        if (!inside) continue;
        const int a = idx(in->inputs[0]), b = idx(in->inputs[1]);
        if (in->inputs[0]->type.dtype != in->type.dtype) continue;
        if (!skinny_ok(in, {a, b})) continue;
        dv.place = Place::Inline;
        dv.group = gid;
        return d;
      }
    return -1;
  }

  void decide_inline() {
    for (const NodePtr& n : order_) {
      Value& v = val(idx(n));
      if (v.place != Place::Buffer || !op_as<Elemwise>(n) || epilogues_.count(n.get())) continue;
      if (v.group >= 0) continue;  // decided by its row group
      if (is_output(n) || is_update_value(n) || v.users.size() != 1) continue;
      const NodePtr& c = val(v.users[0]).node;
      if (val(v.users[0]).place != Place::Buffer || epilogues_.count(c.get())) continue;
      if (val(v.users[0]).group >= 0) continue;  // a group reads it as an operand
      if (!fusable_consumer(c)) continue;
      if (op_as<Elemwise>(c)) {
        if (!same_pattern(n->type, c->type)) continue;
      } else if (c->inputs[0] != n) {
        continue;
      }
      // Every use of n in c must be the fused operand (not, e.g., Second's shape-giver twice).
      v.place = Place::Inline;
    }
  }

  // ---- groups from the shared schedule ---------------------------------------------------
  // The cpu backend's fused groups: each loop kernel of sched::make_schedule becomes one Loop
  // step storing the values the schedule stores (those this plan keeps in buffers: views and
  // host scalars stay as they are); the values it computes without storing are Inline. Every
  // other node (products, gathers, host steps) keeps its own step below.
  void groups_from_schedule() {
    schedule_ = sched::make_schedule(fg_);
    memplan_ = sched::make_memplan(schedule_);
    const std::size_t nv = plan_.values.size();
    std::map<std::size_t, int> group_of_kernel;
    std::vector<bool> in_kernel(nv, false);
    for (const sched::Kernel& k : schedule_.kernels)
      for (const NodePtr& n : k.nodes) in_kernel[static_cast<std::size_t>(idx(n))] = true;
    // Scalars the schedule recomputes wherever they are used have no kernel of their own.
    for (const NodePtr& n : order_) {
      Value& v = val(idx(n));
      if (n->kind == NodeKind::Apply && v.place == Place::Buffer &&
          !in_kernel[static_cast<std::size_t>(idx(n))])
        v.place = Place::Inline;
    }
    for (std::size_t k = 0; k < schedule_.kernels.size(); ++k) {
      const sched::Kernel& kr = schedule_.kernels[k];
      if (kr.kind != sched::KernelKind::Loop) continue;
      std::set<int> stored;
      for (int b : kr.writes) {
        const int v = idx(schedule_.buffers[static_cast<std::size_t>(b)].node);
        Value& sv = val(v);
        // A view the kernel computes from values it does not store (an output transposing
        // a kernel's result) is written as a buffer of its own.
        if (sv.place == Place::View) {
          sv.place = Place::Buffer;
          sv.src = -1;
          sv.dynamic = false;
        }
        if (sv.place == Place::Buffer || sv.place == Place::Inline) stored.insert(v);
      }
      if (stored.empty()) continue;  // computed on the host, or views
      const int gid = static_cast<int>(groups_.size());
      std::vector<int> members;
      for (const NodePtr& n : kr.nodes) {
        const int v = idx(n);
        Value& mv = val(v);
        if (mv.place != Place::Buffer && mv.place != Place::Inline) continue;
        if (std::find(members.begin(), members.end(), v) != members.end()) continue;
        mv.group = gid;
        mv.place = stored.count(v) ? Place::Buffer : Place::Inline;
        members.push_back(v);
      }
      for (int v : stored)
        if (val(v).group != gid) {
          val(v).group = gid;
          val(v).place = Place::Buffer;
          members.push_back(v);
        }
      groups_.push_back(members);
      prologues_.push_back(-1);
      totals_.push_back(-1);
      loop_kernels_.push_back(static_cast<int>(k));
      group_of_kernel[k] = gid;
    }
    for (const sched::RowChain& c : schedule_.row_chains) {
      auto it = group_of_kernel.find(static_cast<std::size_t>(c.loop));
      if (it != group_of_kernel.end()) chain_prologue(c, it->second);
    }
  }

  // The product heading a row chain (C = A·B, then a loop over C's rows): computed by the
  // loop's kernel itself, a row at a time into shared memory, when C has at most 32 static
  // columns and nothing but that kernel reads it (the tutorial's logits dot(X, w)).
  void chain_prologue(const sched::RowChain& c, int g) {
    if (!skinny_ || !skinny_fusion_enabled()) return;
    const sched::Kernel& gk = schedule_.kernels[static_cast<std::size_t>(c.gemm)];
    const sched::LoopKernel& lk = schedule_.kernels[static_cast<std::size_t>(c.loop)].loop;
    if (gk.nodes.size() != 1 || !op_as<Dot>(gk.nodes[0])) return;
    const NodePtr& p = gk.nodes[0];
    const int d = idx(p);
    Value& dv = val(d);
    if (dv.place != Place::Buffer || is_output(p) || is_update_value(p)) return;
    if (p->inputs[0]->type.dtype != p->type.dtype) return;
    if (!skinny_ok(p, {idx(p->inputs[0]), idx(p->inputs[1])})) return;
    for (int u : dv.users)
      if (val(u).group != g && val(u).place != Place::Host) return;
    // The kernel sweeps C's rows (outer axis) along its columns (inner axis).
    if (lk.domain.size() != 2 || lk.inner != std::vector<bool>{false, true}) return;
    bool read = false;
    for (const sched::Access& a : lk.accesses) {
      if (schedule_.buffers[static_cast<std::size_t>(a.buffer)].node != p) continue;
      if (a.axis_of != std::vector<int>{0, 1}) return;
      read = true;
    }
    if (!read) return;
    dv.place = Place::Inline;
    dv.group = g;
    prologues_[static_cast<std::size_t>(g)] = d;
  }

  bool is_loop_group(int g) const {
    return g >= 0 && static_cast<std::size_t>(g) < loop_kernels_.size();
  }

  // Per run-time size of the schedule, a (value, axis) whose size it is: a value the kernel
  // reads or writes, else the schedule's own source (which may be an input nothing reads,
  // with no value here: (-1, 0)).
  std::vector<std::pair<int, int>> size_sources(const sched::LoopKernel& lk,
                                                const std::vector<int>& access_values) const {
    std::vector<std::pair<int, int>> src(static_cast<std::size_t>(schedule_.num_syms), {-1, 0});
    for (std::size_t a = 0; a < lk.accesses.size(); ++a) {
      const sched::Buffer& b = schedule_.buffers[static_cast<std::size_t>(lk.accesses[a].buffer)];
      for (std::size_t d = 0; d < b.dims.size(); ++d) {
        if (b.dims[d].is_static()) continue;
        auto& s = src[static_cast<std::size_t>(b.dims[d].sym)];
        if (s.first < 0) s = {access_values[a], static_cast<int>(d)};
      }
    }
    for (std::size_t sym = 0; sym < src.size(); ++sym) {
      const auto& [node, axis] = schedule_.sym_sources[sym];
      if (src[sym].first < 0 && plan_.index.count(node.get())) src[sym] = {idx(node), axis};
    }
    return src;
  }

  // A row kernel computing its product (st.prologue = A·B) reads A and B.
  void add_prologue_operands(Step& st) {
    if (st.prologue < 0) return;
    const NodePtr& d = val(st.prologue).node;
    st.gemm_a = idx(d->inputs[0]);
    st.gemm_b = idx(d->inputs[1]);
    for (int v : {st.gemm_a, st.gemm_b}) {
      ensure_contig_steps(d, v);
      add_operand(st, v, false);
    }
  }

  void emit_loop(int g) {
    const sched::Kernel& kr =
        schedule_.kernels[static_cast<std::size_t>(loop_kernels_[static_cast<std::size_t>(g)])];
    auto lk = std::make_shared<sched::LoopKernel>(kr.loop);
    Step st;
    st.kind = StepKind::Loop;
    for (const sched::Access& a : lk->accesses)
      st.loop_values.push_back(idx(schedule_.buffers[static_cast<std::size_t>(a.buffer)].node));
    // Only the values this plan stores are written (a view or host value is not).
    std::vector<sched::Store> kept;
    for (const sched::Store& s : lk->stores) {
      const int v = st.loop_values[static_cast<std::size_t>(s.access)];
      if (val(v).place == Place::Buffer && val(v).group == g) kept.push_back(s);
    }
    lk->stores = kept;
    if (kept.empty()) throw Error("cuda lowering: internal error: loop kernel stores nothing");
    st.out = st.loop_values[static_cast<std::size_t>(kept[0].access)];
    st.node = val(st.out).node;
    for (const NodePtr& n : kr.nodes)
      if (val(idx(n)).group == g) st.fused.push_back(n);
    st.prologue = prologues_[static_cast<std::size_t>(g)];
    add_prologue_operands(st);
    for (const sched::Expr& e : lk->exprs) {
      if (e.kind != sched::ExprKind::Load) continue;
      const int v = st.loop_values[static_cast<std::size_t>(e.access)];
      if (v == st.prologue) continue;  // computed by the kernel
      if (val(root_of(v)).place == Place::Inline)
        throw Error("cuda lowering: internal error: schedule kernel " + kr.name + " reads " +
                    val(v).node->describe() + ", which no step stores");
      ensure_contig_steps(st.node, v);
      add_operand(st, v, false);
    }
    st.loop_syms = size_sources(*lk, st.loop_values);
    st.index_rank = static_cast<int>(lk->domain.size());
    // A softmax that is a kernel of its own, of a plain buffer: cuDNN where it loads (it
    // gets the input's address when the call is made, which a captured graph keeps, so
    // never a slice whose start changes per call).
    if (op_as<Softmax>(st.node)) {
      const int x = idx(st.node->inputs[0]);
      const Place xp = val(x).place;
      st.try_dnn = cudnn_softmax_enabled() && st.fused.size() == 1 && lk->stores.size() == 1 &&
                   st.operands.size() == 1 && st.operands[0].value == x && !val(x).dynamic &&
                   (xp == Place::Input || xp == Place::Shared || xp == Place::Constant ||
                    xp == Place::Buffer) &&
                   is_float(st.node->type.dtype);
    }
    st.loop = std::move(lk);
    push_step(std::move(st));
  }

  // The storage a value lives in: the leaf or buffer under any views.
  int root_of(int i) const {
    const Value& v = plan_.values[static_cast<std::size_t>(i)];
    if ((v.place == Place::View || v.place == Place::Contig) && v.src >= 0) return root_of(v.src);
    return i;
  }

  int make_contig(int src, bool force) {
    int c = add_value(val(src).node, Place::Contig);
    val(c).src = src;
    val(c).force_copy = force;
    val(c).dynamic = force ? false : val(src).dynamic;
    return c;
  }

  void plan_updates_and_outputs() {
    std::set<int> targets;
    for (const UpdatePair& u : fg_.updates()) targets.insert(idx(u.target));
    for (const UpdatePair& u : fg_.updates()) {
      int s = idx(u.target), v = idx(u.value);
      val(v).update_of = s;
      plan_.updates.emplace_back(s, v);
    }
    for (const NodePtr& o : fg_.outputs()) {
      int v = idx(o);
      val(v).is_output = true;
      plan_.outputs.push_back(v);
    }
    // Outputs and update values that live in an updated shared variable's storage must be
    // read before any update writes: copy them first.
    // Views are downloaded / copied into state through a contiguous copy.
    for (int& o : plan_.outputs) {
      if (val(o).place == Place::Host) continue;
      int r = root_of(o);
      if (targets.count(r) && val(r).place == Place::Shared)
        o = make_contig(o, true);
      else if (val(o).place == Place::View)
        o = make_contig(o, false);
    }
    for (auto& [s, v] : plan_.updates) {
      if (val(v).place == Place::Host) continue;
      int r = root_of(v);
      if (val(r).place == Place::Shared && targets.count(r))
        v = make_contig(v, true);
      else if (val(v).place == Place::View)
        // The update's memcpy is captured with the address it had then: a slice whose start
        // changes per call goes through a copy of its own (its kernel reads the address per
        // call), not an alias of the slice.
        v = make_contig(v, val(v).dynamic);
    }
  }

  // Positional kernels (cross-entropy, dot, ...) read operand k as input k: no merging,
  // even when two inputs are the same value.
  void add_positional(Step& st, int value) { st.operands.push_back({value, false}); }

  void add_operand(Step& st, int value, bool full) {
    for (Operand& o : st.operands)
      if (o.value == value) {
        o.full = o.full && full;
        return;
      }
    st.operands.push_back({value, full});
  }

  // Leaves of the inline tree rooted at `n` (n included when inline) become operands; the
  // inline nodes are listed inputs-first in st.fused. `space` is the kernel's index space.
  void collect_tree(Step& st, const NodePtr& n, const TensorType& space, bool rows_contiguous,
                    std::set<const Node*>& seen) {
    if (seen.count(n.get())) return;
    seen.insert(n.get());
    int i = idx(n);
    for (const NodePtr& in : n->inputs) {
      int j = idx(in);
      if (val(j).place == Place::Inline) {
        collect_tree(st, in, space, rows_contiguous, seen);
      } else {
        const Value& jv = val(j);
        bool full = jv.contiguous_storage() && same_pattern(in->type, space) && rows_contiguous &&
                    jv.place != Place::Host;
        add_operand(st, j, full);
      }
    }
    (void)i;
    st.fused.push_back(n);
  }

  bool trailing_axes(const std::vector<int>& axes, int rank) const {
    if (axes.empty()) return true;  // all axes
    for (std::size_t k = 0; k < axes.size(); ++k)
      if (axes[axes.size() - 1 - k] != rank - 1 - static_cast<int>(k)) return false;
    return true;
  }

  void input_tree_step(Step& st, const NodePtr& n, bool rows_contiguous) {
    const NodePtr& in = n->inputs[0];
    std::set<const Node*> seen;
    if (val(idx(in)).place == Place::Inline) {
      collect_tree(st, in, in->type, rows_contiguous, seen);
    } else {
      add_operand(st, idx(in), val(idx(in)).contiguous_storage() && rows_contiguous);
    }
  }

  void push_step(Step st) { main_.push_back(std::move(st)); }

  // A gemm operand: used in place when cuBLAS can read its layout (transposes included),
  // else copied contiguous first (decided per call shape).
  int gemm_operand(int v, bool blas) {
    Place p = val(v).place;
    if (p == Place::Input || p == Place::Shared || p == Place::Constant || p == Place::Buffer ||
        p == Place::Contig)
      return v;
    int c = make_contig(v, false);
    val(c).blas_alias = blas;
    ensure_contig_steps(nullptr, c);
    return c;
  }

  // An operand a step copies with a memcpy (a cuBLAS gemm's C_in, inc_rows' x), which a
  // captured graph replays with the address it had: a contiguous buffer whose address is
  // fixed for the instance. A slice whose start changes per call gets a copy of its own
  // (a kernel, reading the address per call).
  int fixed_address_operand(int v) {
    const Place p = val(v).place;
    if (val(v).dynamic)
      v = make_contig(v, true);
    else if (p != Place::Input && p != Place::Shared && p != Place::Constant &&
             p != Place::Buffer && p != Place::Contig)
      v = make_contig(v, false);
    ensure_contig_steps(nullptr, v);
    return v;
  }

  // Contig values are copied right before their first reader.
  void ensure_contig_steps(const NodePtr& consumer_or_null, int value) {
    const Value& v = val(value);
    if (v.place == Place::View && v.src >= 0) ensure_contig_steps(consumer_or_null, v.src);
    if (v.place != Place::Contig || contig_done_.count(value)) return;
    ensure_contig_steps(consumer_or_null, v.src);
    contig_done_.insert(value);
    Step st;
    st.kind = StepKind::Copy;
    st.out = value;
    st.node = v.node;
    st.index_rank = v.node->type.ndim();
    add_operand(st, v.src, false);
    push_step(std::move(st));
  }

  // Units of execution (one node's step, or a whole row group) in a topological order of
  // their data dependencies, ties broken by the graph order.
  std::vector<std::pair<int, NodePtr>> unit_order() {
    const std::size_t nv = plan_.values.size();
    std::vector<int> unit_of(nv, -1);
    struct Unit {
      int group = -1;
      NodePtr node;
      std::vector<int> values;
      int first = 0;
    };
    std::vector<Unit> units;
    std::map<int, int> group_unit;
    int pos = 0;
    for (const NodePtr& n : order_) {
      int i = idx(n);
      const Value& v = val(i);
      ++pos;
      if (v.group >= 0) {
        auto it = group_unit.find(v.group);
        if (it == group_unit.end()) {
          it = group_unit.emplace(v.group, static_cast<int>(units.size())).first;
          units.push_back({v.group, nullptr, {}, pos});
        }
        units[static_cast<std::size_t>(it->second)].values.push_back(i);
        unit_of[static_cast<std::size_t>(i)] = it->second;
      } else if (v.place == Place::Buffer && n->kind == NodeKind::Apply) {
        unit_of[static_cast<std::size_t>(i)] = static_cast<int>(units.size());
        units.push_back({-1, n, {i}, pos});
      }
    }
    std::function<void(int, std::set<int>&, std::set<int>&)> producers =
        [&](int j, std::set<int>& out, std::set<int>& seen) {
          if (!seen.insert(j).second) return;
          if (unit_of[static_cast<std::size_t>(j)] >= 0) {
            out.insert(unit_of[static_cast<std::size_t>(j)]);
            return;
          }
          const Value& v = val(j);
          if ((v.place == Place::View || v.place == Place::Contig) && v.src >= 0)
            producers(v.src, out, seen);
          if (v.place == Place::Inline || v.place == Place::View)
            for (const NodePtr& in : v.node->inputs) producers(idx(in), out, seen);
        };
    std::vector<std::set<int>> deps(units.size());
    for (std::size_t u = 0; u < units.size(); ++u)
      for (int i : units[u].values)
        for (const NodePtr& in : val(i).node->inputs) {
          std::set<int> out, seen;
          producers(idx(in), out, seen);
          for (int d : out)
            if (d != static_cast<int>(u)) deps[u].insert(d);
        }
    std::vector<int> indeg(units.size(), 0);
    std::vector<std::vector<int>> rdeps(units.size());
    for (std::size_t u = 0; u < units.size(); ++u)
      for (int d : deps[u]) {
        indeg[u]++;
        rdeps[static_cast<std::size_t>(d)].push_back(static_cast<int>(u));
      }
    std::set<std::pair<int, int>> ready;  // (first position, unit)
    for (std::size_t u = 0; u < units.size(); ++u)
      if (indeg[u] == 0) ready.emplace(units[u].first, static_cast<int>(u));
    std::vector<std::pair<int, NodePtr>> out;
    while (!ready.empty()) {
      int u = ready.begin()->second;
      ready.erase(ready.begin());
      out.emplace_back(units[static_cast<std::size_t>(u)].group,
                       units[static_cast<std::size_t>(u)].node);
      for (int r : rdeps[static_cast<std::size_t>(u)])
        if (--indeg[static_cast<std::size_t>(r)] == 0)
          ready.emplace(units[static_cast<std::size_t>(r)].first, r);
    }
    if (out.size() != units.size())
      throw Error("cuda lowering: internal error: a cycle between kernels (row groups)");
    return out;
  }

  void emit_group(int g) {
    const std::vector<int>& ms = groups_[static_cast<std::size_t>(g)];
    Step st;
    st.kind = StepKind::RowGroup;
    st.prologue = prologues_[static_cast<std::size_t>(g)];
    st.total = totals_[static_cast<std::size_t>(g)];
    add_prologue_operands(st);
    std::set<int> in_group(ms.begin(), ms.end());
    for (int m : ms) {
      const NodePtr& n = val(m).node;
      for (const NodePtr& in : n->inputs) {
        int j = idx(in);
        if (in_group.count(j) || j == st.prologue) continue;
        ensure_contig_steps(n, j);
        add_operand(st, j, false);
      }
      st.fused.push_back(n);
      if (val(m).place == Place::Buffer && st.out < 0) {
        st.out = m;
        st.node = n;
      }
      st.checks |= op_as<CrossentropySoftmax1HotDx>(n) ||
                   (op_as<CrossentropySoftmax>(n) && is_integer(n->inputs[1]->type.dtype));
    }
    if (!st.node) st.node = val(ms.back()).node;
    if (st.out < 0 && st.total >= 0) st.out = st.total;  // the group stores only the total
    st.index_rank = 2;
    // The (N, C) space: a matrix-valued member, else the matrix a member reduces.
    for (int m : ms)
      if (row_class(val(m).node->type) == RowClass::Elem) {
        st.space = m;
        break;
      }
    for (std::size_t k = 0; k < ms.size() && st.space < 0; ++k) {
      const NodePtr& n = val(ms[k]).node;
      if (is_row_op(n) && row_class(n->inputs[0]->type) == RowClass::Elem)
        st.space = idx(n->inputs[0]);
      if (op_as<CrossentropySoftmax1HotDx>(n)) st.space = idx(n->inputs[1]);
    }
    if (st.space < 0) throw Error("cuda lowering: internal error: row group without a matrix");
    push_step(std::move(st));
  }

  // Whether a float product writing `out` (a matrix with a static column count <= 32) from
  // the matrices `mats` (a, b and c, -1 for none) runs as the generated skinny gemm: every
  // operand needs storage the kernel can read through its view.
  bool skinny_ok(const NodePtr& out, std::initializer_list<int> mats) {
    if (!skinny_) return false;
    const TensorType& t = out->type;
    if (!is_float(t.dtype) || t.ndim() != 2 || t.shape[1] < 1 || t.shape[1] > kSkinnyGemmMaxN)
      return false;
    for (int v : mats) {
      if (v < 0) continue;
      const Value& x = val(v);
      if (x.node->type.ndim() != 2 || x.node->type.dtype != t.dtype) return false;
      if (x.place == Place::Host || x.place == Place::Inline) return false;
    }
    return true;
  }

  void make_skinny(Step& st, int a, int b, int c) {
    st.skinny = true;
    st.gemm_a = a;
    st.gemm_b = b;
    st.gemm_c = c;
    add_positional(st, a);
    add_positional(st, b);
    if (c >= 0) add_positional(st, c);
  }

  void build_steps() {
    for (const auto& [group, n] : unit_order()) {
      if (is_loop_group(group)) {
        emit_loop(group);
        continue;
      }
      if (group >= 0) {
        emit_group(group);
        continue;
      }
      int i = idx(n);
      for (const NodePtr& in : n->inputs) ensure_contig_steps(n, idx(in));
      Step st;
      st.out = i;
      st.node = n;
      if (auto it = epilogues_.find(n.get()); it != epilogues_.end()) {
        const Epilogue& ep = it->second;
        for (const NodePtr& in : ep.dot->inputs) ensure_contig_steps(n, idx(in));
        ensure_contig_steps(n, idx(ep.c));
        st.kind = StepKind::Gemm;
        const int a = idx(ep.dot->inputs[0]), b = idx(ep.dot->inputs[1]), c = idx(ep.c);
        if (skinny_ok(n, {a, b, c})) {
          make_skinny(st, a, b, c);
        } else {
          st.gemm_a = gemm_operand(a, true);
          st.gemm_b = gemm_operand(b, true);
          st.gemm_c = fixed_address_operand(c);
        }
        st.alpha = ep.alpha;
        st.alpha_scale = ep.scale ? idx(ep.scale) : -1;
        st.beta = 1.0;
        push_step(std::move(st));
        continue;
      }
      const bool host_input =
          std::any_of(n->inputs.begin(), n->inputs.end(),
                      [&](const NodePtr& in) { return val(idx(in)).place == Place::Host; });
      bool takes_host =
          op_as<Elemwise>(n) || op_as<Reduce>(n) || op_as<ArgReduce>(n) || op_as<Softmax>(n);
      if (op_as<Gemm>(n)) {  // alpha and beta may come from the host; the matrices may not
        takes_host = true;
        for (int k : {Gemm::kA, Gemm::kB, Gemm::kC})
          if (k < static_cast<int>(n->inputs.size()) &&
              val(idx(n->inputs[static_cast<std::size_t>(k)])).place == Place::Host)
            takes_host = false;
      }
      if (host_input && !takes_host) {
        st.kind = StepKind::HostOp;  // e.g. dot of a (1, 1) host value: rare, run it on the host
        for (const NodePtr& in : n->inputs) add_operand(st, idx(in), false);
      } else if (op_as<Elemwise>(n)) {
        st.kind = StepKind::Map;
        st.index_rank = n->type.ndim();
        std::set<const Node*> seen;
        collect_tree(st, n, n->type, true, seen);
      } else if (const auto* r = op_as<Reduce>(n)) {
        st.kind = StepKind::Reduce;
        st.index_rank = n->inputs[0]->type.ndim();
        st.contiguous_rows = trailing_axes(r->axes(), st.index_rank);
        input_tree_step(st, n, st.contiguous_rows);
      } else if (const auto* a = op_as<ArgReduce>(n)) {
        st.kind = StepKind::ArgReduce;
        st.index_rank = n->inputs[0]->type.ndim();
        st.contiguous_rows = a->axis() < 0 || trailing_axes({a->axis()}, st.index_rank);
        input_tree_step(st, n, st.contiguous_rows);
      } else if (op_as<Softmax>(n)) {
        st.kind = StepKind::Softmax;
        st.index_rank = n->type.ndim();
        st.contiguous_rows = true;
        input_tree_step(st, n, true);
        // cuDNN takes a plain contiguous input, not a fused expression.
        // cuDNN gets the input's address when the call is made, which a captured graph keeps:
        // never a slice whose start changes per call (the row kernel reads it per call).
        st.try_dnn = cudnn_softmax_enabled() && st.operands.size() == 1 && st.operands[0].full &&
                     !val(st.operands[0].value).dynamic && st.fused.empty() &&
                     is_float(n->type.dtype);
      } else if (op_as<CrossentropyCategorical1Hot>(n)) {
        st.kind = StepKind::Xent;
        st.checks = true;
        add_positional(st, idx(n->inputs[0]));
        add_positional(st, idx(n->inputs[1]));
      } else if (op_as<CrossentropyCategorical1HotGrad>(n)) {
        st.kind = StepKind::XentGrad;
        st.checks = true;
        for (const NodePtr& in : n->inputs) add_positional(st, idx(in));
      } else if (op_as<OneHot>(n)) {
        st.kind = StepKind::OneHot;
        st.checks = true;
        add_positional(st, idx(n->inputs[0]));
      } else if (const auto* gm = op_as<Gemm>(n)) {
        st.kind = StepKind::Gemm;
        const int a = idx(n->inputs[Gemm::kA]), b = idx(n->inputs[Gemm::kB]);
        const int c = gm->accumulate() ? idx(n->inputs[Gemm::kC]) : -1;
        if (skinny_ok(n, {a, b, c})) {
          make_skinny(st, a, b, c);
        } else {
          st.gemm_a = gemm_operand(a, true);
          st.gemm_b = gemm_operand(b, true);
        }
        st.trans_a = gm->trans_a();
        st.trans_b = gm->trans_b();
        auto scalar = [&](int k, double* constant, int* scale, int* device) {
          int v = idx(n->inputs[static_cast<std::size_t>(k)]);
          *constant = 1.0;
          if (val(v).place == Place::Host)
            *scale = v;
          else
            *device = v;
        };
        scalar(Gemm::kAlpha, &st.alpha, &st.alpha_scale, &st.alpha_value);
        if (gm->accumulate()) {
          if (!st.skinny) st.gemm_c = fixed_address_operand(c);
          scalar(Gemm::kBeta, &st.beta, &st.beta_scale, &st.beta_value);
        }
        // cuBLAS reads device scalars at the address given when the call is made (the
        // skinny kernel reads a per-call pointer from the argument block).
        for (int v : {st.alpha_value, st.beta_value}) {
          if (v < 0) continue;
          if (st.skinny)
            add_positional(st, v);
          else if (val(v).dynamic)
            st.kind = StepKind::HostOp;
        }
        if (st.kind == StepKind::HostOp) {
          st.gemm_a = st.gemm_b = st.gemm_c = -1;
          for (const NodePtr& in : n->inputs) add_positional(st, idx(in));
        }
      } else if (op_as<SoftmaxGrad>(n)) {
        st.kind = StepKind::SoftmaxGrad;
        st.index_rank = n->type.ndim();
        for (const NodePtr& in : n->inputs) add_positional(st, idx(in));
      } else if (op_as<CrossentropySoftmax>(n)) {
        st.kind = StepKind::XentSoftmax;
        st.index_rank = n->inputs[0]->type.ndim();
        st.checks = is_integer(n->inputs[1]->type.dtype);
        for (const NodePtr& in : n->inputs) add_positional(st, idx(in));
      } else if (op_as<CrossentropySoftmax1HotDx>(n)) {
        st.kind = StepKind::XentSoftmaxDx;
        st.checks = true;
        for (const NodePtr& in : n->inputs) add_positional(st, idx(in));
      } else if (op_as<Take>(n)) {
        st.kind = StepKind::Take;
        st.checks = true;
        st.index_rank = n->type.ndim();
        add_positional(st, idx(n->inputs[0]));
        add_positional(st, idx(n->inputs[1]));
      } else if (op_as<IncRows>(n)) {
        // x is copied into the output with one device-to-device copy before the kernel (none
        // when updating x in place).
        const int x = fixed_address_operand(idx(n->inputs[0]));
        st.kind = StepKind::IncRows;
        st.checks = true;
        st.index_rank = n->type.ndim();
        add_positional(st, x);
        add_positional(st, idx(n->inputs[1]));
        add_positional(st, idx(n->inputs[2]));
      } else if (op_as<Dot>(n)) {
        const Dtype d = n->type.dtype;
        bool blas = is_float(d) && n->inputs[0]->type.dtype == d && n->inputs[1]->type.dtype == d;
        const int a = idx(n->inputs[0]), b = idx(n->inputs[1]);
        if (blas && skinny_ok(n, {a, b})) {
          st.kind = StepKind::Gemm;
          make_skinny(st, a, b, -1);
        } else if (blas) {
          st.kind = StepKind::Gemm;
          st.gemm_a = gemm_operand(a, true);
          st.gemm_b = gemm_operand(b, true);
        } else {
          st.kind = StepKind::DotNaive;
          add_positional(st, idx(n->inputs[0]));
          add_positional(st, idx(n->inputs[1]));
        }
      } else {
        st.kind = StepKind::HostOp;
        for (const NodePtr& in : n->inputs) add_positional(st, idx(in));
      }
      push_step(std::move(st));
    }
    // Copies forced by outputs/updates that alias state, before any update writes.
    for (int o : plan_.outputs) ensure_contig_steps(nullptr, o);
    for (auto& [s, v] : plan_.updates) ensure_contig_steps(nullptr, v);
    choose_inplace();
    plan_.steps = std::move(main_);
    for (Step& st : inplace_) plan_.steps.push_back(std::move(st));
    for (auto& [s, v] : plan_.updates) {
      if (inplace_targets_.count(s)) continue;
      Step st;
      st.kind = StepKind::UpdateCopy;
      st.out = s;
      st.target = s;
      st.node = val(s).node;
      add_operand(st, v, false);
      plan_.steps.push_back(std::move(st));
    }
    for (const Step& st : plan_.steps) plan_.any_checks |= st.checks;
  }

  // Schedule lowering: whether the shared memory plan writes update `u`'s value in place
  // (its kernel reads each old element only where it writes the new one, and nothing after
  // it needs the old value).
  bool plan_writes_in_place(std::size_t u) const {
    return from_schedule_ && u < memplan_.update_inplace.size() && memplan_.update_inplace[u];
  }

  // The plan decides over the schedule's buffers, where a slice such as x[:, ::-1] is a copy;
  // here it may be a view of s itself. So every read of s's storage by the loop kernel, views
  // included, must also be s at the element being written.
  // Also, in-place steps move after every other step: the kernel's other stored values may
  // then be read only by the final copies and downloads, not by another kernel.
  bool loop_reads_in_place(const Step& st, int s) const {
    const sched::LoopKernel& lk = *st.loop;
    const sched::Access& out = lk.accesses[static_cast<std::size_t>(lk.stores[0].access)];
    for (const sched::Store& store : lk.stores) {
      const int sv = st.loop_values[static_cast<std::size_t>(store.access)];
      if (sv == st.out) continue;
      const Value& stored = plan_.values[static_cast<std::size_t>(sv)];
      for (int u : stored.users) {
        const Value& user = plan_.values[static_cast<std::size_t>(u)];
        if (user.group != stored.group && user.place != Place::Host) return false;
      }
    }
    for (const sched::Expr& e : lk.exprs) {
      if (e.kind != sched::ExprKind::Load) continue;
      const int v = st.loop_values[static_cast<std::size_t>(e.access)];
      if (v == st.prologue || root_of(v) != s) continue;
      if (v != s || lk.accesses[static_cast<std::size_t>(e.access)].axis_of != out.axis_of)
        return false;
    }
    if (st.prologue >= 0)
      for (int g : {st.gemm_a, st.gemm_b})
        if (root_of(g) == s) return false;
    return true;
  }

  // Values a step reads (operands, gemm inputs), as storage roots.
  std::set<int> roots_read(const Step& st) const {
    std::set<int> r;
    for (const Operand& o : st.operands) r.insert(root_of(o.value));
    for (int g : {st.gemm_a, st.gemm_b, st.gemm_c})
      if (g >= 0) r.insert(root_of(g));
    return r;
  }

  // Moves update steps that can write straight into their shared variable's buffer to the
  // end, when every other reader of the old value runs before them.
  void choose_inplace() {
    std::vector<std::pair<int, std::size_t>> candidates;  // (shared, step index in main_)
    for (std::size_t u = 0; u < plan_.updates.size(); ++u) {
      const auto& [s, v] = plan_.updates[u];
      const Value& vv = val(v);
      if (vv.place != Place::Buffer || !vv.users.empty() || vv.is_output) continue;
      if (val(s).place != Place::Shared) continue;
      int count = 0;
      for (auto& [s2, v2] : plan_.updates) count += v2 == v;
      if (count != 1) continue;
      for (std::size_t k = 0; k < main_.size(); ++k) {
        Step& st = main_[k];
        if (st.out != v) continue;
        bool ok = false;
        if (st.kind == StepKind::Map) {
          // Reads of s inside the kernel must be at the same element it writes.
          ok = true;
          for (const Operand& o : st.operands)
            if (root_of(o.value) == s && (o.value != s || !o.full)) ok = false;
        } else if (st.kind == StepKind::Loop) {
          ok = plan_writes_in_place(u) && loop_reads_in_place(st, s);
        } else if (st.kind == StepKind::Gemm) {
          ok = st.gemm_c == s && root_of(st.gemm_a) != s && root_of(st.gemm_b) != s &&
               (!from_schedule_ || plan_writes_in_place(u));
        } else if (st.kind == StepKind::IncRows) {
          // The embedding update: only the indexed rows of s are touched, no copy of s.
          ok = st.operands[0].value == s && root_of(st.operands[1].value) != s &&
               root_of(st.operands[2].value) != s;
        }
        if (ok) candidates.emplace_back(s, k);
      }
    }
    // Iterate: the chosen steps move to the end (in their order); each must be the last
    // reader of its shared variable's old value.
    std::set<std::size_t> chosen;
    for (auto& c : candidates) chosen.insert(c.second);
    bool changed = true;
    while (changed) {
      changed = false;
      for (auto& [s, k] : candidates) {
        if (!chosen.count(k)) continue;
        bool ok = true;
        // Later in-place steps must not read s.
        for (std::size_t k2 : chosen)
          if (k2 > k && roots_read(main_[k2]).count(s)) ok = false;
        // Output/update copies of s run in the main phase: fine. Other update copies read
        // their own temporaries.
        if (!ok) {
          chosen.erase(k);
          changed = true;
        }
      }
    }
    std::vector<Step> rest;
    for (std::size_t k = 0; k < main_.size(); ++k) {
      if (chosen.count(k)) {
        Step st = std::move(main_[k]);
        for (auto& [s, kk] : candidates)
          if (kk == k) {
            st.target = s;
            inplace_targets_.insert(s);
          }
        inplace_.push_back(std::move(st));
      } else {
        rest.push_back(std::move(main_[k]));
      }
    }
    main_ = std::move(rest);
  }

  void assign_slots() {
    int next = 0;
    auto scalar_slot = [&](int v) {
      if (val(v).scalar_slot < 0) val(v).scalar_slot = next++;
    };
    for (Step& st : plan_.steps) {
      for (const Operand& o : st.operands) {
        Value& ov = val(o.value);
        if (ov.place == Place::Host) scalar_slot(o.value);
        if (ov.dynamic && ov.ptr_slot < 0) ov.ptr_slot = next++;
      }
      if (st.kind == StepKind::Gemm) {
        if (st.alpha_value < 0) st.alpha_slot = next++;
        if (st.beta_value < 0) st.beta_slot = next++;
        bool dyn = false;
        for (int g : {st.gemm_a, st.gemm_b, st.gemm_c})
          if (g >= 0 && val(g).dynamic && !st.skinny) dyn = true;
        if (dyn) {
          st.indirect = true;
          st.ptr_slots = next;
          next += 3;
        }
      }
    }
    plan_.n_args = next;
  }

  struct Epilogue {
    NodePtr dot, c, scale;
    double alpha = 1;
  };

  const FunctionGraph& fg_;
  const bool skinny_;
  Plan plan_;
  std::vector<NodePtr> order_;
  std::unordered_map<const Node*, Epilogue> epilogues_;
  std::vector<Step> main_, inplace_;
  std::set<int> contig_done_, inplace_targets_;
  std::vector<std::vector<int>> groups_;  // row or loop groups: their member values
  std::vector<int> prologues_;            // per row group: the product it computes, or -1
  std::vector<int> totals_;               // per row group: the sum/mean of its rows, or -1
  // THEA_CUDA_LOWERING=schedule: the shared schedule, its memory plan, and per group its
  // loop kernel (empty under the legacy lowering, whose groups are all row groups).
  const bool from_schedule_;
  sched::Schedule schedule_;
  sched::MemPlan memplan_;
  std::vector<int> loop_kernels_;
};

}  // namespace

const char* place_name(Place p) {
  switch (p) {
    case Place::Host:
      return "host";
    case Place::Input:
      return "input";
    case Place::Shared:
      return "shared";
    case Place::Constant:
      return "constant";
    case Place::Buffer:
      return "buffer";
    case Place::View:
      return "view";
    case Place::Contig:
      return "contig";
    case Place::Inline:
      return "inline";
  }
  return "?";
}

const char* step_kind_name(StepKind k) {
  switch (k) {
    case StepKind::Map:
      return "map";
    case StepKind::Reduce:
      return "reduce";
    case StepKind::ArgReduce:
      return "argreduce";
    case StepKind::Softmax:
      return "softmax";
    case StepKind::Xent:
      return "xent";
    case StepKind::XentGrad:
      return "xent_grad";
    case StepKind::OneHot:
      return "one_hot";
    case StepKind::SoftmaxGrad:
      return "softmax_grad";
    case StepKind::XentSoftmax:
      return "xent_softmax";
    case StepKind::XentSoftmaxDx:
      return "xent_softmax_dx";
    case StepKind::RowGroup:
      return "row_group";
    case StepKind::DotNaive:
      return "dot_naive";
    case StepKind::Take:
      return "take";
    case StepKind::IncRows:
      return "inc_rows";
    case StepKind::Gemm:
      return "gemm";
    case StepKind::Copy:
      return "copy";
    case StepKind::UpdateCopy:
      return "update_copy";
    case StepKind::HostOp:
      return "host_op";
    case StepKind::Loop:
      return "loop";
  }
  return "?";
}

std::size_t Plan::kernel_launches() const {
  std::size_t n = 0;
  for (const Step& st : steps)
    if (st.kind != StepKind::Copy && st.kind != StepKind::UpdateCopy) ++n;
  return n;
}

std::string Plan::describe() const {
  std::ostringstream os;
  int k = 0;
  for (const Step& st : steps) {
    os << "  " << k++ << ": " << step_kind_name(st.kind);
    if (st.node && st.node->kind == NodeKind::Apply) os << " " << st.node->op->str();
    if (!st.fused.empty() && st.fused.size() > 1) {
      os << " [fused";
      for (const NodePtr& f : st.fused) os << " " << (f->op ? f->op->name() : f->label());
      os << "]";
    }
    if (st.kind == StepKind::Gemm) {
      os << " alpha=" << (st.alpha_value >= 0 ? std::string("device") : std::to_string(st.alpha))
         << (st.alpha_scale >= 0 ? "*scale" : "");
      if (st.gemm_c >= 0)
        os << " beta=" << (st.beta_value >= 0 ? std::string("device") : std::to_string(st.beta))
           << (st.beta_scale >= 0 ? "*scale" : "");
      os << (st.trans_a ? " trans_a" : "") << (st.trans_b ? " trans_b" : "")
         << (st.indirect ? " indirect" : "") << (st.skinny ? " skinny" : "");
    }
    if (st.target >= 0)
      os << " -> " << values[static_cast<std::size_t>(st.target)].node->label()
         << (st.kind == StepKind::UpdateCopy ? "" : " (in place)");
    if (st.prologue >= 0) os << " with dot";
    if (st.total >= 0)
      os << " with " << values[static_cast<std::size_t>(st.total)].node->op->name() << " of rows";
    if (st.loop_scratch_words >= 0) os << " with totals";  // final reductions, across blocks
    if (st.try_dnn) os << " (cuDNN)";
    if (!st.kernel.empty()) os << " {" << st.kernel << "}";
    os << "\n";
  }
  return os.str();
}

std::string unsupported_reason(const FunctionGraph& fg) {
  // Slice bounds and reshape targets must be known on the host before launching anything.
  std::set<const Node*> host;
  for (const NodePtr& n : fg.toposort()) {
    bool h = false;
    if (n->kind == NodeKind::Input || n->kind == NodeKind::Constant) {
      h = n->type.ndim() == 0 || n->kind == NodeKind::Constant;  // bounds: any constant
    } else if (n->kind == NodeKind::Apply) {
      const OpTraits tr = n->op->traits();
      bool all = std::all_of(n->inputs.begin(), n->inputs.end(),
                             [&](const NodePtr& i) { return host.count(i.get()) > 0; });
      h = tr.shape_only || (all && (tr.elementwise || tr.view) && is_scalar_like(n->type));
      for (int vi : n->op->value_inputs()) {
        const NodePtr& in = n->inputs.at(static_cast<std::size_t>(vi));
        if (!host.count(in.get()))
          return "[" + n->op->str() + "] " + n->describe() + " needs the value of " +
                 in->describe() +
                 " to know its shape, but that value is computed on the GPU; the cuda backend "
                 "takes such bounds from inputs, constants and scalar arithmetic on them";
      }
    }
    if (h) host.insert(n.get());
  }
  return {};
}

bool skinny_gemm_enabled() {
  const char* v = std::getenv("THEA_CUDA_SKINNY_GEMM");
  return !(v && (std::string(v) == "0" || std::string(v) == "off"));
}

bool row_total_fusion_enabled() {
  const char* v = std::getenv("THEA_CUDA_FUSE_TOTAL");
  return !(v && (std::string(v) == "0" || std::string(v) == "off"));
}

bool skinny_fusion_enabled() {
  const char* v = std::getenv("THEA_CUDA_SKINNY_GEMM");
  return skinny_gemm_enabled() && !(v && std::string(v) == "nofuse");
}

bool schedule_lowering_enabled() {
  const char* v = std::getenv("THEA_CUDA_LOWERING");
  if (!v || !*v || std::string(v) == "schedule") return true;
  if (std::string(v) == "legacy") return false;
  throw Error(std::string("THEA_CUDA_LOWERING=") + v +
              ": unknown cuda lowering (expected \"schedule\", the default, or \"legacy\")");
}

Plan lower(const FunctionGraph& fg) { return Lowering(fg).run(); }

}  // namespace thea::cuda
