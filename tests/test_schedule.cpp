// Structural tests of the schedule (which nodes fuse into which kernel) and of the memory
// plan (liveness, arena reuse, in-place updates). No kernels run here.
#include <doctest/doctest.h>

#include <algorithm>
#include <memory>
#include <thea/memplan.hpp>
#include <thea/ops/fused.hpp>
#include <thea/ops/ops.hpp>
#include <thea/schedule.hpp>
#include <thea/thea.hpp>

using namespace thea;
using namespace thea::sched;

namespace {

struct Built {
  std::unique_ptr<FunctionGraph> fg;
  Schedule s;
  MemPlan plan;
};

Built build(const std::vector<Variable>& ins, const std::vector<Variable>& outs,
            const Updates& ups = {}, bool rewrite = true, ScheduleOptions opts = {}) {
  std::vector<NodePtr> in, out;
  for (const Variable& v : ins) in.push_back(v.node());
  for (const Variable& v : outs) out.push_back(v.node());
  std::vector<UpdatePair> up;
  for (const auto& [t, v] : ups) up.push_back({t.node(), v.node()});
  Built b;
  b.fg = std::make_unique<FunctionGraph>(in, out, up);
  if (rewrite) run_rewrites(*b.fg);
  b.s = make_schedule(*b.fg, opts);
  b.plan = make_memplan(b.s);
  return b;
}

int count_kind(const Schedule& s, KernelKind kind) {
  return static_cast<int>(std::count_if(s.kernels.begin(), s.kernels.end(),
                                        [&](const Kernel& k) { return k.kind == kind; }));
}

int count_exprs(const Kernel& k, ExprKind kind) {
  return static_cast<int>(std::count_if(k.loop.exprs.begin(), k.loop.exprs.end(),
                                        [&](const Expr& e) { return e.kind == kind; }));
}

bool has_op(const Kernel& k, const std::string& name) {
  for (const NodePtr& n : k.nodes)
    if (n->op->name() == name) return true;
  return false;
}

}  // namespace

TEST_CASE("an elementwise chain is one loop kernel that stores only its result") {
  auto x = fmatrix("x");
  auto y = fmatrix("y");
  auto out = exp(x) * 2.0 + y;
  Built b = build({x, y}, {out});
  REQUIRE(b.s.kernels.size() == 1);
  const Kernel& k = b.s.kernels[0];
  CHECK(k.kind == KernelKind::Loop);
  CHECK(k.loop.stores.size() == 1);
  CHECK(k.writes.size() == 1);
  CHECK(k.loop.passes == 1);
  CHECK(std::none_of(k.loop.inner.begin(), k.loop.inner.end(), [](bool b) { return b; }));
}

TEST_CASE("a reduction fuses with its elementwise producer and consumer") {
  auto x = fmatrix("x");
  auto out = log(sum(exp(x), 1)) * 2.0;
  Built b = build({x}, {out});
  REQUIRE(b.s.kernels.size() == 1);
  const Kernel& k = b.s.kernels[0];
  CHECK(k.loop.inner == std::vector<bool>{false, true});
  CHECK(count_exprs(k, ExprKind::Reduce) == 1);
  CHECK(has_op(k, "exp"));
  CHECK(has_op(k, "sum"));
  CHECK(has_op(k, "log"));
}

TEST_CASE("softmax and cross-entropy of the same logits share one kernel and one max") {
  auto z = fmatrix("z");
  auto y = fmatrix("y");
  auto p = nnet::softmax(z);
  auto loss = nnet::categorical_crossentropy(p, y);
  Built b = build({z, y}, {p, mean(loss)});
  REQUIRE(b.s.kernels.size() == 1);
  const Kernel& k = b.s.kernels[0];
  CHECK(has_op(k, "crossentropy_softmax"));  // the stabilize rewrite's fused op
  CHECK(has_op(k, "softmax"));
  // One max and one sum of exp shared through expression merging, plus the loss sum and
  // the mean's final reduction.
  int maxes = 0;
  for (const Expr& e : k.loop.exprs)
    if (e.kind == ExprKind::Reduce && e.reduce == ReduceKind::Max) ++maxes;
  CHECK(maxes == 1);
  CHECK(k.loop.has_final);
}

