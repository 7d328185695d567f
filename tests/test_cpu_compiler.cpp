// The cpu backend's compiler driver, on-disk kernel cache, loader and thread pool, tested on
// hand-written kernels (no graphs involved).
#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "../backends/cpu/compiler.hpp"
#include "../backends/cpu/preamble.hpp"
#include "../backends/cpu/thread_pool.hpp"
#include "../backends/disk_cache.hpp"
#include "thea/error.hpp"

namespace fs = std::filesystem;
using namespace thea;
using namespace thea::cpu;

namespace {

// A private cache folder per test case, removed at the end.
struct TempDir {
  fs::path path;
  TempDir() {
    std::random_device rd;
    path = fs::temp_directory_path() /
           ("thea-test-cache-" + std::to_string(::getpid()) + "-" + std::to_string(rd()));
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

std::string kernel_source(int salt) {
  // Uses the embedded scalar preamble exactly as generated kernels do.
  return std::string(scalar_preamble()) +
         "\nextern \"C\" void thea_test_kernel(const float* a, float* out, long n) {\n"
         "  for (long i = 0; i < n; ++i) out[i] = thea_add(thea_mul(a[i], 2.0f), " +
         std::to_string(salt) + ".0f);\n}\n";
}

using TestKernel = void (*)(const float*, float*, long);

void check_kernel(const BuildResult& r, int salt) {
  auto fn = reinterpret_cast<TestKernel>(r.library->symbol("thea_test_kernel"));
  std::vector<float> a{1, 2, 3}, out(3);
  fn(a.data(), out.data(), 3);
  CHECK(out[0] == doctest::Approx(2 + salt));
  CHECK(out[2] == doctest::Approx(6 + salt));
}

}  // namespace

TEST_CASE("the preambles are embedded") {
  REQUIRE(scalar_preamble() != nullptr);
  REQUIRE(kernels_preamble() != nullptr);
  CHECK(std::string(scalar_preamble()).find("thea_sigmoid") != std::string::npos);
  CHECK(std::string(kernels_preamble()).find("gemm_nn_smalln") != std::string::npos);
}

TEST_CASE("host compiler is found and described") {
  const CompilerInfo& cc = host_compiler();
  REQUIRE_MESSAGE(cc.unavailable.empty(), cc.unavailable);
  CHECK(!cc.version.empty());
  CHECK(!cc.cpu.empty());
  CHECK((cc.vector_bytes == 16 || cc.vector_bytes == 32 || cc.vector_bytes == 64));
}

TEST_CASE("kernel cache: miss compiles, hit loads, key covers source") {
  TempDir dir;
  KernelCache cache(dir.path.string());
  const CompilerInfo& cc = host_compiler();
  BuildResult first = cache.load_or_build(kernel_source(1), cc);
  CHECK_FALSE(first.cache_hit);
  check_kernel(first, 1);
  CHECK(fs::exists(first.path));
  CHECK(fs::exists(first.source_path));  // kept next to the object for inspection

  BuildResult second = cache.load_or_build(kernel_source(1), cc);
  CHECK(second.cache_hit);
  CHECK(second.path == first.path);
  check_kernel(second, 1);

  BuildResult other = cache.load_or_build(kernel_source(2), cc);
  CHECK_FALSE(other.cache_hit);
  CHECK(other.path != first.path);
  check_kernel(other, 2);

  // Different flags are a different entry.
  CompilerInfo cc2 = cc;
  cc2.flags.push_back("-DTHEA_TEST_FLAG=1");
  CHECK(KernelCache::key_for(kernel_source(1), cc2) != KernelCache::key_for(kernel_source(1), cc));
}

TEST_CASE("kernel cache: THEA_CACHE_DIR=off builds, loads and leaves no file behind") {
  setenv("THEA_CACHE_DIR", "off", 1);
  KernelCache cache;
  unsetenv("THEA_CACHE_DIR");
  CHECK_FALSE(cache.enabled());
  const CompilerInfo& cc = host_compiler();
  const std::string src = kernel_source(5);
  const std::string prefix = "thea-" + disk_cache::digest128(KernelCache::key_for(src, cc));
  auto leftovers = [&] {
    int n = 0;
    for (const auto& e : fs::directory_iterator(fs::temp_directory_path()))
      n += e.path().filename().string().rfind(prefix, 0) == 0;
    return n;
  };
  for (int i = 0; i < 2; ++i) {  // never a hit: every build compiles
    BuildResult built = cache.load_or_build(src, cc);
    CHECK_FALSE(built.cache_hit);
    check_kernel(built, 5);  // still loaded after its files are gone
    CHECK(leftovers() == 0);
  }
  // No private build folder either (one was left per process before).
  CHECK_FALSE(
      fs::exists(fs::temp_directory_path() / ("thea-nocache-" + std::to_string(::getpid()))));
}

TEST_CASE("kernel cache: a corrupt or truncated entry is detected and rebuilt") {
  TempDir dir;
  KernelCache cache(dir.path.string());
  const CompilerInfo& cc = host_compiler();
  std::string src = kernel_source(3);
  BuildResult built = cache.load_or_build(src, cc);
  const std::string key = KernelCache::key_for(src, cc);
  REQUIRE(KernelCache::valid_entry(built.path, key));
  built.library.reset();

  SUBCASE("flipped byte") {
    std::fstream f(built.path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    char c = 0;
    f.read(&c, 1);
    c = static_cast<char>(c ^ 0x5a);
    f.seekp(100);
    f.write(&c, 1);
  }
  SUBCASE("truncated") { fs::resize_file(built.path, fs::file_size(built.path) / 2); }
  SUBCASE("garbage") {
    std::ofstream f(built.path, std::ios::binary | std::ios::trunc);
    f << "not a shared object";
  }
  CHECK_FALSE(KernelCache::valid_entry(built.path, key));
  BuildResult rebuilt = cache.load_or_build(src, cc);
  CHECK_FALSE(rebuilt.cache_hit);
  CHECK(KernelCache::valid_entry(rebuilt.path, key));
  check_kernel(rebuilt, 3);
}

TEST_CASE("kernel cache: concurrent processes building one key never see a torn file") {
  TempDir dir;
  const CompilerInfo& cc = host_compiler();
  std::string src = kernel_source(4);
  std::vector<pid_t> kids;
  for (int k = 0; k < 3; ++k) {
    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      int code = 0;
      try {
        KernelCache cache(dir.path.string());
        BuildResult r = cache.load_or_build(src, cc);
        auto fn = reinterpret_cast<TestKernel>(r.library->symbol("thea_test_kernel"));
        float a = 1, out = 0;
        fn(&a, &out, 1);
        code = out == 6.0f ? 0 : 2;
      } catch (...) {
        code = 3;
      }
      ::_exit(code);
    }
    kids.push_back(pid);
  }
  for (pid_t pid : kids) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
  }
  // No temporaries are left behind, and the published entry is whole.
  int entries = 0;
  for (const auto& e : fs::directory_iterator(dir.path)) {
    CHECK(e.path().string().find(".tmp.") == std::string::npos);
    if (e.path().extension() == ".so") ++entries;
  }
  CHECK(entries == 1);
  CHECK(KernelCache::valid_entry(
      KernelCache(dir.path.string()).path_for(KernelCache::key_for(src, cc)),
      KernelCache::key_for(src, cc)));
}

TEST_CASE("compiler errors name the compiler and keep the source") {
  TempDir dir;
  KernelCache cache(dir.path.string());
  std::string bad = "extern \"C\" void f() { this is not C++; }\n";
  try {
    cache.load_or_build(bad, host_compiler());
    FAIL("expected a CompileError");
  } catch (const CompileError& e) {
    std::string msg = e.what();
    CHECK(msg.find("compiling kernels failed") != std::string::npos);
    CHECK(msg.find("source kept at") != std::string::npos);
    CHECK(msg.find("error") != std::string::npos);
  }
}

TEST_CASE("a missing compiler is reported clearly") {
  CompilerInfo cc = probe_compiler("/nonexistent/thea-no-such-c++");
  CHECK_FALSE(cc.unavailable.empty());
  CHECK(cc.unavailable.find("/nonexistent/thea-no-such-c++") != std::string::npos);
  TempDir dir;
  KernelCache cache(dir.path.string());
  CHECK_THROWS_AS(cache.load_or_build(kernel_source(5), cc), CompileError);
}

TEST_CASE("loader reports a missing symbol") {
  TempDir dir;
  KernelCache cache(dir.path.string());
  BuildResult r = cache.load_or_build(kernel_source(6), host_compiler());
  CHECK_THROWS_WITH_AS(r.library->symbol("no_such_kernel"), doctest::Contains("no_such_kernel"),
                       CompileError);
}

TEST_CASE("thread pool runs every part exactly once") {
  for (int threads : {1, 2, 3}) {
    ThreadPool pool(threads, 50);
    CHECK(pool.threads() == threads);
    for (int nparts : {1, 2, 7, 64}) {
      std::vector<std::atomic<int>> hits(nparts);
      struct Ctx {
        std::vector<std::atomic<int>>* hits;
      } ctx{&hits};
      for (int rep = 0; rep < 200; ++rep) {
        pool.run(
            nparts, [](void* c, int part) { (*static_cast<Ctx*>(c)->hits)[part].fetch_add(1); },
            &ctx);
      }
      for (int p = 0; p < nparts; ++p) CHECK(hits[p].load() == 200);
    }
  }
}

TEST_CASE("thread pool: helpers that sleep are woken for later launches") {
  ThreadPool pool(2, 1);  // helpers go to sleep almost at once
  std::atomic<int> sum{0};
  for (int rep = 0; rep < 20; ++rep) {
    ::usleep(2000);
    pool.run(
        4, [](void* c, int part) { static_cast<std::atomic<int>*>(c)->fetch_add(part + 1); }, &sum);
  }
  CHECK(sum.load() == 20 * 10);
}
