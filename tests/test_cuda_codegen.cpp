// Every kind of kernel the CUDA renderer produces, for every op and dtype: compiled by
// NVRTC to sm_90 cubin (no GPU needed) and run on the SIMT emulator against the reference
// backend. Also structural checks of the lowering (fusion, in-place updates, kernel counts).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "test_cuda_cases.hpp"
#include "thea/thea.hpp"

#if THEA_HAVE_CUDA
#include "cuda/codegen.hpp"
#include "cuda/cuda_backend.hpp"
#include "cuda/lower.hpp"
#include "cuda/nvrtc_compiler.hpp"
#include "thea/ops/fused.hpp"
#include "thea/ops/ops.hpp"
#include "thea/schedule.hpp"

using namespace thea;
using namespace thea::cuda_tests;

namespace {

void register_emu() {
  static bool done = [] {
    register_backend("cuda_emu", &make_cuda_emu_backend);
    return true;
  }();
  (void)done;
}

// The CUDA backend's plan for a case's outputs.
cuda::Plan lower_case(const Case& c) {
  std::vector<NodePtr> ins, outs;
  for (const Variable& v : c.inputs) ins.push_back(v.node());
  for (const Variable& v : c.outputs) outs.push_back(v.node());
  FunctionGraph fg(ins, outs, {});
  return cuda::lower(fg);
}

void compile_nvrtc(const Case& c, const std::string& what) {
  cuda::Plan plan = lower_case(c);
  REQUIRE_FALSE(plan.source.empty());
  auto out = cuda::compile_cuda(cuda::nvrtc_source(plan.source), {90, true},
                                cuda::default_nvrtc_options(), nullptr, what);
  CHECK(cuda::cubin_arch(out.binary) == 90);
  for (const cuda::Step& st : plan.steps)
    if (!st.kernel.empty()) CHECK(out.binary.find(st.kernel) != std::string::npos);
}

void compare_emu(const Case& c, double rtol, double atol) {
  register_emu();
  compare_backends(c, "cuda_emu", rtol, atol);
}

}  // namespace

TEST_CASE("every elementwise op and reduction compiles to sm_90 for every dtype") {
  for (Dtype d : kDtypes) {
    CAPTURE(dtype_name(d));
    compile_nvrtc(elementwise_case(d), std::string("elementwise_") + dtype_name(d));
  }
}

TEST_CASE("nnet, one_hot, dot and view kernels compile to sm_90") {
  for (Dtype d : {Dtype::Float32, Dtype::Float64}) {
    CAPTURE(dtype_name(d));
    compile_nvrtc(float_case(d), std::string("nnet_") + dtype_name(d));
  }
  compile_nvrtc(int_dot_case(), "int_dot");
}

TEST_CASE("take and inc_rows compile to sm_90 for every dtype") {
  for (Dtype d : kDtypes) {
    CAPTURE(dtype_name(d));
    Case c = gather_scatter_case(d);
    compile_nvrtc(c, std::string("gather_scatter_") + dtype_name(d));
    // Both run on the device: nothing blocks graph capture.
    cuda::Plan plan = lower_case(c);
    int takes = 0, incs = 0;
    for (const cuda::Step& st : plan.steps) {
      CHECK_MESSAGE(st.kind != cuda::StepKind::HostOp, st.node->describe());
      takes += st.kind == cuda::StepKind::Take;
      incs += st.kind == cuda::StepKind::IncRows;
    }
    CHECK(takes >= 5);
    CHECK(incs >= (d == Dtype::Bool ? 0 : 5));
  }
}

