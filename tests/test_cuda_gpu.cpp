// The CUDA backend on a real GPU, against the reference backend: every op x dtype, the
// fused nnet ops, dot, the tutorial's training step with the dataset resident on the
// device (and replayed as a CUDA graph; also through models/), take/inc_rows, shared
// variables moving between backends and functions, large shapes, and random graphs. Without a
// usable GPU every case says why it is skipped and passes (CI); scripts/gpu-check runs this suite
// on a GPU machine.
#include <doctest/doctest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "fuzz/graph_gen.hpp"
#include "test_cuda_cases.hpp"
#include "thea/models/softmax_regression.hpp"
#include "thea/thea.hpp"

#if THEA_HAVE_CUDA
#include "cuda/device.hpp"
#include "cuda/runtime.hpp"

using namespace thea;
using namespace thea::cuda_tests;

namespace {

bool gpu_or_skip() {
  std::string why = cuda::unavailable_reason();
  if (!why.empty()) {
    MESSAGE("skipped: no usable GPU here (" << why << ")");
    return false;
  }
  return true;
}

FunctionOptions on(const std::string& backend) {
  FunctionOptions o;
  o.backend = backend;
  return o;
}

}  // namespace

TEST_CASE("gpu: the device comes up") {
  if (!gpu_or_skip()) return;
  const cuda::DeviceInfo& d = cuda::device();
  MESSAGE("device " << d.ordinal << ": " << d.name << ", sm_" << d.cc_major << d.cc_minor << ", "
                    << d.sm_count << " SMs, " << (d.total_mem >> 20) << " MiB, driver "
                    << d.driver_version << ", runtime " << d.runtime_version);
  CHECK(d.sm_count > 0);
  CHECK_NOTHROW(get_backend("cuda"));
}

// Each Runtime operation on its own, so a failure names the CUDA feature that broke.
TEST_CASE("gpu: runtime smoke (module load, launch, copies, cuBLAS, graph capture)") {
  if (!gpu_or_skip()) return;
  runtime_smoke(cuda::cuda_runtime());
}

TEST_CASE("gpu: every elementwise op and reduction, every dtype") {
  if (!gpu_or_skip()) return;
  for (Dtype d : kDtypes) {
    CAPTURE(dtype_name(d));
    double tol = d == Dtype::Float32 ? 1e-5 : 1e-9;
    compare_backends(elementwise_case(d), "cuda", tol, tol);
  }
}

TEST_CASE("gpu: nnet, fused ops, one_hot and dot") {
  if (!gpu_or_skip()) return;
  compare_backends(float_case(Dtype::Float32), "cuda", 2e-5, 2e-5);
  compare_backends(float_case(Dtype::Float64), "cuda", 1e-9, 1e-9);
  compare_backends(int_dot_case(), "cuda", 0, 0);
}

TEST_CASE("gpu: take and inc_rows (gather, scatter-add with duplicates), every dtype") {
  if (!gpu_or_skip()) return;
  for (Dtype d : kDtypes) {
    CAPTURE(dtype_name(d));
    compare_backends(gather_scatter_case(d), "cuda", 0, 0);
  }
}

TEST_CASE("gpu: the softmax-regression model's resident functions match the reference") {
  if (!gpu_or_skip()) return;
  Tensor x = Tensor::random_normal({300, 20}, 0, 1, 41);
  Tensor y = Tensor::zeros({300, 10});
  for (std::int64_t i = 0; i < 300; ++i) y.set({i, (i * 3) % 10}, 1.0);
  auto build = [&](const std::string& backend) {
    models::SoftmaxRegressionOptions o;
    o.n_in = 20;
    o.backend = backend;
    o.resident = models::make_resident_data(x, y, x, 64);
    return models::build_softmax_regression(o);
  };
  auto ref = build("reference"), gpu = build("cuda");
  REQUIRE(gpu.n_batches == 4);
  for (int e = 0; e < 3; ++e)  // eager, capture, replays
    for (std::int64_t b = 0; b < gpu.n_batches; ++b)
      CHECK(gpu.train_batch(b) == doctest::Approx(ref.train_batch(b)).epsilon(1e-5));
  CHECK(allclose(gpu.weights(), ref.weights(), 1e-4, 1e-6));
  CHECK(allclose(gpu.predict_test_labels(), ref.predict_test_labels()));
  CHECK_THROWS_WITH_AS(gpu.train_batch(4), doctest::Contains("out of range"), ValueError);
}

