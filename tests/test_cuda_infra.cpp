// The CUDA backend's host-side machinery, testable without a GPU: NVRTC compilation to
// sm_90 cubin, the on-disk kernel cache, the caching allocator's bookkeeping, launch
// configurations, cuBLAS call planning, and the driverless error path.
#include <doctest/doctest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "thea/backend.hpp"
#include "thea/error.hpp"

#if THEA_HAVE_CUDA
#include "cuda/allocator.hpp"
#include "cuda/blas.hpp"
#include "cuda/cuda_libs.hpp"
#include "cuda/device.hpp"
#include "cuda/kernel_cache.hpp"
#include "cuda/launch.hpp"
#include "cuda/nvrtc_compiler.hpp"
#endif

namespace fs = std::filesystem;
using namespace thea;

namespace {

// A fresh, empty directory under the build's kernel cache (or /tmp).
std::string scratch_dir(const std::string& name) {
  const char* base = std::getenv("THEA_CACHE_DIR");
  fs::path dir = fs::path(base && *base ? base : "/tmp") /
                 ("test_cuda_infra-" + name + "-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

}  // namespace

TEST_CASE("cuda backend is registered and explains why it cannot run here") {
  auto names = backend_names();
  CHECK(std::find(names.begin(), names.end(), "cuda") != names.end());
  std::shared_ptr<Backend> backend;
  std::string why;
  try {
    backend = get_backend("cuda");
  } catch (const BackendError& e) {
    why = e.what();
  }
#if THEA_HAVE_CUDA
  std::string reason = cuda::unavailable_reason();
  if (reason.empty()) {
    // A machine with a GPU: the backend must come up.
    CHECK(backend != nullptr);
    MESSAGE("GPU present: " << cuda::device().name);
  } else {
    CHECK(backend == nullptr);
    CHECK(why.find("backend 'cuda' is unavailable") != std::string::npos);
    CHECK(why.find(reason) != std::string::npos);
    // With no driver the message must say so in words a user can act on.
    int driver = 0;
    cudaDriverGetVersion(&driver);
    if (driver == 0) CHECK(why.find("no NVIDIA driver") != std::string::npos);
    CHECK_THROWS_AS(cuda::device(), BackendError);
  }
#else
  CHECK(backend == nullptr);
  CHECK(why.find("built without CUDA") != std::string::npos);
#endif
}

#if THEA_HAVE_CUDA

TEST_CASE("NVRTC compiles the scalar preamble and a kernel to sm_90 cubin without a GPU") {
  std::string src = cuda::kernel_prelude() + R"(
extern "C" __global__ void axpy_sigmoid(const float* __restrict__ x, float* __restrict__ y,
                                        float a, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x)
    y[i] = thea_sigmoid(thea_add(thea_mul(a, x[i]), y[i]));
}
)";
  cuda::CompileTarget target{90, true};
  auto out = cuda::compile_cuda(src, target, cuda::default_nvrtc_options(), nullptr, "axpy");
  CHECK(out.cubin);
  CHECK_FALSE(out.from_cache);
  CHECK(cuda::cubin_arch(out.binary) == 90);
  CHECK(out.binary.find("axpy_sigmoid") != std::string::npos);
  CHECK(cuda::cubin_arch("not an elf file at all, just text....................") == -1);
  // PTX for a virtual arch (the fallback when NVRTC does not know the device).
  auto ptx = cuda::compile_cuda(src, {90, false}, cuda::default_nvrtc_options(), nullptr, "axpy");
  CHECK_FALSE(ptx.cubin);
  CHECK(ptx.binary.find(".target sm_90") != std::string::npos);
  CHECK(ptx.binary.back() == '\0');
}