TEST_CASE(
    "lowering: a softmax that is a kernel of its own goes to cuDNN unless THEA_CUDA_CUDNN=0") {
  // The H200 measured cuDNN faster for such softmaxes; fused ones stay in thea's kernels.
  Variable x = fmatrix("x"), d = dmatrix("d");
  Variable i = iscalar("i");
  struct Seen {
    int softmax_steps = 0, dnn_steps = 0;
  };
  auto lower_outputs = [&](const Variable& out) {
    FunctionGraph fg({x.node(), d.node(), i.node()}, {out.node()}, {});
    Seen seen;
    for (const cuda::Step& st : cuda::lower(fg).steps) {
      seen.softmax_steps += dynamic_cast<const Softmax*>(st.node->op.get()) != nullptr;
      seen.dnn_steps += st.try_dnn;
    }
    return seen;
  };
  for (const char* lowering : kLowerings) {
    CAPTURE(lowering);
    ScopedEnv env("THEA_CUDA_LOWERING", lowering);
    Seen alone = lower_outputs(nnet::softmax(x));
    CHECK(alone.softmax_steps == 1);
    CHECK(alone.dnn_steps == 1);
    CHECK(lower_outputs(nnet::log_softmax(x)).dnn_steps == 1);
    CHECK(lower_outputs(nnet::softmax(d)).dnn_steps == 1);
    // An input expression fused into the softmax's kernel: thea's kernel.
    CHECK(lower_outputs(nnet::softmax(exp(x) * 2.0f)).dnn_steps == 0);
    // Rows sliced from a start given per call: cuDNN would keep the first call's address in
    // a replayed graph; thea's kernel reads it per call.
    Seen sliced =
        lower_outputs(nnet::softmax(subtensor(x, {Slice(i, i + Variable(std::int64_t{4}))})));
    CHECK(sliced.softmax_steps == 1);
    CHECK(sliced.dnn_steps == 0);
    ScopedEnv no_dnn("THEA_CUDA_CUDNN", "0");
    Seen off = lower_outputs(nnet::softmax(x));
    CHECK(off.softmax_steps == 1);
    CHECK(off.dnn_steps == 0);
  }
}

TEST_CASE("skinny gemm kernels compile to sm_90: float dtypes, 1 to 32 columns") {
  for (Dtype d : {Dtype::Float32, Dtype::Float64})
    for (std::int64_t n : {1, 10, 32}) {
      CAPTURE(dtype_name(d));
      CAPTURE(n);
      Case c = skinny_gemm_case(d, 5, 37, n);
      compile_nvrtc(c, std::string("skinny_gemm_") + dtype_name(d) + "_" + std::to_string(n));
      // Every product is a generated kernel: no cuBLAS pointer arrays, no operand copies.
      cuda::Plan plan = lower_case(c);
      INFO(plan.describe());
      int skinny = 0;
      for (const cuda::Step& st : plan.steps) {
        CHECK(st.kind != cuda::StepKind::Copy);
        CHECK(st.kind != cuda::StepKind::HostOp);
        if (st.kind != cuda::StepKind::Gemm) continue;
        CHECK(st.skinny);
        CHECK_FALSE(st.indirect);
        CHECK_FALSE(st.kernel.empty());
        ++skinny;
      }
      CHECK(skinny == 10);
    }
}

