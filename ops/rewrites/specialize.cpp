// specialize: map patterns onto library calls. a·dot(A, B) + b·C becomes one Gemm
// (beta·C + alpha·op(A)·op(B)), transposes become Gemm flags instead of copies, and the
// SGD update w - lr·dot(Xᵀ, G) becomes a Gemm that compiled backends run in place in w's
// buffer when nothing reads w after it.
#include <memory>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "rewrite_util.hpp"
#include "thea/ops/api.hpp"
#include "thea/ops/fused.hpp"

namespace thea::rw {

namespace {

using Clients = std::unordered_map<const Node*, std::vector<NodePtr>>;

// Everything the pass needs to know about who reads a node: its clients and whether it
// is an output or update value (an implicit reader).
struct Readers {
  Clients clients;
  std::unordered_set<const Node*> roots;

  explicit Readers(const FunctionGraph& fg) : clients(fg.clients()) {
    for (const NodePtr& r : fg.roots()) roots.insert(r.get());
  }
  bool alive(const NodePtr& n) const { return clients.count(n.get()) || roots.count(n.get()); }
  // Read by exactly one node and not an output: it dies when that node is replaced.
  bool single_reader(const NodePtr& n) const {
    auto it = clients.find(n.get());
    return !roots.count(n.get()) && it != clients.end() && it->second.size() == 1;
  }
};

// A term `coef * f1 * ... * fk * base` with 0-d scalar factors fi: how a scaled product or
// a scaled accumulator appears under neg and mul-by-scalar nodes.
struct Scaled {
  NodePtr base;
  double coef = 1;
  std::vector<NodePtr> factors;  // 0-d, of the term's dtype
  bool single_use = true;        // every node from the term down to base has one reader
};

// s as a scalar factor of mul(s, other) -> out: all its axes are broadcastable and it
// does not broadcast `other` up (out has other's type). Constants go into coef.
bool take_scalar(const NodePtr& s, const NodePtr& other, const NodePtr& out, Scaled& t) {
  if (!fits_type(other->type, out->type)) return false;
  for (std::int64_t d : s->type.shape)
    if (d != 1) return false;
  if (auto v = uniform_constant(s)) {
    t.coef *= *v;
    return true;
  }
  NodePtr scalar = s;
  const DimShuffle* ds = op_as<DimShuffle>(s);
  if (ds && s->inputs[0]->type.ndim() == 0) scalar = s->inputs[0];  // lr[None, None]
  if (scalar->type.ndim() != 0 || scalar->type.dtype != out->type.dtype) return false;
  t.factors.push_back(scalar);
  return true;
}

Scaled decompose(const NodePtr& n, const Readers& readers) {
  Scaled t;
  t.base = n;
  for (;;) {
    const NodePtr b = t.base;
    Scaled next = t;
    if (is_elemwise(b, ScalarOp::Neg)) {
      next.coef = -next.coef;
      next.base = b->inputs[0];
    } else if (is_elemwise(b, ScalarOp::Mul)) {
      if (take_scalar(b->inputs[1], b->inputs[0], b, next)) {
        next.base = b->inputs[0];
      } else if (next = t; take_scalar(b->inputs[0], b->inputs[1], b, next)) {
        next.base = b->inputs[1];
      } else {
        break;
      }
    } else {
      break;
    }
    next.single_use = t.single_use && readers.single_reader(next.base);
    t = std::move(next);
  }
  return t;
}

// The product under a term: a matrix-matrix Dot, or a Gemm without accumulation.
bool is_product(const NodePtr& n) {
  if (op_as<Dot>(n)) {
    return n->inputs[0]->type.ndim() == 2 && n->inputs[1]->type.ndim() == 2 &&
           n->inputs[0]->type.dtype == n->type.dtype && n->inputs[1]->type.dtype == n->type.dtype &&
           is_float(n->type.dtype);
  }
  const Gemm* g = op_as<Gemm>(n);
  return g && !g->accumulate();
}

// x -> (X, !trans) when x is the transpose view X.T.
void peel_transpose(NodePtr& x, bool& trans) {
  const DimShuffle* ds = op_as<DimShuffle>(x);
  if (ds && ds->pattern() == std::vector<int>{1, 0}) {
    x = x->inputs[0];
    trans = !trans;
  }
}

struct Operands {
  NodePtr a, b;
  bool trans_a = false, trans_b = false;
  Variable alpha;  // the product's own factor (a product-only Gemm's alpha), or empty
};

Operands product_operands(const NodePtr& p) {
  Operands o;
  o.a = p->inputs[0];
  o.b = p->inputs[1];
  if (const Gemm* g = op_as<Gemm>(p)) {
    o.trans_a = g->trans_a();
    o.trans_b = g->trans_b();
    o.alpha = Variable(p->inputs[Gemm::kAlpha]);
  }
  peel_transpose(o.a, o.trans_a);
  peel_transpose(o.b, o.trans_b);
  return o;
}

Variable scalar_constant(double v, Dtype d) {
  return Variable(make_constant(Tensor::scalar(v, d)));
}

// coef * f1 * ... * fk (times `extra` when set) as a 0-d variable of dtype d.
Variable scalar_of(const Scaled& t, Dtype d, const Variable& extra = Variable()) {
  Variable r = extra;
  for (const NodePtr& f : t.factors) r = r ? mul(r, Variable(f)) : Variable(f);
  if (!r) return scalar_constant(t.coef, d);
  if (t.coef == 1) return r;
  if (t.coef == -1) return neg(r);
  return mul(r, scalar_constant(t.coef, d));
}

// n = add(x, y) or sub(x, y) with one side a scaled product: the Gemm replacing it.
NodePtr match_gemm(const NodePtr& n, const Readers& readers) {
  const bool is_sub = is_elemwise(n, ScalarOp::Sub);
  if (!is_sub && !is_elemwise(n, ScalarOp::Add)) return nullptr;
  if (n->type.ndim() != 2 || !is_float(n->type.dtype)) return nullptr;
  // Prefer the right operand as the product (w - lr * g reads that way).
  for (int side : {1, 0}) {
    const NodePtr& p_side = n->inputs[side];
    const NodePtr& c_side = n->inputs[1 - side];
    if (!readers.single_reader(p_side)) continue;
    Scaled p = decompose(p_side, readers);
    if (!p.single_use || !is_product(p.base) || !fits_type(p.base->type, n->type)) continue;
    Scaled c = decompose(c_side, readers);
    if (!fits_type(c.base->type, n->type)) continue;
    if (is_sub) (side == 1 ? p : c).coef *= -1;
    const Operands o = product_operands(p.base);
    const Dtype d = n->type.dtype;
    NodePtr repl = build_replacement(n, [&] {
      return gemm(Variable(c.base), scalar_of(p, d, o.alpha), Variable(o.a), Variable(o.b),
                  scalar_of(c, d), o.trans_a, o.trans_b)
          .node();
    });
    if (repl) return repl;
  }
  return nullptr;
}

// One sweep: replace every match, refreshing the readers after each replacement (the
// graphs are small; a stale map could fuse a product that gained a second reader).
bool gemm_pass(FunctionGraph& fg) {
  bool changed = false;
  Readers readers(fg);
  for (const NodePtr& n : fg.toposort()) {
    if (!readers.alive(n)) continue;
    NodePtr repl = match_gemm(n, readers);
    if (!repl) continue;
    fg.replace(n, repl, "gemm");
    readers = Readers(fg);
    changed = true;
  }
  return changed;
}

// dot(X.T, Y) / dot(X, Y.T) (matrices) -> gemm(1, X, Y, trans flags): no transpose copy.
NodePtr dot_transpose(FunctionGraph&, const NodePtr& n) {
  if (!op_as<Dot>(n) || !is_product(n)) return nullptr;
  const Operands o = product_operands(n);
  if (!o.trans_a && !o.trans_b) return nullptr;
  return build_replacement(n, [&] {
    return gemm(scalar_constant(1, n->type.dtype), Variable(o.a), Variable(o.b), o.trans_a,
                o.trans_b)
        .node();
  });
}

// The node whose buffer `n` reads: n itself, or what a chain of views looks through.
const Node* storage_root(const NodePtr& n) {
  const Node* m = n.get();
  while (m->kind == NodeKind::Apply && m->op->traits().view) m = m->inputs[0].get();
  return m;
}

// Whether overwriting shared variable w while computing v (= gemm(w, ...)) is invisible:
// every other reader of w, directly or through views, is an ancestor of v (so it has run
// before), no output or other update aliases w, and v's other operands do not read w.
bool safe_to_destroy(const FunctionGraph& fg, const NodePtr& w, const NodePtr& v) {
  for (int i = 0; i < static_cast<int>(v->inputs.size()); ++i)
    if (i != Gemm::kC && storage_root(v->inputs[i]) == w.get()) return false;
  for (const NodePtr& o : fg.outputs())
    if (storage_root(o) == w.get()) return false;
  for (const UpdatePair& u : fg.updates())
    if (u.value != v && storage_root(u.value) == w.get()) return false;
  std::unordered_set<const Node*> ancestors;
  for (const NodePtr& a : thea::toposort({v}))
    if (a != v) ancestors.insert(a.get());
  const Clients clients = fg.clients();
  std::vector<NodePtr> todo{w};
  while (!todo.empty()) {
    const NodePtr x = todo.back();
    todo.pop_back();
    auto it = clients.find(x.get());
    if (it == clients.end()) continue;
    for (const NodePtr& c : it->second) {
      if (c == v && x == w) continue;
      if (!ancestors.count(c.get())) return false;
      if (c->op->traits().view && c->inputs[0] == x) todo.push_back(c);
    }
  }
  return true;
}

// w <- gemm(w, ...) as an update: mark the Gemm as destroying w where safe_to_destroy.
bool gemm_inplace(FunctionGraph& fg) {
  bool changed = false;
  const std::vector<UpdatePair> updates = fg.updates();  // replace() edits the list
  for (const UpdatePair& u : updates) {
    const NodePtr& v = u.value;
    const Gemm* g = op_as<Gemm>(v);
    if (!g || !g->accumulate() || g->inplace() || v->inputs[Gemm::kC] != u.target) continue;
    if (!safe_to_destroy(fg, u.target, v)) continue;
    NodePtr repl = make_apply_at(
        std::make_shared<Gemm>(g->trans_a(), g->trans_b(), /*accumulate=*/true, /*inplace=*/true),
        v->inputs, v->site);
    fg.replace(v, repl, "gemm_inplace");
    changed = true;
  }
  return changed;
}

}  // namespace

void register_specialize_rewrites(RewriteRegistry& registry) {
  registry.add(
      {.name = "gemm", .tags = {"specialize"}, .order = 30, .local = nullptr, .global = gemm_pass});
  registry.add({.name = "dot_transpose",
                .tags = {"specialize"},
                .order = 31,
                .local = dot_transpose,
                .global = nullptr});
  registry.add({.name = "gemm_inplace",
                .tags = {"specialize", "inplace"},
                .order = 39,
                .local = nullptr,
                .global = gemm_inplace});
}

}  // namespace thea::rw