TEST_CASE("NVRTC errors become CompileError with the log and the saved source") {
  cuda::KernelCache cache(scratch_dir("err"));
  std::string src = cuda::kernel_prelude() +
                    "extern \"C\" __global__ void broken(float* x) { x[0] = undefined_name; }\n";
  try {
    cuda::compile_cuda(src, {90, true}, cuda::default_nvrtc_options(), &cache, "broken_kernel");
    FAIL("expected a CompileError");
  } catch (const CompileError& e) {
    std::string msg = e.what();
    CHECK(msg.find("broken_kernel") != std::string::npos);
    CHECK(msg.find("undefined_name") != std::string::npos);
    CHECK(msg.find("sm_90") != std::string::npos);
    auto pos = msg.find("source written to ");
    REQUIRE(pos != std::string::npos);
    std::string path = msg.substr(pos + 18);
    CHECK(fs::exists(path));
  }
}

TEST_CASE("NVRTC supports sm_90 and the target falls back to PTX for unknown devices") {
  auto archs = cuda::nvrtc_supported_archs();
  CHECK(std::find(archs.begin(), archs.end(), 90) != archs.end());
  int supported[] = {75, 80, 86, 90};
  auto t = cuda::choose_target(90, supported, 4);
  CHECK(t.cubin);
  CHECK(t.arch == 90);
  CHECK(t.option() == "-arch=sm_90");
  t = cuda::choose_target(120, supported, 4);  // newer than NVRTC knows: PTX for the newest
  CHECK_FALSE(t.cubin);
  CHECK(t.arch == 90);
  CHECK(t.option() == "-arch=compute_90");
  t = cuda::choose_target(89, supported, 4);  // no SASS for 8.9: PTX from 8.6
  CHECK_FALSE(t.cubin);
  CHECK(t.arch == 86);
  CHECK_THROWS_AS(cuda::choose_target(70, supported, 4), BackendError);
}

TEST_CASE("kernel cache: hit after store, keyed by source, options and arch") {
  std::string dir = scratch_dir("cache");
  cuda::KernelCache cache(dir);
  REQUIRE(cache.enabled());
  std::string src =
      cuda::kernel_prelude() +
      "extern \"C\" __global__ void k(float* x) { x[threadIdx.x] = thea_exp(1.0f); }\n";
  auto opts = cuda::default_nvrtc_options();
  auto first = cuda::compile_cuda(src, {90, true}, opts, &cache);
  CHECK_FALSE(first.from_cache);
  auto second = cuda::compile_cuda(src, {90, true}, opts, &cache);
  CHECK(second.from_cache);
  CHECK(second.binary == first.binary);
  // Another arch, other options or other source are different entries.
  auto other_arch = cuda::compile_cuda(src, {80, true}, opts, &cache);
  CHECK_FALSE(other_arch.from_cache);
  CHECK(cuda::cubin_arch(other_arch.binary) == 80);
  auto opts2 = opts;
  opts2.push_back("-lineinfo");
  CHECK_FALSE(cuda::compile_cuda(src, {90, true}, opts2, &cache).from_cache);
  CHECK_FALSE(cuda::compile_cuda(src + "\n", {90, true}, opts, &cache).from_cache);
  // The key contains the NVRTC version.
  CHECK(cuda::compile_key(src, {90, true}, opts).find("nvrtc " + cuda::nvrtc_version()) !=
        std::string::npos);
  // No temporaries left behind.
  for (const auto& entry : fs::directory_iterator(dir))
    CHECK(entry.path().string().find(".tmp.") == std::string::npos);
}

TEST_CASE("kernel cache: corrupt, truncated and foreign entries read as misses") {
  cuda::KernelCache cache(scratch_dir("corrupt"));
  const std::string key = "key-A", payload(1000, 'x');
  REQUIRE(cache.store(key, payload));
  REQUIRE(cache.load(key) == payload);
  std::string path = cache.path_for(key);
  auto size = fs::file_size(path);
  {  // flip one payload byte
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(size - 10));
    f.put('y');
  }
  CHECK_FALSE(cache.load(key).has_value());
  REQUIRE(cache.store(key, payload));
  fs::resize_file(path, size - 1);  // truncated
  CHECK_FALSE(cache.load(key).has_value());
  REQUIRE(cache.store(key, payload));
  {  // trailing garbage
    std::ofstream f(path, std::ios::app | std::ios::binary);
    f << "junk";
  }
  CHECK_FALSE(cache.load(key).has_value());
  // An entry whose stored key differs (a digest collision) is not returned.
  REQUIRE(cache.store(key, payload));
  fs::copy_file(path, cache.path_for("key-B"), fs::copy_options::overwrite_existing);
  CHECK_FALSE(cache.load("key-B").has_value());
  CHECK(cache.load(key) == payload);
  // A disabled cache stores nothing.
  setenv("THEA_CACHE_DIR", "off", 1);
  CHECK(cuda::KernelCache::default_dir().empty());
  unsetenv("THEA_CACHE_DIR");
}