TEST_CASE("lowering: the tutorial step's products are skinny kernels reading the slice in place") {
  // THEA_CUDA_SKINNY_GEMM unset: the row kernel computes the logits itself (and the mean
  // cost), the update is a skinny kernel; "nofuse": two skinny kernels; "0": cuBLAS through
  // pointer arrays. Legacy lowering, THEA_CUDA_FUSE_TOTAL=0: the mean is a reduce kernel.
  auto lower_step = [](std::int64_t classes, const char* skinny, bool fuse_total = true) {
    ScopedEnv skinny_env("THEA_CUDA_SKINNY_GEMM", skinny);
    ScopedEnv total_env("THEA_CUDA_FUSE_TOTAL", fuse_total ? nullptr : "0");
    const std::int64_t bs = 128;
    Variable trX = shared(Tensor::zeros({1024, 784}), "trX");
    Variable trY = shared(Tensor::zeros({1024, classes}), "trY");
    Variable w = shared(Tensor::zeros({784, classes}), "w");
    Variable i = lscalar("i");
    Variable X = subtensor(trX, {Slice(i * bs, (i + 1) * bs)});
    Variable Y = subtensor(trY, {Slice(i * bs, (i + 1) * bs)});
    Variable cost = mean(nnet::categorical_crossentropy(nnet::softmax(dot(X, w)), Y));
    Variable g = grad(cost, w);
    FunctionGraph fg({i.node()}, {cost.node()}, {{w.node(), (w - g * 0.05f).node()}});
    run_rewrites(fg);
    return cuda::lower(fg);
  };
  struct Count {
    int gemms = 0, skinny = 0, indirect = 0, inplace = 0, prologues = 0, copies = 0, totals = 0;
  };
  auto count = [](const cuda::Plan& plan) {
    Count c;
    for (const cuda::Step& st : plan.steps) {
      CHECK(st.kind != cuda::StepKind::HostOp);
      c.copies += st.kind == cuda::StepKind::Copy;
      // The mean of the rows' costs added up by the kernel computing them.
      c.totals += st.total >= 0 || st.loop_scratch_words >= 0;
      if ((st.kind == cuda::StepKind::RowGroup || st.kind == cuda::StepKind::Loop) &&
          st.prologue >= 0) {
        ++c.prologues;
        // The logits are never stored; the slice is read through its per-call pointer.
        CHECK(plan.values[st.prologue].place == cuda::Place::Inline);
        CHECK(plan.values[st.gemm_a].dynamic);
        CHECK(plan.values[st.gemm_a].ptr_slot >= 0);
      }
      if (st.kind != cuda::StepKind::Gemm) continue;
      ++c.gemms;
      c.skinny += st.skinny;
      c.indirect += st.indirect;
      c.inplace += st.target >= 0;
    }
    return c;
  };
  for (const char* lowering : kLowerings) {
    CAPTURE(lowering);
    ScopedEnv env("THEA_CUDA_LOWERING", lowering);
    const bool legacy = std::string(lowering) == "legacy";
    {
      cuda::Plan plan = lower_step(10, nullptr);
      INFO(plan.describe());
      Count c = count(plan);
      CHECK(c.prologues == 1);
      CHECK(c.gemms == 1);
      CHECK(c.skinny == 1);
      CHECK(c.inplace == 1);
      CHECK(c.indirect == 0);
      CHECK(c.copies == 0);
      CHECK(c.totals == 1);
      // The row kernel (with the product and the mean), the in-place update.
      CHECK(plan.kernel_launches() == 2);
      CHECK(plan.steps.size() == 2);
      CHECK(plan.steps[0].kind == (legacy ? cuda::StepKind::RowGroup : cuda::StepKind::Loop));
      CHECK(plan.describe().find("with dot") != std::string::npos);
      CHECK(plan.describe().find(legacy ? "with mean of rows" : "with totals") !=
            std::string::npos);
    }
    if (legacy) {
      cuda::Plan plan = lower_step(10, nullptr, false);
      INFO(plan.describe());
      Count c = count(plan);
      CHECK(c.prologues == 1);
      CHECK(c.totals == 0);
      CHECK(plan.kernel_launches() == 3);  // the row kernel, the mean, the update
    }
    {
      cuda::Plan plan = lower_step(10, "nofuse");
      INFO(plan.describe());
      Count c = count(plan);
      CHECK(c.prologues == 0);
      CHECK(c.gemms == 2);
      CHECK(c.skinny == 2);
      CHECK(c.inplace == 1);
      CHECK(c.indirect == 0);
      CHECK(c.copies == 0);
      CHECK(c.totals == 1);
      CHECK(plan.kernel_launches() == 3);
    }
    for (const char* skinny : {"0", "off"}) {
      CAPTURE(skinny);
      cuda::Plan plan = lower_step(10, skinny);
      INFO(plan.describe());
      Count c = count(plan);
      CHECK(c.prologues == 0);
      CHECK(c.gemms == 2);
      CHECK(c.skinny == 0);
      CHECK(c.indirect == 2);  // the slice's start is per call: cuBLAS reads pointer arrays
      CHECK(plan.describe().find("skinny") == std::string::npos);
    }
    {
      // More than 32 columns: cuBLAS, and no fusion.
      cuda::Plan plan = lower_step(33, nullptr);
      INFO(plan.describe());
      Count c = count(plan);
      CHECK(c.prologues == 0);
      CHECK(c.gemms == 2);
      CHECK(c.skinny == 0);
    }
  }
}

