// gemm_skinny: the products of the MNIST softmax step, OpenBLAS against the cpu backend's
// generated micro-kernels (backends/cpu/thea_cpu_kernels.h, compiled here with the same
// -O3 -march=native the JIT uses), 1 and 2 threads. The cpu backend keeps the faster; this
// is the measurement behind that choice.
//   gemm_skinny [--reps N]
// Shapes: 128x784 . 784x10 (forward), 784x128 . 128x10 given as X^T G (the weight
// gradient, accumulated into w in place), 10000x784 . 784x10 (the test pass). Times are the
// minimum over repetitions of the mean per call, wall clock; the machine is shared, so run
// it twice and compare ratios rather than absolute numbers.
#include <cblas.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#define THEA_VEC_BYTES 64
#include "../backends/cpu/thea_cpu_kernels.h"
#include "../backends/preamble/thea_scalar.h"

namespace {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

template <class F>
double time_per_call(F&& f, int reps) {
  f();
  double best = 1e30;
  for (int round = 0; round < 5; ++round) {
    const double t0 = now();
    for (int r = 0; r < reps; ++r) f();
    best = std::min(best, (now() - t0) / reps);
  }
  return best;
}

// Runs f(part, nparts) on `threads` threads (the second one a plain std::thread kept alive
// across calls would be fairer; a fresh one per call shows the cost a naive pool pays).
struct TwoThreads {
  std::thread helper;
  std::atomic<int> go{0}, done{0};
  std::atomic<bool> stop{false};
  std::function<void(int)> job;
  TwoThreads() {
    helper = std::thread([this] {
      int seen = 0;
      while (!stop.load()) {
        int g = go.load(std::memory_order_acquire);
        if (g == seen) continue;
        seen = g;
        job(1);
        done.fetch_add(1, std::memory_order_release);
      }
    });
  }
  ~TwoThreads() {
    stop = true;
    helper.join();
  }
  void run(std::function<void(int)> f) {
    job = std::move(f);
    int d = done.load();
    go.fetch_add(1, std::memory_order_release);
    job(0);
    while (done.load(std::memory_order_acquire) == d) {
    }
  }
};

}  // namespace

int main(int argc, char** argv) {
  int reps = 400;
  for (int i = 1; i + 1 < argc; ++i)
    if (std::string(argv[i]) == "--reps") reps = std::atoi(argv[i + 1]);
  constexpr int K = 784, N = 10;
  std::vector<float> X(10000 * K), W(K * N), Wt(K * N), Z(10000 * N), G(128 * N), Wacc(K * N);
  for (auto& x : X) x = static_cast<float>(std::rand() % 256) / 255.0f;
  for (auto& x : W) x = static_cast<float>(std::rand() % 1000 - 500) * 1e-5f;
  for (auto& x : G) x = static_cast<float>(std::rand() % 1000 - 500) * 1e-4f;
  TwoThreads pool;

  std::printf("%-34s %12s %12s %12s %12s\n", "shape", "blas 1t", "blas 2t", "thea 1t",
              "thea 2t (us)");
  for (int M : {128, 10000}) {
    const int r = M == 128 ? reps : std::max(3, reps / 80);
    const double flops = 2.0 * M * K * N;
    openblas_set_num_threads(1);
    double b1 = time_per_call(
        [&] {
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1, X.data(), K, W.data(),
                      N, 0, Z.data(), N);
        },
        r);
    openblas_set_num_threads(2);
    double b2 = time_per_call(
        [&] {
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1, X.data(), K, W.data(),
                      N, 0, Z.data(), N);
        },
        r);
    openblas_set_num_threads(1);
    // The backend packs W^T once per call (prep), then splits rows.
    double t1 = time_per_call(
        [&] {
          thea_k::pack_bt<float, K, N>(W.data(), N, Wt.data());
          thea_k::gemm_nn_smalln<float, K, N>(0, M, X.data(), K, Wt.data(), K, Z.data(), N, 1.0f,
                                              0.0f);
        },
        r);
    double t2 = time_per_call(
        [&] {
          thea_k::pack_bt<float, K, N>(W.data(), N, Wt.data());
          pool.run([&](int part) {
            const int i0 = M * part / 2, i1 = M * (part + 1) / 2;
            thea_k::gemm_nn_smalln<float, K, N>(i0, i1, X.data(), K, Wt.data(), K, Z.data(), N,
                                                1.0f, 0.0f);
          });
        },
        r);
    std::printf("%-34s %12.1f %12.1f %12.1f %12.1f   (%.0f GFLOP/s best)\n",
                (std::to_string(M) + "x784 . 784x10").c_str(), b1 * 1e6, b2 * 1e6, t1 * 1e6,
                t2 * 1e6, flops / std::min({b1, b2, t1, t2}) / 1e9);
  }
  {
    // w (784x10) += -0.05 * X^T (784x128) . G (128x10), in place.
    const int M = 128;
    const double flops = 2.0 * M * K * N;
    openblas_set_num_threads(1);
    double b1 = time_per_call(
        [&] {
          cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, N, M, -0.05f, X.data(), K,
                      G.data(), N, 1, Wacc.data(), N);
        },
        reps);
    openblas_set_num_threads(2);
    double b2 = time_per_call(
        [&] {
          cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, N, M, -0.05f, X.data(), K,
                      G.data(), N, 1, Wacc.data(), N);
        },
        reps);
    openblas_set_num_threads(1);
    double t1 = time_per_call(
        [&] {
          thea_k::gemm_tn_smalln<float, K, N>(0, K, M, X.data(), K, G.data(), N, Wacc.data(), N,
                                              -0.05f, 1.0f);
        },
        reps);
    double t2 = time_per_call(
        [&] {
          pool.run([&](int part) {
            const int chunks = (K + 15) / 16;
            const int k0 = chunks * part / 2 * 16, k1 = std::min(K, chunks * (part + 1) / 2 * 16);
            thea_k::gemm_tn_smalln<float, K, N>(k0, k1, M, X.data(), K, G.data(), N, Wacc.data(), N,
                                                -0.05f, 1.0f);
          });
        },
        reps);
    std::printf("%-34s %12.1f %12.1f %12.1f %12.1f   (%.0f GFLOP/s best)\n",
                "784x128 . 128x10 (X^T G, += w)", b1 * 1e6, b2 * 1e6, t1 * 1e6, t2 * 1e6,
                flops / std::min({b1, b2, t1, t2}) / 1e9);
  }
  // Same results: the generated kernels against OpenBLAS.
  std::vector<float> Zb(128 * N), Zt(128 * N);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, 128, N, K, 1, X.data(), K, W.data(), N, 0,
              Zb.data(), N);
  thea_k::pack_bt<float, K, N>(W.data(), N, Wt.data());
  thea_k::gemm_nn_smalln<float, K, N>(0, 128, X.data(), K, Wt.data(), K, Zt.data(), N, 1.0f, 0.0f);
  double err = 0;
  for (int i = 0; i < 128 * N; ++i)
    err = std::max(err, static_cast<double>(std::fabs(Zb[i] - Zt[i])));
  std::printf("max |thea - blas| on the forward product: %.2g\n", err);
  return err < 1e-3 ? 0 : 1;
}