TEST_CASE("a whole-array reduction feeding the full domain splits into two kernels") {
  auto x = fmatrix("x");
  auto out = x - mean(x);
  Built b = build({x}, {out});
  CHECK(b.s.kernels.size() == 2);
  CHECK(count_kind(b.s, KernelKind::Loop) == 2);
  CHECK(b.s.kernels[0].loop.has_final);
}

TEST_CASE("a row reduction feeding the full domain stays in one kernel with two passes") {
  auto x = fmatrix("x");
  auto out = x - max(x, 1, true);
  Built b = build({x}, {out});
  REQUIRE(b.s.kernels.size() == 1);
  CHECK(b.s.kernels[0].loop.passes == 2);
}

TEST_CASE("scalars such as 1/n are recomputed inside kernels, not scheduled") {
  auto x = fvector("x");
  auto out = x * (1.0 / cast(size_of(x), Dtype::Float32));
  Built b = build({x}, {out});
  REQUIRE(b.s.kernels.size() == 1);
  CHECK(count_exprs(b.s.kernels[0], ExprKind::Count) == 1);
}

TEST_CASE("products become gemm kernels; transposed operands are folded, not copied") {
  auto x = fmatrix("x");
  auto g = fmatrix("g");
  Built b = build({x, g}, {dot(x.T(), g)});
  REQUIRE(b.s.kernels.size() == 1);
  const Kernel& k = b.s.kernels[0];
  CHECK(k.kind == KernelKind::Gemm);
  CHECK(k.gemm.trans_a);
  CHECK_FALSE(k.gemm.trans_b);
  CHECK(b.s.buffers[k.gemm.a].kind == BufferKind::Input);
}

TEST_CASE("the MNIST train step: gemm, one fused loop, in-place gemm update") {
  auto X = fmatrix("X");
  auto Y = fmatrix("Y");
  auto w = shared(Tensor::zeros({784, 10}), "w");
  auto cost = mean(nnet::categorical_crossentropy(nnet::softmax(dot(X, w)), Y));
  auto g = grad(cost, w);
  Built b = build({X, Y}, {cost}, {{w, w - g * 0.05}});
  REQUIRE(b.s.kernels.size() == 3);
  CHECK(b.s.kernels[0].kind == KernelKind::Gemm);
  CHECK(b.s.kernels[1].kind == KernelKind::Loop);
  CHECK(b.s.kernels[2].kind == KernelKind::Gemm);
  CHECK(has_op(b.s.kernels[2], "gemm"));
  CHECK(b.s.kernels[2].gemm.trans_a);
  REQUIRE(b.plan.update_inplace.size() == 1);
  CHECK(b.plan.update_inplace[0]);
  // The cost is written straight into the caller's output tensor.
  CHECK(b.plan.buffers[b.s.outputs[0]].placement == Placement::Output);
  // The batch size is one run-time symbol shared by X, Y and the logits.
  CHECK(b.s.num_syms == 1);
  // Max, then the sum of exp, then the gradient: the constant 1/n of the mean's gradient
  // (second(cost, 1/n)) does not wait for the cost's sweep.
  CHECK(b.s.kernels[1].loop.passes == 3);
  // All three may run as one pass over the rows of X.
  REQUIRE(b.s.row_chains.size() == 1);
  CHECK(b.s.row_chains[0].gemm == 0);
  CHECK(b.s.row_chains[0].loop == 1);
  CHECK(b.s.row_chains[0].reduce_gemm == 2);
}

TEST_CASE("row chains: a product with a row loop on its rows; not when the loop crosses rows") {
  auto X = fmatrix("X");
  auto w = shared(Tensor::zeros({784, 10}), "w");
  Built pred = build({X}, {argmax(dot(X, w), 1)});
  REQUIRE(pred.s.row_chains.size() == 1);
  CHECK(pred.s.row_chains[0].gemm == 0);
  CHECK(pred.s.row_chains[0].loop == 1);
  CHECK(pred.s.row_chains[0].reduce_gemm == -1);
  // Columns of the product (a reduction over its rows) need every part's rows first.
  Built cols = build({X}, {argmax(dot(X, w), 0)});
  CHECK(cols.s.row_chains.empty());
  // The transposed product's rows are not the loop's rows either.
  Built trans = build({X}, {nnet::softmax(dot(X, w).T())});
  CHECK(trans.s.row_chains.empty());
}