TEST_CASE("row kernels computing their product compile to sm_90: float dtypes, 2 to 32 columns") {
  // (One column is not a row group's matrix: a plain skinny gemm, compiled above.)
  for (Dtype d : {Dtype::Float32, Dtype::Float64})
    for (std::int64_t n : {2, 10, 32}) {
      CAPTURE(dtype_name(d));
      CAPTURE(n);
      Case c = row_gemm_case(d, 5, 37, n);
      for (const char* lowering : kLowerings) {
        CAPTURE(lowering);
        ScopedEnv env("THEA_CUDA_LOWERING", lowering);
        compile_nvrtc(c, std::string("row_gemm_") + dtype_name(d) + "_" + std::to_string(n));
        cuda::Plan plan = lower_case(c);
        INFO(plan.describe());
        int prologues = 0;
        for (const cuda::Step& st : plan.steps) prologues += st.prologue >= 0;
        CHECK(prologues >= 4);
      }
    }
}

TEST_CASE("random graphs' kernels compile to sm_90") {
  // NVRTC takes ~30 ms per kernel: one batch here; the GPU suite compiles hundreds.
  for (int start = 0; start < 12; start += 12) {
    std::vector<NodePtr> ins, outs;
    for (int k = start; k < start + 12; ++k) {
      RandomGraph g = random_graph(1000 + static_cast<std::uint64_t>(k));
      for (const Variable& v : g.inputs) ins.push_back(v.node());
      for (const Variable& v : g.outputs) outs.push_back(v.node());
    }
    FunctionGraph fg(ins, outs, {});
    run_rewrites(fg);
    cuda::Plan plan = cuda::lower(fg);
    auto out = cuda::compile_cuda(cuda::nvrtc_source(plan.source), {90, true},
                                  cuda::default_nvrtc_options(), nullptr, "random_graphs");
    CHECK(cuda::cubin_arch(out.binary) == 90);
  }
}

TEST_CASE("every elementwise op and reduction agrees with the reference on the emulator") {
  for (Dtype d : kDtypes) {
    CAPTURE(dtype_name(d));
    double tol = d == Dtype::Float32 ? 1e-5 : 1e-9;
    compare_emu(elementwise_case(d), tol, tol);
  }
}

TEST_CASE("nnet, one_hot and dot agree with the reference on the emulator") {
  compare_emu(float_case(Dtype::Float32), 1e-5, 1e-5);
  compare_emu(float_case(Dtype::Float64), 1e-9, 1e-9);
  compare_emu(int_dot_case(), 0, 0);
}

TEST_CASE("skinny gemm agrees with the reference on the emulator: odd, empty and single rows") {
  // (m, k, n): reductions not a multiple of 32, one row, no rows (an empty product and an
  // empty reduction writing beta * C), a k split over warps, grid-stride loops over rows
  // (the emulator has 2 SMs), wide mode-1 blocks (k >= 225 rows of X^T), the reduction of
  // X^T G split in 8 chunks (m = 130), 32 columns.
  for_float_shapes({{5, 37, 10},
                    {1, 33, 1},
                    {0, 7, 3},
                    {3, 0, 4},
                    {70, 9, 2},
                    {6, 300, 3},
                    {130, 20, 5},
                    {37, 70, 32}},
                   1e-5, skinny_gemm_case,
                   [](const Case& c, double tol) { compare_emu(c, tol, tol); });
}

TEST_CASE("row kernels computing their product agree with the reference on the emulator") {
  // (m, k, n): a reduction not a multiple of 32 and one split over 2 and 4 warps per row
  // (k = 300, 600), one row, no rows, an empty reduction, many rows (grid-stride loop).
  for_float_shapes(
      {{5, 37, 10}, {1, 33, 2}, {0, 7, 3}, {4, 0, 5}, {3, 300, 4}, {9, 600, 32}, {70, 9, 2}}, 1e-5,
      row_gemm_case, [](const Case& c, double tol) { compare_emu(c, tol, tol); });
}