TEST_CASE("gpu: large shapes: grid-stride loops, long rows, many rows") {
  if (!gpu_or_skip()) return;
  Case c;
  Variable x = fmatrix("x"), r = fmatrix("r"), y = fvector("y");
  c.inputs = {x, r, y};
  c.outputs = {exp(x * 0.1f) + 1.0f,
               sum(x, 1),
               sum(x, 0),
               mean(x),
               max(x, 1),
               argmax(x, 1),
               argmin(x, 0),
               nnet::softmax(r),
               nnet::log_softmax(r),
               sum(y),
               argmax(y),
               dot(x.T(), x)};
  c.args = {Tensor::random_normal({3000, 700}, 0, 1, 1), Tensor::random_normal({7, 50000}, 0, 1, 2),
            Tensor::random_normal({3000000}, 0, 1, 3)};
  for (const char* lowering : kLowerings) {
    CAPTURE(lowering);
    ScopedEnv env("THEA_CUDA_LOWERING", lowering);
    compare_backends(c, "cuda", 2e-4, 2e-4);
  }
}

TEST_CASE("gpu: the tutorial step with a device-resident dataset, replayed") {
  if (!gpu_or_skip()) return;
  const int n = 1024, bs = 128, classes = 10, features = 784;
  Tensor xs = Tensor::random_uniform({n, features}, 0, 1, 7);
  Tensor ys = Tensor::zeros({n, classes});
  for (int i = 0; i < n; ++i) ys.set({i, (i * 7) % classes}, 1.0);
  auto build = [&](const std::string& backend, Variable* w_out) {
    Variable trX = shared(xs, "trX"), trY = shared(ys, "trY");
    Variable w = shared(Tensor::random_normal({features, classes}, 0, 0.01, 8), "w");
    Variable X = fmatrix("X"), Y = fmatrix("Y");
    Variable py = nnet::softmax(dot(X, w));
    Variable cost = mean(nnet::categorical_crossentropy(py, Y));
    Variable i = lscalar("i");
    Function train = function({i}, {cost}, {{w, w - grad(cost, w) * 0.05f}},
                              {{X, subtensor(trX, {Slice(i * bs, (i + 1) * bs)})},
                               {Y, subtensor(trY, {Slice(i * bs, (i + 1) * bs)})}},
                              on(backend));
    Function predict = function({X}, {argmax(py, 1)}, {}, on(backend));
    *w_out = w;
    return std::make_pair(train, predict);
  };
  Variable w_ref, w_gpu;
  auto [train_ref, pred_ref] = build("reference", &w_ref);
  auto [train_gpu, pred_gpu] = build("cuda", &w_gpu);
  MESSAGE(train_gpu.debugprint());
  for (int epoch = 0; epoch < 3; ++epoch)
    for (int i = 0; i < n / bs; ++i) {
      Tensor idx = Tensor::scalar(i, Dtype::Int64);
      float c_ref = train_ref({idx})[0].item<float>();
      float c_gpu = train_gpu({idx})[0].item<float>();
      CHECK(c_gpu == doctest::Approx(c_ref).epsilon(1e-4));
    }
  CHECK(allclose(w_gpu.get_value(), w_ref.get_value(), 1e-3, 1e-5));
  CHECK(max_abs_diff(pred_gpu({xs})[0], pred_ref({xs})[0]) == 0);
}