TEST_CASE("without fusion every node is its own kernel") {
  auto x = fmatrix("x");
  auto out = tanh(exp(x) * 2.0);
  ScheduleOptions opts;
  opts.fuse = false;
  Built b = build({x}, {out}, {}, true, opts);
  CHECK(b.s.kernels.size() == 3);
}

TEST_CASE("in-place updates: only where every old element is read before it is written") {
  auto x = fmatrix("x");
  auto w = shared(Tensor::zeros({4, 4}), "w");
  SUBCASE("elementwise update: in place") {
    Built b = build({x}, {}, {{w, w - x * 0.5}});
    REQUIRE(b.plan.update_inplace.size() == 1);
    CHECK(b.plan.update_inplace[0]);
  }
  SUBCASE("transposed read of the old value: copied") {
    Built b = build({x}, {}, {{w, w.T() + x}});
    CHECK_FALSE(b.plan.update_inplace[0]);
  }
  SUBCASE("old value returned as an output: copied") {
    Built b = build({x}, {w * 2.0, w}, {{w, w + x}});
    CHECK_FALSE(b.plan.update_inplace[0]);
  }
}

TEST_CASE("arena layout: dead temporaries share memory, live ones never overlap") {
  auto x = fvector("x");
  // t1 -> t2 -> t3 -> out through host steps (concatenate is not a loop op), so each is a
  // separate buffer with a short lifetime.
  auto t1 = concatenate({x, x});
  auto t2 = concatenate({t1, t1});
  auto t3 = concatenate({t2, t2});
  auto out = concatenate({t3, t3});
  Built b = build({x}, {out});
  std::vector<std::int64_t> bytes(b.s.buffers.size(), 4096);
  ArenaLayout lay = layout_arena(b.plan, bytes);
  // t1 (dead after t2 is made) and t3 can share an offset; t1 and t2 cannot.
  int n_arena = 0;
  for (std::size_t i = 0; i < b.s.buffers.size(); ++i)
    if (b.plan.buffers[i].placement == Placement::Arena) ++n_arena;
  CHECK(n_arena == 3);
  CHECK(lay.size < 3 * 4096);
  for (std::size_t i = 0; i < b.s.buffers.size(); ++i)
    for (std::size_t j = i + 1; j < b.s.buffers.size(); ++j) {
      const BufferPlan& p = b.plan.buffers[i];
      const BufferPlan& q = b.plan.buffers[j];
      if (p.placement != Placement::Arena || q.placement != Placement::Arena) continue;
      bool overlap_time = !(p.last < q.first || q.last < p.first);
      if (overlap_time) CHECK(lay.offset[i] != lay.offset[j]);
    }
}

TEST_CASE("lifetime layout: overlapping lifetimes never share bytes, aligned, ends inclusive") {
  // Random lifetimes over 12 steps (the cuda backend's device values), checked pairwise.
  std::uint64_t state = 12345;
  auto next = [&](int mod) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<int>((state >> 33) % static_cast<std::uint64_t>(mod));
  };
  for (int round = 0; round < 50; ++round) {
    std::vector<ArenaItem> items(20);
    for (ArenaItem& it : items) {
      it.first = next(13) - 1;
      it.last = it.first + next(5);
      it.nbytes = next(4) == 0 ? -1 : next(3000);  // some not in the arena, some empty
    }
    const ArenaLayout lay = layout_lifetimes(items, 256);
    std::int64_t sum = 0;
    for (std::size_t i = 0; i < items.size(); ++i) {
      const ArenaItem& a = items[i];
      if (a.nbytes < 0) {
        CHECK(lay.offset[i] == -1);
        continue;
      }
      CHECK(lay.offset[i] % 256 == 0);
      const std::int64_t a_end = lay.offset[i] + std::max<std::int64_t>(a.nbytes, 1);
      CHECK(a_end <= lay.size);
      sum += (std::max<std::int64_t>(a.nbytes, 1) + 255) / 256 * 256;
      for (std::size_t j = i + 1; j < items.size(); ++j) {
        const ArenaItem& b = items[j];
        if (b.nbytes < 0) continue;
        const bool same_time = !(a.last < b.first || b.last < a.first);
        const std::int64_t b_end = lay.offset[j] + std::max<std::int64_t>(b.nbytes, 1);
        const bool same_bytes = lay.offset[i] < b_end && lay.offset[j] < a_end;
        CHECK_FALSE((same_time && same_bytes));
      }
    }
    CHECK(lay.size <= sum);
  }
  // A step's input and output (first of one == last of the other) get separate bytes.
  const ArenaLayout lay = layout_lifetimes({{-1, 2, 100}, {2, 3, 100}, {3, 4, 100}}, 64);
  CHECK(lay.offset[0] != lay.offset[1]);
  CHECK(lay.offset[1] != lay.offset[2]);
  CHECK(lay.offset[2] == lay.offset[0]);  // the first is dead by step 3
  CHECK(lay.size == 256);                 // three items in two blocks
}