TEST_CASE("row kernels adding up their rows agree with the reference on the emulator") {
  // No rows (a mean of nothing is NaN), one, a few, many (more blocks than the grid cap:
  // the grid-stride loop), long rows (several warps per row: the slots sit after the
  // all-reduce scratch).
  struct Shape2 {
    std::int64_t m, n;
  };
  for (Dtype d : {Dtype::Float32, Dtype::Float64})
    for (Shape2 s : {Shape2{0, 3}, Shape2{1, 10}, Shape2{5, 10}, Shape2{300, 3}, Shape2{7, 1000}}) {
      CAPTURE(dtype_name(d));
      CAPTURE(s.m);
      CAPTURE(s.n);
      for (bool shared_x : {false, true}) {
        CAPTURE(shared_x);
        Case c = row_total_case(d, s.m, s.n, shared_x);
        for (const char* lowering : kLowerings) {
          CAPTURE(lowering);
          ScopedEnv env("THEA_CUDA_LOWERING", lowering);
          cuda::Plan plan = lower_case(c);
          INFO(plan.describe());
          int totals = 0;
          for (const cuda::Step& st : plan.steps)
            totals += st.total >= 0 || st.loop_scratch_words >= 0;
          CHECK(totals == (shared_x ? 1 : 4));
          if (s.m == 5)  // the kernels are generic over sizes: one NVRTC compile per dtype / n
            compile_nvrtc(c, std::string("row_total_") + dtype_name(d));
          const double tol = d == Dtype::Float32 ? 1e-5 : 1e-9;
          compare_emu(c, tol, tol);
        }
      }
    }
}

TEST_CASE("take and inc_rows agree with the reference on the emulator, bit for bit") {
  // inc_rows adds duplicate rows in index order as the reference does: same rounding.
  for (Dtype d : kDtypes) {
    CAPTURE(dtype_name(d));
    compare_emu(gather_scatter_case(d), 0, 0);
  }
}

TEST_CASE("take/inc_rows indices out of range raise a ValueError naming the op") {
  register_emu();
  FunctionOptions eo;
  eo.backend = "cuda_emu";
  Variable x = fmatrix("x"), y = fmatrix("y");
  Variable i = lvector("i");
  Function t = function({x, i}, {take(x, i)}, {}, eo);
  Function r = function({x, i, y}, {inc_rows(x, i, y)}, {}, eo);
  Tensor xv = Tensor::random_normal({3, 2}, 0, 1, 1), yv = Tensor::random_normal({2, 2}, 0, 1, 2);
  Tensor good = Tensor::from_vector<std::int64_t>({2, -3});
  CHECK_NOTHROW(t({xv, good}));
  for (std::int64_t bad : {3, -4}) {
    CAPTURE(bad);
    Tensor iv = Tensor::from_vector<std::int64_t>({0, bad});
    CHECK_THROWS_WITH_AS(t({xv, iv}), doctest::Contains("take"), ValueError);
    CHECK_THROWS_WITH_AS(r({xv, iv, yv}), doctest::Contains("inc_rows"), ValueError);
    CHECK_THROWS_WITH_AS(r({xv, iv, yv}), doctest::Contains("out of range"), ValueError);
  }
  // Empty rows: the index is still checked.
  Tensor empty_rows = Tensor::zeros({3, 0});
  CHECK_THROWS_AS(t({empty_rows, Tensor::from_vector<std::int64_t>({5}, {1})}), ValueError);
  // The error is cleared: good calls work again, with the reference's values.
  CHECK(allclose(t({xv, good})[0], Tensor::from_list({{xv.get({2, 0}), xv.get({2, 1})},
                                                      {xv.get({0, 0}), xv.get({0, 1})}})));
}