TEST_CASE("kernel cache: concurrent writers of one key never expose a torn entry") {
  cuda::KernelCache cache(scratch_dir("race"));
  const std::string key = "shared-key";
  std::string payload(1 << 20, 'p');
  for (std::size_t i = 0; i < payload.size(); i += 7) payload[i] = static_cast<char>(i);
  std::vector<std::thread> threads;
  std::atomic<int> bad{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 20; ++i) {
        cache.store(key, payload);
        auto got = cache.load(key);
        if (got && *got != payload) bad++;
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(bad == 0);
  CHECK(cache.load(key) == payload);
}

namespace {
// Host memory standing in for the GPU, with an optional capacity to simulate OOM.
class FakeMemory : public cuda::RawMemory {
 public:
  explicit FakeMemory(std::size_t capacity, std::map<void*, std::size_t>* live)
      : capacity_(capacity), live_(live) {}
  void* allocate(std::size_t n) override {
    if (used_ + n > capacity_) return nullptr;
    void* p = std::malloc(n);
    used_ += n;
    (*live_)[p] = n;
    return p;
  }
  void deallocate(void* p) override {
    used_ -= (*live_)[p];
    live_->erase(p);
    std::free(p);
  }

 private:
  std::size_t capacity_, used_ = 0;
  std::map<void*, std::size_t>* live_;
};
}  // namespace

TEST_CASE("caching allocator: size classes") {
  using A = cuda::CachingAllocator;
  CHECK(A::round_size(0) == 0);
  CHECK(A::round_size(1) == 512);
  CHECK(A::round_size(512) == 512);
  CHECK(A::round_size(513) == 1024);
  CHECK(A::round_size((1 << 20) - 1) == (1 << 20));
  CHECK(A::round_size(1 << 20) == (2 << 20));
  CHECK(A::round_size((2 << 20) + 1) == (4 << 20));
  CHECK(A::max_reuse_size(1024) == 1024);
  CHECK(A::max_reuse_size(8 << 20) == (10 << 20));
}

TEST_CASE("caching allocator: reuse, stats and release") {
  std::map<void*, std::size_t> raw_live;
  cuda::CachingAllocator alloc(std::make_unique<FakeMemory>(std::size_t{1} << 30, &raw_live));
  CHECK(alloc.allocate(0) == nullptr);
  void* a = alloc.allocate(1000);  // 1024 class
  void* b = alloc.allocate(1000);
  CHECK(a != b);
  CHECK(alloc.block_size(a) == 1024);
  auto s = alloc.stats();
  CHECK(s.raw_allocs == 2);
  CHECK(s.in_use_bytes == 2048);
  CHECK(s.live_blocks == 2);
  alloc.deallocate(a);
  s = alloc.stats();
  CHECK(s.in_use_bytes == 1024);
  CHECK(s.cached_bytes == 1024);
  // Same class: served from the cache, no new raw allocation.
  void* c = alloc.allocate(1024);
  CHECK(c == a);
  s = alloc.stats();
  CHECK(s.raw_allocs == 2);
  CHECK(s.cache_hits == 1);
  // A different small class does not take a cached block of another class.
  alloc.deallocate(c);
  void* d = alloc.allocate(600);  // 1024 class -> hit again
  CHECK(d == a);
  void* e = alloc.allocate(100);  // 512 class -> new block
  CHECK(alloc.stats().raw_allocs == 3);
  // Large blocks accept up to 25% slack, not more.
  void* big = alloc.allocate(10 << 20);
  alloc.deallocate(big);
  void* big2 = alloc.allocate(9 << 20);  // rounds to 10 MiB: exact hit
  CHECK(big2 == big);
  alloc.deallocate(big2);
  void* small_for_big = alloc.allocate(4 << 20);  // 4 MiB: 10 MiB block is too wasteful
  CHECK(small_for_big != big);
  CHECK(alloc.stats().peak_in_use_bytes >= (10u << 20));
  alloc.deallocate(small_for_big);
  alloc.deallocate(b);
  alloc.deallocate(d);
  alloc.deallocate(e);
  s = alloc.stats();
  CHECK(s.in_use_bytes == 0);
  CHECK(s.live_blocks == 0);
  CHECK(s.cached_bytes > 0);
  alloc.release_cached();
  CHECK(alloc.stats().cached_bytes == 0);
  CHECK(raw_live.empty());
  CHECK(alloc.stats().raw_frees == alloc.stats().raw_allocs);
  // Foreign pointers are refused.
  int x = 0;
  CHECK_THROWS_AS(alloc.deallocate(&x), BackendError);
}

TEST_CASE("caching allocator: out of memory frees the cache, then reports clearly") {
  std::map<void*, std::size_t> raw_live;
  cuda::CachingAllocator alloc(std::make_unique<FakeMemory>(8 << 20, &raw_live));
  void* a = alloc.allocate(4 << 20);
  alloc.deallocate(a);                // 4 MiB cached
  void* b = alloc.allocate(6 << 20);  // needs the cached block's memory back
  CHECK(b != nullptr);
  CHECK(alloc.stats().cached_bytes == 0);
  try {
    alloc.allocate(6 << 20);
    FAIL("expected out of memory");
  } catch (const BackendError& e) {
    CHECK(std::string(e.what()).find("out of memory") != std::string::npos);
    CHECK(std::string(e.what()).find("1 buffers") != std::string::npos);
  }
  alloc.deallocate(b);
}

TEST_CASE("caching allocator: DeviceBuffer returns its block") {
  std::map<void*, std::size_t> raw_live;
  cuda::CachingAllocator alloc(std::make_unique<FakeMemory>(1 << 30, &raw_live));
  {
    cuda::DeviceBuffer buf(&alloc, 4096);
    CHECK(buf);
    cuda::DeviceBuffer moved = std::move(buf);
    CHECK_FALSE(buf);
    CHECK(moved.nbytes() == 4096);
    CHECK(alloc.stats().live_blocks == 1);
  }
  CHECK(alloc.stats().live_blocks == 0);
  CHECK(alloc.stats().cached_bytes == 4096);
}

namespace {
cuda::DeviceInfo h200() {
  cuda::DeviceInfo d;
  d.name = "test H200";
  d.cc_major = 9;
  d.sm_count = 132;
  d.max_threads_per_block = 1024;
  d.max_threads_per_sm = 2048;
  d.warp_size = 32;
  return d;
}
}  // namespace

TEST_CASE("launch configuration: elementwise") {
  auto d = h200();
  auto c = cuda::elementwise_config(1, d);
  CHECK(c.block_x == 32);
  CHECK(c.grid_x == 1);
  c = cuda::elementwise_config(100, d);
  CHECK(c.block_x == 128);
  CHECK(c.grid_x == 1);
  c = cuda::elementwise_config(7840, d);  // 784 x 10 weights
  CHECK(c.block_x == 256);
  CHECK(c.grid_x == 31);
  CHECK(c.threads() >= 7840);
  // Huge tensors: capped at 4 waves of resident blocks (grid-stride loop covers the rest).
  c = cuda::elementwise_config(std::int64_t{1} << 34, d);
  CHECK(c.block_x == 256);
  CHECK(c.grid_x == 132 * 8 * 4);
  c = cuda::elementwise_config(0, d);
  CHECK(c.grid_x == 1);
}

TEST_CASE("launch configuration: row reductions") {
  auto d = h200();
  // Softmax over 128 x 10: a warp per row, 8 rows per block.
  auto c = cuda::reduction_config(128, 10, true, d);
  CHECK(c.block_x == 32);
  CHECK(c.block_y == 8);
  CHECK(c.grid_x == 16);
  CHECK(c.shared_bytes == 0);  // one warp per row needs no shared partials
  // Long rows: more threads per row, shared memory for the cross-warp step.
  c = cuda::reduction_config(64, 4096, true, d, 4);
  CHECK(c.block_x == 1024);
  CHECK(c.block_y == 1);
  CHECK(c.shared_bytes == 32 * 4);
  c = cuda::reduction_config(1000, 300, true, d, 8, true);
  CHECK(c.block_x == 128);
  CHECK(c.block_y == 2);
  CHECK(c.shared_bytes == 4 * 2 * 16);
  // A column sum (bias gradient, 128 x 10 over axis 0) with many columns: thread per column.
  c = cuda::reduction_config(784, 128, false, d);
  CHECK(c.block_x == 1);
  CHECK(c.block_y == 256);
  CHECK(c.grid_x == 4);
  // Few columns: cooperate per segment even though strided.
  c = cuda::reduction_config(10, 128, false, d);
  CHECK(c.block_x == 32);
  // One long segment (mean of everything): the whole block works on it.
  c = cuda::reduction_config(1, 1 << 24, true, d);
  CHECK(c.block_x == 1024);
  CHECK(c.grid_x == 1);
  // Every configuration covers every row.
  for (std::int64_t rows : {1, 3, 31, 32, 33, 1000, 100000})
    for (std::int64_t len : {1, 2, 10, 33, 1000, 70000})
      for (bool contig : {true, false}) {
        auto cc = cuda::reduction_config(rows, len, contig, d);
        CHECK(std::int64_t{cc.grid_x} * cc.block_y >= rows);
        CHECK(cc.block_x * cc.block_y <= 1024);
        CHECK((cc.block_x == 1 || cc.block_x % 32 == 0));
      }
}

TEST_CASE("launch configuration: skinny gemm") {
  auto d = h200();
  // The tutorial's forward dot(X, w), 128 x 784 . 784 x 10, X rows contiguous: a block per
  // row, 4 warps splitting the 784-long reduction, 4 x 10 float partials.
  auto l = cuda::skinny_gemm_config(128, 784, 10, 784, 1, d, 4);
  CHECK(l.mode == 0);
  CHECK(l.cfg.block_x == 32);
  CHECK(l.cfg.block_y == 4);
  CHECK(l.cfg.grid_x == 128);
  CHECK(l.cfg.shared_bytes == 4 * 10 * 4);
  // The SGD update w += -lr X^T G: op(A) = X^T is 784 x 128 with unit row stride: a thread
  // per weight row, 8 chunks of 16 batch rows each, combined through shared memory.
  l = cuda::skinny_gemm_config(784, 128, 10, 1, 784, d, 4);
  CHECK(l.mode == 1);
  CHECK(l.cfg.block_x == 32);
  CHECK(l.cfg.block_y == 8);
  CHECK(l.cfg.grid_x == 25);
  CHECK(l.cfg.shared_bytes == 8 * 32 * 10 * 4);
  // The test pass, 10000 x 784 . 784 x 10: enough rows, no split; one wave of blocks.
  l = cuda::skinny_gemm_config(10000, 784, 10, 784, 1, d, 4);
  CHECK(l.mode == 0);
  CHECK(l.cfg.block_y == 1);
  CHECK(l.cfg.shared_bytes == 0);
  CHECK(l.cfg.grid_x == 132 * 32);
  // Many rows in mode 1: wider blocks, no split.
  l = cuda::skinny_gemm_config(100000, 128, 10, 1, 100000, d, 4);
  CHECK(l.mode == 1);
  CHECK(l.cfg.block_x == 128);
  CHECK(l.cfg.block_y == 1);
  CHECK(l.cfg.shared_bytes == 0);
  // Partials are capped at 32 KB (32 float64 columns): the split shrinks.
  l = cuda::skinny_gemm_config(100, 4096, 32, 1, 100, d, 8);
  CHECK(l.mode == 1);
  CHECK(l.cfg.block_y == 4);
  CHECK(l.cfg.shared_bytes == 4 * 32 * 32 * 8);
  // One row is always mode 0 (nothing to spread across threads); so is a copied operand
  // with no unit stride, and an empty reduction still launches (it writes beta * C).
  CHECK(cuda::skinny_gemm_config(1, 784, 10, 1, 1, d, 4).mode == 0);
  CHECK(cuda::skinny_gemm_config(7, 9, 3, 2, 14, d, 4).mode == 0);
  l = cuda::skinny_gemm_config(5, 0, 3, 1, 5, d, 4);
  CHECK(l.cfg.grid_x >= 1);
  CHECK(l.cfg.block_y == 1);
  // Every configuration covers every row, within the block and shared-memory limits.
  for (std::int64_t m : {0, 1, 2, 31, 33, 1000, 100000})
    for (std::int64_t k : {0, 1, 33, 784, 70000})
      for (std::int64_t n : {1, 10, 32})
        for (int vb : {4, 8})
          for (bool col : {false, true}) {
            CAPTURE(m);
            CAPTURE(k);
            CAPTURE(n);
            auto c = cuda::skinny_gemm_config(m, k, n, col ? 1 : k, col ? m : 1, d, vb);
            CHECK(c.cfg.block_x % 32 == 0);
            CHECK(c.cfg.block_x * c.cfg.block_y <= 256);  // the kernels' __launch_bounds__
            CHECK(c.cfg.shared_bytes <= 32768);
            CHECK(c.cfg.grid_x >= 1);
            const std::int64_t rows_per_block = c.mode == 0 ? 1 : c.cfg.block_x;
            // Grid-stride loops cover the rest; the grid never exceeds what is needed.
            CHECK(std::int64_t{c.cfg.grid_x} * rows_per_block <
                  std::max<std::int64_t>(m, 1) + rows_per_block);
            if (c.cfg.block_y > 1) {
              const std::int64_t partials = c.mode == 0
                                                ? std::int64_t{c.cfg.block_y} * n
                                                : std::int64_t{c.cfg.block_y} * c.cfg.block_x * n;
              CHECK(c.cfg.shared_bytes == partials * vb);
            } else {
              CHECK(c.cfg.shared_bytes == 0);
            }
          }
}

TEST_CASE("launch configuration: row kernels computing their product") {
  auto d = h200();
  // The tutorial's step: 128 rows of 10 logits over 784 inputs: 4 warps per row, 2 rows
  // per block; shared: the rows' logits, the warps' partials, the sweeps' scratch.
  auto c = cuda::row_group_gemm_config(128, 10, 784, d, 4);
  CHECK(c.block_x == 128);
  CHECK(c.block_y == 2);
  CHECK(c.grid_x == 64);
  CHECK(c.shared_bytes == 80 + 320 + 4 * 2 * 16);
  // The test pass (10000 rows): a warp per row, 8 rows per block, no split.
  c = cuda::row_group_gemm_config(10000, 10, 784, d, 4);
  CHECK(c.block_x == 32);
  CHECK(c.block_y == 8);
  CHECK(c.grid_x == 1250);
  CHECK(c.shared_bytes == 320 + 320);
  // Short reductions are not split; float64 tiles are 16-byte aligned.
  c = cuda::row_group_gemm_config(3, 7, 100, d, 8);
  CHECK(c.block_x == 32);
  CHECK(c.block_y == 4);
  CHECK(c.shared_bytes == 224 + 224);
  for (std::int64_t rows : {0, 1, 7, 128, 5000, 100000})
    for (std::int64_t n : {1, 10, 32})
      for (std::int64_t k : {0, 1, 100, 784, 100000}) {
        CAPTURE(rows);
        CAPTURE(n);
        CAPTURE(k);
        auto cc = cuda::row_group_gemm_config(rows, n, k, d, 8);
        CHECK(cc.block_x % 32 == 0);
        CHECK(cc.block_x <= 128);
        CHECK(cc.block_x * cc.block_y <= 256);  // the kernel's __launch_bounds__
        CHECK(std::int64_t{cc.grid_x} * cc.block_y >= rows);
        CHECK(cc.shared_bytes % 16 == 0);
        CHECK(cc.shared_bytes <= 48 * 1024);
      }
}

TEST_CASE("launch configuration: row kernels adding up their rows") {
  auto d = h200();
  // The tutorial's row kernel: 64 blocks of 2 rows, 528 bytes of shared memory, plus a
  // double slot per row.
  auto c = cuda::row_group_gemm_config(128, 10, 784, d, 4);
  cuda::add_row_total(c, d);
  CHECK(c.grid_x == 64);
  CHECK(c.shared_bytes == 528 + 2 * 8);
  // Many rows: at most 8 blocks per SM leave partials (the kernel loops over the rest).
  c = cuda::reduction_config(1000000, 10, true, d, 8, true);
  cuda::add_row_total(c, d);
  CHECK(c.grid_x == 132 * 8);
  CHECK(c.shared_bytes == 8 * 8);
  // Long rows: the slots start after the 16-byte-aligned all-reduce scratch.
  c = cuda::reduction_config(3, 5000, true, d, 8, true);
  const unsigned scratch = c.shared_bytes;
  CHECK(scratch == 16 * c.block_y * (c.block_x / 32));
  cuda::add_row_total(c, d);
  CHECK(c.shared_bytes == scratch + c.block_y * 8);
  c = cuda::reduction_config(0, 10, true, d, 8, true);
  cuda::add_row_total(c, d);
  CHECK(c.grid_x == 1);
}

namespace {
// cuBLAS's column-major gemm semantics, on the host, to check the plans without a GPU.
void colmajor_gemm(bool ta, bool tb, int m, int n, int k, double alpha, const double* A, int lda,
                   const double* B, int ldb, double beta, double* C, int ldc) {
  for (int j = 0; j < n; ++j)
    for (int i = 0; i < m; ++i) {
      double acc = 0;
      for (int p = 0; p < k; ++p) {
        double a = ta ? A[p + i * lda] : A[i + p * lda];
        double b = tb ? B[j + p * ldb] : B[p + j * ldb];
        acc += a * b;
      }
      C[i + j * ldc] = alpha * acc + beta * C[i + j * ldc];
    }
}

struct HostMat {
  std::vector<double> storage;
  cuda::MatView view;
  double at(std::int64_t i, std::int64_t j) const {
    return storage[static_cast<std::size_t>(i * view.row_stride + j * view.col_stride)];
  }
};

// rows x cols, laid out transposed or padded as asked.
HostMat make_mat(std::int64_t rows, std::int64_t cols, bool transposed, std::int64_t pad,
                 std::mt19937& rng) {
  HostMat m;
  std::uniform_real_distribution<double> u(-1, 1);
  std::int64_t ld = (transposed ? rows : cols) + pad;
  m.storage.resize(static_cast<std::size_t>(ld * (transposed ? cols : rows) + 1));
  for (auto& x : m.storage) x = u(rng);
  m.view.rows = rows;
  m.view.cols = cols;
  m.view.row_stride = transposed ? 1 : ld;
  m.view.col_stride = transposed ? ld : 1;
  m.view.ptr = m.storage.data();
  return m;
}
}  // namespace

TEST_CASE("cuBLAS plans: row-major, transposed and padded views compute C = a*A.B + b*C") {
  std::mt19937 rng(7);
  struct Dims {
    int m, n, k;
  };
  for (Dims dims : {Dims{128, 10, 784}, Dims{784, 10, 128}, Dims{1, 10, 7}, Dims{5, 1, 3},
                    Dims{3, 4, 1}, Dims{1, 1, 9}})
    for (bool ta : {false, true})
      for (bool tb : {false, true})
        for (int pad : {0, 3}) {
          CAPTURE(dims.m);
          CAPTURE(dims.n);
          CAPTURE(dims.k);
          CAPTURE(ta);
          CAPTURE(tb);
          CAPTURE(pad);
          HostMat A = make_mat(dims.m, dims.k, ta, pad, rng);
          HostMat B = make_mat(dims.k, dims.n, tb, pad, rng);
          HostMat C = make_mat(dims.m, dims.n, false, pad, rng);
          HostMat C0 = C;
          auto plan = cuda::plan_gemm(A.view, B.view, C.view);
          REQUIRE(plan.ok);
          const double alpha = -0.05, beta = 1.0;  // the SGD update
          colmajor_gemm(plan.b.transpose, plan.a.transpose, static_cast<int>(plan.n),
                        static_cast<int>(plan.m), static_cast<int>(plan.k), alpha,
                        static_cast<const double*>(B.view.ptr), static_cast<int>(plan.b.ld),
                        static_cast<const double*>(A.view.ptr), static_cast<int>(plan.a.ld), beta,
                        C.storage.data(), static_cast<int>(plan.ldc));
          double worst = 0;
          for (int i = 0; i < dims.m; ++i)
            for (int j = 0; j < dims.n; ++j) {
              double want = beta * C0.at(i, j);
              for (int p = 0; p < dims.k; ++p) want += alpha * A.at(i, p) * B.at(p, j);
              worst = std::max(worst, std::abs(want - C.at(i, j)));
            }
          CHECK(worst < 1e-12);
          // Padding beyond each row of C is untouched.
          for (std::int64_t i = 0; i < dims.m; ++i)
            for (std::int64_t j = dims.n; j < C.view.row_stride; ++j) {
              auto idx = static_cast<std::size_t>(i * C.view.row_stride + j);
              CHECK(C.storage[idx] == C0.storage[idx]);
            }
        }
}

TEST_CASE("cuBLAS plans: layouts cuBLAS cannot take are refused") {
  std::vector<double> buf(100);
  cuda::MatView a{buf.data(), 4, 5, 10, 2};  // no unit stride
  cuda::MatView b{buf.data(), 5, 3, 3, 1};
  cuda::MatView c{buf.data(), 4, 3, 3, 1};
  CHECK_FALSE(cuda::blas_compatible(a));
  CHECK_FALSE(cuda::plan_gemm(a, b, c).ok);
  cuda::MatView bcast{buf.data(), 4, 5, 0, 1};  // a broadcast row repeated
  CHECK_FALSE(cuda::blas_compatible(bcast));
  cuda::MatView ok_a{buf.data(), 4, 5, 5, 1};
  cuda::MatView c_transposed{buf.data(), 4, 3, 1, 4};  // C must be row-major
  CHECK_FALSE(cuda::plan_gemm(ok_a, b, c_transposed).ok);
  cuda::MatView bad_shape{buf.data(), 6, 3, 3, 1};
  CHECK_FALSE(cuda::plan_gemm(ok_a, bad_shape, c).ok);
}

TEST_CASE("library loading: sonames and search path") {
  CHECK(cuda::nvrtc_soname().rfind("libnvrtc.so.", 0) == 0);
  CHECK(cuda::cublas_soname().rfind("libcublas.so.", 0) == 0);
  setenv("THEA_CUDA_LIB_DIR", "/opt/a:/opt/b", 1);
  auto dirs = cuda::library_search_dirs();
  unsetenv("THEA_CUDA_LIB_DIR");
  REQUIRE(dirs.size() >= 3);
  CHECK(dirs[0] == "/opt/a");
  CHECK(dirs[1] == "/opt/b");
  // This machine has the toolkit: NVRTC loads (no GPU needed).
  CHECK_NOTHROW(cuda::nvrtc());
  CHECK_FALSE(cuda::nvrtc_version().empty());
}

#endif  // THEA_HAVE_CUDA
