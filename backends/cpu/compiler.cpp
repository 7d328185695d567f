#include "compiler.hpp"

#include <dlfcn.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>

#include "disk_cache.hpp"
#include "thea/error.hpp"

extern char** environ;

namespace thea::cpu {
namespace {

namespace fs = std::filesystem;

std::string env_or_empty(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

struct RunResult {
  int status = -1;  // exit code; -1 when it could not start or was killed
  std::string output;
};

// Runs argv (no shell) with stdout+stderr captured.
RunResult run_capture(const std::vector<std::string>& args) {
  RunResult result;
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    result.output = std::string("pipe: ") + std::strerror(errno);
    return result;
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[1], 1);
  posix_spawn_file_actions_adddup2(&actions, fds[1], 2);
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = 0;
  int rc = ::posix_spawnp(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(fds[1]);
  if (rc != 0) {
    ::close(fds[0]);
    result.output = "cannot run '" + args[0] + "': " + std::strerror(rc);
    return result;
  }
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    result.output.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fds[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  result.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  if (!WIFEXITED(status) && result.status == -1 && result.output.empty())
    result.output = "'" + args[0] + "' was killed";
  // posix_spawnp reports a missing program through the child's exit status 127.
  if (result.status == 127 && result.output.empty()) result.output = "'" + args[0] + "' not found";
  return result;
}

std::string first_line(const std::string& s) {
  auto end = s.find('\n');
  return s.substr(0, end);
}

std::string cpu_identity() {
  std::ifstream in("/proc/cpuinfo");
  std::string line, model, flags;
  while (std::getline(in, line)) {
    if (model.empty() && line.rfind("model name", 0) == 0) model = line.substr(line.find(':') + 1);
    if (flags.empty() && line.rfind("flags", 0) == 0) flags = line.substr(line.find(':') + 1);
    if (!model.empty() && !flags.empty()) break;
  }
  // The flags line is long; its digest identifies the ISA as well as the full text.
  return model + " | isa " + disk_cache::digest128(flags);
}

int widest_vector_bytes() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return 64;
  if (__builtin_cpu_supports("avx2")) return 32;
#endif
  return 16;
}

void finish_probe(CompilerInfo& cc) {
  cc.cpu = cpu_identity();
  cc.vector_bytes = widest_vector_bytes();
  cc.flags = {"-std=c++17", "-O3", "-march=native", "-fPIC", "-shared", "-pipe",
              // errno is never read by kernels; without it sqrt/exp inline. No fast-math:
              // NaN handling and rounding must match the reference backend.
              "-fno-math-errno", "-fno-plt", "-w",
              // `omp simd` marks loops over independent rows; no OpenMP runtime.
              "-fopenmp-simd"};
  if (cc.vector_bytes == 64) cc.flags.push_back("-mprefer-vector-width=512");
#if defined(__x86_64__)
  // GCC vectorises exp/log through glibc's libmvec when they are declared SIMD-callable (the
  // generated source does so under THEA_USE_LIBMVEC); clang has no such attribute.
  const bool gcc_like = cc.version.find("clang") == std::string::npos;
  bool have_mvec = false;
  for (const char* dir : {"/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/lib64", "/usr/lib"})
    if (::access((std::string(dir) + "/libmvec.so").c_str(), R_OK) == 0) have_mvec = true;
  if (gcc_like && have_mvec) {
    cc.flags.push_back("-DTHEA_USE_LIBMVEC=1");
    cc.libs.push_back("-lmvec");
  }
#endif
}

}  // namespace

// The compiler's file identity (resolved path, size, mtime): it changes whenever the
// compiler is upgraded, so `--version` (a process spawn, ~5 ms) runs once per compiler and
// is remembered in the cache folder instead of on every process start.
std::string compiler_identity(const std::string& path) {
  std::string resolved = path;
  if (path.find('/') == std::string::npos) {
    const char* env_path = std::getenv("PATH");
    std::stringstream dirs(env_path ? env_path : "/usr/bin:/bin");
    std::string dir;
    while (std::getline(dirs, dir, ':')) {
      std::string cand = (dir.empty() ? "." : dir) + "/" + path;
      if (::access(cand.c_str(), X_OK) == 0) {
        resolved = cand;
        break;
      }
    }
  }
  std::error_code ec;
  fs::path real = fs::canonical(resolved, ec);
  if (ec) return {};
  struct stat st {};
  if (::stat(real.c_str(), &st) != 0) return {};
  return real.string() + "|" + std::to_string(st.st_size) + "|" + std::to_string(st.st_mtime);
}

CompilerInfo probe_compiler(const std::string& path) {
  CompilerInfo cc;
  cc.path = path;
  const std::string identity = compiler_identity(path);
  const std::string memo =
      identity.empty() || disk_cache::disabled_by_env()
          ? std::string()
          : KernelCache::default_dir() + "/compiler-" + disk_cache::digest128(identity) + ".txt";
  if (!memo.empty()) {
    std::string text;
    if (disk_cache::read_file(memo, text) && text.rfind(identity + "\n", 0) == 0) {
      cc.version = first_line(text.substr(identity.size() + 1));
      if (!cc.version.empty()) {
        finish_probe(cc);
        return cc;
      }
    }
  }
  RunResult r = run_capture({path, "--version"});
  if (r.status != 0) {
    cc.unavailable = "the C++ compiler '" + path + "' does not run (" +
                     first_line(r.output.empty() ? std::string("no output") : r.output) +
                     "); install g++ or clang++, or point THEA_CXX at a compiler";
    return cc;
  }
  cc.version = first_line(r.output);
  if (!memo.empty()) {
    // Best effort, published atomically like cache entries.
    std::error_code ec;
    fs::create_directories(fs::path(memo).parent_path(), ec);
    std::string tmp = memo + disk_cache::unique_suffix();
    {
      std::ofstream out(tmp, std::ios::binary);
      out << identity << "\n" << cc.version << "\n";
    }
    if (::rename(tmp.c_str(), memo.c_str()) != 0) ::unlink(tmp.c_str());
  }
  finish_probe(cc);
  return cc;
}

const CompilerInfo& host_compiler() {
  static const CompilerInfo info = [] {
    std::string env = env_or_empty("THEA_CXX");
    if (!env.empty()) return probe_compiler(env);
#ifdef THEA_JIT_CXX_DEFAULT
    CompilerInfo configured = probe_compiler(THEA_JIT_CXX_DEFAULT);
    if (configured.unavailable.empty()) return configured;
#endif
    CompilerInfo first;
    for (const char* name : {"c++", "g++", "clang++"}) {
      CompilerInfo c = probe_compiler(name);
      if (c.unavailable.empty()) return c;
      if (first.path.empty()) first = c;
    }
    first.unavailable =
        "no C++ compiler found (tried THEA_CXX, the configure-time compiler, c++, g++, "
        "clang++); install g++ (Debian package 'g++') or set THEA_CXX";
    return first;
  }();
  return info;
}

SharedLibrary::SharedLibrary(const std::string& path) : path_(path) {
  handle_ = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!handle_) {
    const char* err = ::dlerror();
    throw CompileError("cannot load compiled kernels " + path + ": " +
                       (err ? err : "dlopen failed"));
  }
}

SharedLibrary::~SharedLibrary() {
  if (handle_) ::dlclose(handle_);
}

void* SharedLibrary::symbol(const std::string& name) const {
  ::dlerror();
  void* p = ::dlsym(handle_, name.c_str());
  if (!p) throw CompileError("compiled kernels " + path_ + " lack the symbol '" + name + "'");
  return p;
}

void run_compiler(const CompilerInfo& cc, const std::string& source_path,
                  const std::string& out_path) {
  if (!cc.unavailable.empty()) throw CompileError(cc.unavailable);
  std::vector<std::string> args{cc.path};
  args.insert(args.end(), cc.flags.begin(), cc.flags.end());
  args.insert(args.end(), {"-x", "c++", source_path, "-x", "none", "-o", out_path});
  args.insert(args.end(), cc.libs.begin(), cc.libs.end());
  RunResult r = run_capture(args);
  if (r.status != 0) {
    std::string log = r.output;
    if (log.size() > 4000) log = log.substr(0, 4000) + "\n... (truncated)";
    throw CompileError("[cpu] compiling kernels failed (" + cc.path + ", exit " +
                       std::to_string(r.status) + "); source kept at " + source_path + ":\n" + log);
  }
}

std::string KernelCache::default_dir() {
  // Empty with THEA_CACHE_DIR=off: the constructor then builds in a private folder.
  const std::string root = disk_cache::root_dir();
  return root.empty() ? root : root + "/cpu";
}

KernelCache::KernelCache(std::string dir) {
  // Uncached (THEA_CACHE_DIR=off, or a cache folder that cannot be made): builds go to the
  // system's temporary folder under unique names and are removed once loaded.
  const std::string uncached = fs::temp_directory_path().string();
  if (dir.empty() && disk_cache::disabled_by_env()) {
    enabled_ = false;
    dir_ = uncached;
    return;
  }
  dir_ = dir.empty() ? default_dir() : std::move(dir);
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec) {
    enabled_ = false;
    dir_ = uncached;
  }
}