TEST_CASE("inc_rows replayed: x copied into the output every call, also from a per-call slice") {
  register_emu();
  // x a function input, and x a slice of a shared table whose start changes per call (a
  // dynamic pointer: copied to a buffer of its own first, as a captured copy cannot follow it).
  Variable table = shared(Tensor::random_normal({9, 3}, 0, 1, 7), "table");
  Variable x = fmatrix("x"), y = fmatrix("y");
  Variable ids = lvector("ids"), k = lscalar("k");
  std::vector<Variable> outs = {inc_rows(x, ids, y),
                                inc_rows(subtensor(table, {Slice(k, k + 4)}), ids, y * 2.0f),
                                take(subtensor(table, {Slice(k, k + 4)}), ids)};
  FunctionOptions ro, eo;
  ro.backend = "reference";
  eo.backend = "cuda_emu";
  Function ref = function({x, ids, y, k}, outs, {}, ro);
  Function emu = function({x, ids, y, k}, outs, {}, eo);
  for (int call = 0; call < 5; ++call) {  // eager, capture, replays with new values
    CAPTURE(call);
    std::vector<Tensor> args = {Tensor::random_normal({4, 3}, 0, 1, 100 + call),
                                Tensor::from_vector<std::int64_t>({call % 4, 1, -1, call % 4, 2}),
                                Tensor::random_normal({5, 3}, 0, 1, 200 + call),
                                Tensor::scalar(call, Dtype::Int64)};
    auto want = ref(args), got = emu(args);
    for (std::size_t i = 0; i < want.size(); ++i) {
      CAPTURE(i);
      CHECK(allclose(got[i], want[i], 0, 0));
    }
  }
}

TEST_CASE("lowering: an embedding update is one in-place inc_rows kernel, replayed") {
  register_emu();
  // E <- inc_rows(E, ids, -lr * g): the rows the minibatch used, updated in E's own buffer.
  auto build = [](const std::string& backend, Variable* e_out) {
    Variable E = shared(Tensor::random_normal({7, 3}, 0, 1, 5), "E");
    Variable ids = lvector("ids"), t = fmatrix("t");
    Variable rows = take(E, ids);
    Variable cost = sum(sqr(rows - t));
    Variable g = grad(cost, rows);
    FunctionOptions o;
    o.backend = backend;
    *e_out = E;
    return function({ids, t}, {cost}, {{E, inc_rows(E, ids, g * -0.1f)}}, o);
  };
  Variable e_ref, e_emu;
  Function ref = build("reference", &e_ref), emu = build("cuda_emu", &e_emu);
  Tensor tv = Tensor::random_normal({4, 3}, 0, 1, 6);
  for (int call = 0; call < 4; ++call) {  // eager, capture, replays
    Tensor ids = Tensor::from_vector<std::int64_t>({call % 7, 2, -1, 2});
    CAPTURE(call);
    CHECK(emu({ids, tv})[0].item<double>() == doctest::Approx(ref({ids, tv})[0].item<double>()));
    CHECK(allclose(e_emu.get_value(), e_ref.get_value(), 1e-6, 1e-6));
  }

  Variable E = shared(Tensor::zeros({7, 3}), "E");
  Variable ids = lvector("ids"), y = fmatrix("y");
  FunctionGraph fg({ids.node(), y.node()}, {}, {{E.node(), inc_rows(E, ids, y).node()}});
  run_rewrites(fg);
  cuda::Plan plan = cuda::lower(fg);
  INFO(plan.describe());
  int inplace = 0;
  for (const cuda::Step& st : plan.steps) {
    CHECK(st.kind != cuda::StepKind::HostOp);
    CHECK(st.kind != cuda::StepKind::UpdateCopy);
    if (st.kind == cuda::StepKind::IncRows && st.target >= 0) ++inplace;
  }
  CHECK(inplace == 1);
}