TEST_CASE("a value is fused only where it is computed once per point of its loop level") {
  // mul(w, 2) is (1, 2); add(w, e) is (?, 1, 2): in one loop over (?, 1, 2) the product would
  // be computed once per row of e, and never when e has no rows.
  auto w = shared(Tensor::zeros({1, 2}), "w");
  auto e = tensor(Dtype::Float32, Shape{kUnknownDim, 1, 2}, "e");
  Built b = build({e}, {add(w, e), mul(w, 2.0)});
  REQUIRE(b.s.kernels.size() == 2);
  for (const Kernel& k : b.s.kernels) CHECK(k.nodes.size() == 1);
  // After a row reduction, per-row values join the loop; a value varying along only part of
  // the reduced axes does not.
  auto x = fmatrix("x");
  Built rows = build({x}, {x / sum(x, 1, true) + 1.0});
  CHECK(rows.s.kernels.size() == 1);
}

TEST_CASE("row chains: independent kernels between the members move before the product") {
  // The resident-data training step: the slice of trY is scheduled between the forward
  // product and the loop that reads it.
  auto trX = shared(Tensor::zeros({256, 784}), "trX");
  auto trY = shared(Tensor::zeros({256, 10}), "trY");
  auto w = shared(Tensor::zeros({784, 10}), "w");
  auto i = lscalar("i");
  auto X = subtensor(trX, {Slice(i * 128, (i + 1) * 128)});
  auto Y = subtensor(trY, {Slice(i * 128, (i + 1) * 128)});
  auto cost = mean(nnet::categorical_crossentropy(nnet::softmax(dot(X, w)), Y));
  Built b = build({i}, {cost}, {{w, w - grad(cost, w) * 0.05}});
  REQUIRE(b.s.row_chains.size() == 1);
  const RowChain& c = b.s.row_chains[0];
  CHECK(c.loop == c.gemm + 1);
  CHECK(c.reduce_gemm == c.gemm + 2);
  CHECK(b.s.kernels[c.gemm].gemm.a == b.s.kernels[c.reduce_gemm].gemm.a);
  // Every kernel still runs after the kernels it reads from.
  for (std::size_t k = 0; k < b.s.kernels.size(); ++k)
    for (int r : b.s.kernels[k].reads) {
      int root = r;
      while (b.s.buffers[root].kind == BufferKind::View) root = b.s.buffers[root].base;
      CHECK(b.s.buffers[root].producer < static_cast<int>(k));
    }
}

TEST_CASE(
    "a whole-array mean over a value with a size-1 axis is a final reduction, not a host step") {
  // The final reduction covers each point once: a static size-1 axis has a single point, so
  // the value need not vary along it (it used to fall back to the op's perform on the host).
  auto x = tensor(Dtype::Float32, Shape{1, -1}, "x");
  auto y = fmatrix("y");
  Built b = build({x, y}, {mean(sqr(x)), y + mean(sqr(x * 2.0f))});
  INFO(b.s.describe());
  CHECK(count_kind(b.s, KernelKind::Host) == 0);
  int finals = 0;
  for (const Kernel& k : b.s.kernels)
    for (const Expr& e : k.loop.exprs) finals += e.kind == ExprKind::Reduce && e.final;
  CHECK(finals == 2);  // both means, in one kernel here
}