TEST_CASE("gpu: skinny gemm kernels (N <= 32) on odd and tutorial-sized shapes") {
  if (!gpu_or_skip()) return;
  for_float_shapes({{5, 37, 10},
                    {1, 784, 10},
                    {0, 7, 3},
                    {3, 0, 4},
                    {128, 784, 10},
                    {130, 20, 5},
                    {1000, 300, 32},
                    {2048, 784, 10}},
                   2e-5, skinny_gemm_case,
                   [](const Case& c, double tol) { compare_backends(c, "cuda", tol, tol); });
}

TEST_CASE("gpu: row kernels computing their product and adding up their rows") {
  if (!gpu_or_skip()) return;
  struct Shape3 {
    std::int64_t m, k, n;
  };
  for (const char* lowering : kLowerings)
    for (Dtype d : {Dtype::Float32, Dtype::Float64}) {
      CAPTURE(lowering);
      ScopedEnv env("THEA_CUDA_LOWERING", lowering);
      CAPTURE(dtype_name(d));
      const double tol = d == Dtype::Float32 ? 2e-5 : 1e-9;
      for (Shape3 s : {Shape3{5, 37, 10}, Shape3{1, 33, 2}, Shape3{0, 7, 3}, Shape3{128, 784, 10},
                       Shape3{9, 600, 32}, Shape3{2048, 784, 10}}) {
        CAPTURE(s.m);
        CAPTURE(s.k);
        CAPTURE(s.n);
        compare_backends(row_gemm_case(d, s.m, s.k, s.n), "cuda", tol, tol);
      }
      // Many blocks leave partials (the last one to finish adds them): many rows, long rows.
      for (Shape3 s :
           {Shape3{0, 0, 3}, Shape3{128, 0, 10}, Shape3{100000, 0, 10}, Shape3{300, 0, 3000}})
        for (bool shared_x : {false, true}) {
          CAPTURE(s.m);
          CAPTURE(s.n);
          compare_backends(row_total_case(d, s.m, s.n, shared_x), "cuda", tol, tol);
        }
    }
}

TEST_CASE("gpu: the tutorial step: skinny gemm runs are bit-identical and agree with cuBLAS") {
  if (!gpu_or_skip()) return;
  const int n = 1024, bs = 128, classes = 10, features = 784;
  Tensor xs = Tensor::random_uniform({n, features}, 0, 1, 17);
  Tensor ys = Tensor::zeros({n, classes});
  for (int i = 0; i < n; ++i) ys.set({i, (i * 3) % classes}, 1.0);
  // Trains 3 epochs on the GPU and returns the weights (and the plan, for the log).
  auto train = [&](bool skinny, std::string* plan) {
    if (!skinny) setenv("THEA_CUDA_SKINNY_GEMM", "0", 1);
    Variable trX = shared(xs, "trX"), trY = shared(ys, "trY");
    Variable w = shared(Tensor::random_normal({features, classes}, 0, 0.01, 18), "w");
    Variable X = fmatrix("X"), Y = fmatrix("Y");
    Variable cost = mean(nnet::categorical_crossentropy(nnet::softmax(dot(X, w)), Y));
    Variable i = lscalar("i");
    Function f = function({i}, {cost}, {{w, w - grad(cost, w) * 0.05f}},
                          {{X, subtensor(trX, {Slice(i * bs, (i + 1) * bs)})},
                           {Y, subtensor(trY, {Slice(i * bs, (i + 1) * bs)})}},
                          on("cuda"));
    unsetenv("THEA_CUDA_SKINNY_GEMM");
    *plan = f.debugprint();
    for (int epoch = 0; epoch < 3; ++epoch)
      for (int b = 0; b < n / bs; ++b) f({Tensor::scalar(b, Dtype::Int64)});
    return w.get_value();
  };
  std::string p1, p2, p3;
  Tensor a = train(true, &p1), b = train(true, &p2), c = train(false, &p3);
  MESSAGE(p1);
  CHECK(p1.find("skinny") != std::string::npos);
  CHECK(p3.find("skinny") == std::string::npos);
  CHECK(max_abs_diff(a, b) == 0);  // fixed summation order: identical run to run
  CHECK(allclose(a, c, 1e-4, 1e-6));
}