TEST_CASE("bad labels raise a ValueError after the kernel ran") {
  register_emu();
  Variable x = fmatrix("x");
  Variable labels = ivector("labels");
  FunctionOptions eo;
  eo.backend = "cuda_emu";
  Function f =
      function({x, labels}, {nnet::categorical_crossentropy(nnet::softmax(x), labels)}, {}, eo);
  Tensor xv = Tensor::random_normal({3, 4}, 0, 1, 1);
  CHECK_NOTHROW(f({xv, Tensor::from_vector<std::int32_t>({0, 1, 3})}));
  try {
    f({xv, Tensor::from_vector<std::int32_t>({0, 4, 1})});
    FAIL("expected ValueError");
  } catch (const ValueError& e) {
    CHECK(std::string(e.what()).find("crossentropy") != std::string::npos);
    CHECK(std::string(e.what()).find("out of range") != std::string::npos);
  }
  // The error is cleared: the next good call works.
  CHECK_NOTHROW(f({xv, Tensor::from_vector<std::int32_t>({0, 1, 3})}));
}

TEST_CASE("lowering: fusion and the in-place SGD gemm") {
  Variable X = fmatrix("X"), Y = fmatrix("Y");
  Variable w = shared(Tensor::random_normal({784, 10}, 0, 0.01, 1), "w");
  Variable py = nnet::softmax(dot(X, w));
  Variable cost = mean(nnet::categorical_crossentropy(py, Y));
  Variable g = grad(cost, w);
  FunctionGraph fg({X.node(), Y.node()}, {cost.node()}, {{w.node(), (w - g * 0.05f).node()}});
  run_rewrites(fg);
  cuda::Plan plan = cuda::lower(fg);
  INFO(plan.describe());
  INFO(debugprint(fg.roots()));
  // The update is one gemm writing straight into w's buffer; the forward product is one
  // too, or computed by the row kernel (the default skinny-gemm fusion).
  int inplace = 0, gemms = 0;
  for (const cuda::Step& st : plan.steps) {
    if (st.kind == cuda::StepKind::Gemm || st.prologue >= 0) ++gemms;
    if (st.kind == cuda::StepKind::Gemm && st.target >= 0) {
      ++inplace;
      CHECK(st.gemm_c == st.target);
    }
    CHECK(st.kind != cuda::StepKind::HostOp);
    CHECK(st.kind != cuda::StepKind::UpdateCopy);
  }
  CHECK(gemms == 2);
  CHECK(inplace == 1);
  // Elementwise producers are fused: no kernel computes just log or exp.
  for (const cuda::Step& st : plan.steps)
    if (st.kind == cuda::StepKind::Map) CHECK(st.node->op->name() != "log");
}

TEST_CASE("lowering: a pure elementwise expression is one kernel") {
  Variable x = fmatrix("x"), y = fmatrix("y");
  Variable e = tanh(x * y + exp(x) - 3.0f) / (sqr(y) + 1.0f);
  FunctionGraph fg({x.node(), y.node()}, {e.node()}, {});
  cuda::Plan plan = cuda::lower(fg);
  CHECK(plan.kernel_launches() == 1);
  CHECK(plan.steps.at(0).fused.size() >= 7);
  // Contiguous operands over the same axes are read at the point's flat index: the kernel
  // never splits it into axis indices (64-bit divisions); a broadcast operand needs them.
  CHECK(plan.source.find("rem_o") == std::string::npos);
  Variable row = tensor(Dtype::Float32, Shape{1, -1}, "row");
  FunctionGraph bg({x.node(), row.node()}, {(x * row + 1.0f).node()}, {});
  const cuda::Plan broadcast = cuda::lower(bg);
  CHECK(broadcast.source.find("rem_o") != std::string::npos);
}