std::string KernelCache::key_for(const std::string& source, const CompilerInfo& cc) {
  std::string key = "thea-cpu-kernels v1\ncompiler: " + cc.path + "\nversion: " + cc.version +
                    "\ncpu: " + cc.cpu + "\nflags:";
  for (const auto& f : cc.flags) key += " " + f;
  for (const auto& f : cc.libs) key += " " + f;
  key += "\nsource-digest: " + disk_cache::digest128(source) + "\n";
  return key;
}

std::string KernelCache::path_for(const std::string& key) const {
  return dir_ + "/" + disk_cache::digest128(key) + ".so";
}

bool KernelCache::valid_entry(const std::string& path, const std::string& key) {
  return disk_cache::valid(path, key);
}

BuildResult KernelCache::load_or_build(const std::string& source, const CompilerInfo& cc) const {
  auto t0 = std::chrono::steady_clock::now();
  BuildResult result;
  std::string key = key_for(source, cc);
  std::string path = path_for(key);
  if (enabled_ && valid_entry(path, key)) {
    try {
      result.library = std::make_shared<SharedLibrary>(path);
      result.cache_hit = true;
      result.path = path;
      result.seconds = seconds_since(t0);
      return result;
    } catch (const CompileError&) {
      // A complete entry that does not load (built for another libc?): rebuild it below.
    }
  }
  if (!cc.unavailable.empty()) throw CompileError(cc.unavailable);
  const std::string stem =
      enabled_ ? path.substr(0, path.size() - 3) : dir_ + "/thea-" + disk_cache::digest128(key);
  std::string suffix = disk_cache::unique_suffix();
  std::string src_tmp = stem + suffix + ".cpp";
  std::string obj_tmp = stem + suffix + ".so";
  {
    std::ofstream out(src_tmp, std::ios::binary);
    out << source;
    if (!out) throw CompileError("[cpu] cannot write kernel source to " + src_tmp);
  }
  try {
    run_compiler(cc, src_tmp, obj_tmp);
  } catch (...) {
    ::unlink(obj_tmp.c_str());
    throw;  // the source stays for inspection
  }
  if (!enabled_) {
    // The loaded mapping stays valid after the files are removed.
    struct Remove {
      const std::string &a, &b;
      ~Remove() {
        ::unlink(a.c_str());
        ::unlink(b.c_str());
      }
    } remove{obj_tmp, src_tmp};
    result.library = std::make_shared<SharedLibrary>(obj_tmp);
    result.seconds = seconds_since(t0);
    return result;
  }
  if (!disk_cache::seal(obj_tmp, key)) {
    ::unlink(obj_tmp.c_str());
    ::unlink(src_tmp.c_str());
    throw CompileError("[cpu] cannot write the compiled kernels to " + obj_tmp);
  }
  // Atomic publish: concurrent builders of the same key each rename a complete file.
  std::string src_final = stem + ".cpp";
  ::rename(src_tmp.c_str(), src_final.c_str());
  if (::rename(obj_tmp.c_str(), path.c_str()) != 0) {
    ::unlink(obj_tmp.c_str());
    throw CompileError("[cpu] cannot publish compiled kernels at " + path + ": " +
                       std::strerror(errno));
  }
  result.library = std::make_shared<SharedLibrary>(path);
  result.path = path;
  result.source_path = src_final;
  result.seconds = seconds_since(t0);
  return result;
}

}  // namespace thea::cpu