TEST_CASE("gpu: shared variables move between backends and functions") {
  if (!gpu_or_skip()) return;
  Variable w = shared(Tensor::from_list({{1, 2}, {3, 4}}), "w");
  Variable x = fmatrix("x");
  Function step_gpu = function({x}, {sum(w)}, {{w, w * 2.0f + x}}, on("cuda"));
  Function step_ref = function({x}, {sum(w)}, {{w, w * 2.0f + x}}, on("reference"));
  Function read_gpu = function({}, {w * 1.0f}, {}, on("cuda"));
  Tensor one = Tensor::ones({2, 2});
  CHECK(step_gpu({one})[0].item<float>() == 10);  // 1+2+3+4; w becomes 2w+1
  CHECK(allclose(w.get_value(), Tensor::from_list({{3, 5}, {7, 9}})));
  CHECK(step_ref({one})[0].item<float>() == 24);     // reads the device copy back
  CHECK(step_gpu({one})[0].item<float>() == 52);     // w was updated on the host: re-uploaded
  w.set_value(Tensor::from_list({{0, 0}, {0, 1}}));  // the device copy must be refreshed
  CHECK(allclose(read_gpu({})[0], Tensor::from_list({{0, 0}, {0, 1}})));
  CHECK(step_gpu({one})[0].item<float>() == 1);
  CHECK(allclose(w.get_value(), Tensor::from_list({{1, 1}, {1, 3}})));
}

TEST_CASE("gpu: bad labels raise a ValueError") {
  if (!gpu_or_skip()) return;
  Variable x = fmatrix("x");
  Variable labels = ivector("labels");
  Function f = function({x, labels}, {nnet::categorical_crossentropy(nnet::softmax(x), labels)}, {},
                        on("cuda"));
  Tensor xv = Tensor::random_normal({3, 4}, 0, 1, 1);
  CHECK_NOTHROW(f({xv, Tensor::from_vector<std::int32_t>({0, 1, 3})}));
  CHECK_THROWS_AS(f({xv, Tensor::from_vector<std::int32_t>({0, 4, 1})}), ValueError);
  CHECK_NOTHROW(f({xv, Tensor::from_vector<std::int32_t>({0, 1, 3})}));
}

TEST_CASE("gpu: random graphs agree with the reference") {
  if (!gpu_or_skip()) return;
  int n = 100;
  if (const char* env = std::getenv("THEA_GPU_FUZZ")) n = std::atoi(env);
  CHECK(fuzz_backend("cuda", 5000, n, 12) == 0);
}

TEST_CASE("gpu: random graphs from the shared fuzz generator agree with the reference") {
  if (!gpu_or_skip()) return;
  fuzz_generator_vs_reference("cuda", 1, 200, 45, true);
}

TEST_CASE("gpu: the legacy lowering's row groups agree with the reference (kept to compare)") {
  if (!gpu_or_skip()) return;
  ScopedEnv env("THEA_CUDA_LOWERING", "legacy");
  fuzz_generator_vs_reference("cuda", 1, 60, 30, true);
}

TEST_CASE("gpu: the shared generator's graphs with their calls repeated (call-key graphs)") {
  if (!gpu_or_skip()) return;
  fuzz_generator_vs_reference("cuda", 500, 40, 30, true, 3);
}

TEST_CASE("gpu: outputs come back without waiting and stay right") {
  if (!gpu_or_skip()) return;
  lazy_outputs_case("cuda");
}

TEST_CASE("gpu: a softmax of its own on cuDNN (the default) and on thea's kernel") {
  if (!gpu_or_skip()) return;
  standalone_softmax_case("cuda");
}

#endif  // THEA_HAVE_CUDA