TEST_CASE("lowering: the cuda kernels are the shared schedule's loop kernels") {
  // Each loop step renders one loop kernel of sched::make_schedule (the cpu backend's
  // groups), and distinct steps render distinct kernels: on random graphs and the tutorial.
  auto check_groups = [](FunctionGraph& fg) {
    run_rewrites(fg);
    const sched::Schedule schedule = sched::make_schedule(fg);
    const cuda::Plan plan = cuda::lower(fg);
    INFO(plan.describe());
    INFO(schedule.describe());
    std::set<std::size_t> rendered;
    int loops = 0;
    for (const cuda::Step& st : plan.steps) {
      if (st.kind != cuda::StepKind::Loop) continue;
      ++loops;
      REQUIRE(st.loop);
      std::size_t found = schedule.kernels.size();
      for (std::size_t k = 0; k < schedule.kernels.size() && found == schedule.kernels.size();
           ++k) {
        const sched::Kernel& kr = schedule.kernels[k];
        if (kr.kind != sched::KernelKind::Loop) continue;
        bool all = !st.fused.empty();
        for (const NodePtr& n : st.fused)
          all = all && std::find(kr.nodes.begin(), kr.nodes.end(), n) != kr.nodes.end();
        if (all) found = k;
      }
      CHECK_MESSAGE(found < schedule.kernels.size(), st.node->describe());
      CHECK(rendered.insert(found).second);
      CHECK(st.loop->exprs.size() == schedule.kernels[found].loop.exprs.size());
    }
    // No other step kind computes elementwise ops or reductions.
    for (const cuda::Step& st : plan.steps) {
      CHECK(st.kind != cuda::StepKind::Map);
      CHECK(st.kind != cuda::StepKind::Reduce);
      CHECK(st.kind != cuda::StepKind::RowGroup);
      CHECK(st.kind != cuda::StepKind::Softmax);
    }
    return loops;
  };
  int loops = 0;
  for (std::uint64_t seed = 1000; seed < 1012; ++seed) {
    CAPTURE(seed);
    RandomGraph g = random_graph(seed);
    std::vector<NodePtr> ins, outs;
    for (const Variable& v : g.inputs) ins.push_back(v.node());
    for (const Variable& v : g.outputs) outs.push_back(v.node());
    FunctionGraph fg(ins, outs, {});
    loops += check_groups(fg);
  }
  CHECK(loops >= 12);
  Variable X = fmatrix("X"), Y = fmatrix("Y");
  Variable w = shared(Tensor::zeros({784, 10}), "w");
  Variable cost = mean(nnet::categorical_crossentropy(nnet::softmax(dot(X, w)), Y));
  FunctionGraph fg({X.node(), Y.node()}, {cost.node()},
                   {{w.node(), (w - grad(cost, w) * 0.05f).node()}});
  CHECK(check_groups(fg) == 1);
}

TEST_CASE("loop kernels print non-finite and tiny constants that NVRTC and the emulator read") {
  const double inf = std::numeric_limits<double>::infinity();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  Case c;
  Variable x = fmatrix("x"), d = dmatrix("d");
  c.inputs = {x, d};
  c.outputs = {maximum(x, Variable(-inf)) + minimum(x, Variable(inf)),
               switch_(gt(d, 1.0), d, Variable(inf)), switch_(gt(x, 1.0f), x, Variable(nan)),
               d * Variable(1e-300) + Variable(0.1)};
  c.args = {sample({3, 5}, Dtype::Float32, 1), sample({3, 5}, Dtype::Float64, 2)};
  compile_nvrtc(c, "constants");
  compare_emu(c, 0, 0);
}

TEST_CASE("lowering: an unknown THEA_CUDA_LOWERING is an error naming it") {
  Variable x = fmatrix("x");
  FunctionGraph fg({x.node()}, {exp(x).node()}, {});
  ScopedEnv env("THEA_CUDA_LOWERING", "fastest");
  CHECK_THROWS_WITH_AS(cuda::lower(fg), doctest::Contains("THEA_CUDA_LOWERING=fastest"), Error);
}

TEST_CASE("lowering: slice bounds computed on the device are refused with a reason") {
  Variable x = fvector("x");
  Variable k = argmax(x);  // an int64 scalar computed on the device
  Variable s = subtensor(x, {Slice(k, std::nullopt)});
  FunctionGraph fg({x.node()}, {s.node()}, {});
  std::string why = cuda::unsupported_reason(fg);
  CHECK(why.find("computed on the GPU") != std::string::npos);
  CHECK(why.find("argmax") != std::string::npos);
}

#endif  // THEA_HAVE_CUDA
