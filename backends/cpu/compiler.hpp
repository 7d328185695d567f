// The system C++ compiler as a JIT: generated kernel source -> shared object -> dlopen, through
// an on-disk cache. Lock-free between processes: entries are written to a private temporary
// file and renamed into place, so a reader never sees a torn file; every entry ends with a
// footer holding its full key and a checksum, so a corrupt or colliding entry reads as a miss
// and is rebuilt.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace thea::cpu {

// Which compiler the JIT runs, with what flags, for which CPU. Resolved once per process.
struct CompilerInfo {
  std::string path;                // absolute path or name found on PATH
  std::string version;             // first line of `path --version`
  std::vector<std::string> flags;  // -O3 -march=native ...
  std::vector<std::string> libs;   // after the source on the command line (-lmvec)
  std::string cpu;                 // model name + ISA features, part of the cache key
  int vector_bytes = 16;           // widest SIMD vector the kernels should use (16/32/64)
  std::string unavailable;         // why the compiler cannot be used, empty when it can
};

// THEA_CXX, else the compiler found at configure time, else c++/g++/clang++ on PATH.
const CompilerInfo& host_compiler();
// Resolves a compiler afresh (tests use it with a bogus path).
CompilerInfo probe_compiler(const std::string& path);

// A dlopen()ed shared object; closed when the last reference goes.
class SharedLibrary {
 public:
  // Throws CompileError with dlerror() when the file cannot be loaded.
  explicit SharedLibrary(const std::string& path);
  ~SharedLibrary();
  SharedLibrary(const SharedLibrary&) = delete;
  SharedLibrary& operator=(const SharedLibrary&) = delete;
  // Address of an exported symbol; throws CompileError naming it when absent.
  void* symbol(const std::string& name) const;
  const std::string& path() const { return path_; }

 private:
  void* handle_ = nullptr;
  std::string path_;
};

struct BuildResult {
  std::shared_ptr<SharedLibrary> library;
  bool cache_hit = false;
  double seconds = 0;       // lookup + (compile) + load
  std::string path;         // the loaded .so
  std::string source_path;  // where the source was written when compiled (for debugging)
};

class KernelCache {
 public:
  // `dir` empty: default_dir(). THEA_CACHE_DIR=off disables caching: builds go to the
  // system's temporary folder under unique names and are removed once loaded.
  explicit KernelCache(std::string dir = {});
  // $THEA_CACHE_DIR, else $XDG_CACHE_HOME/thea, else $HOME/.cache/thea; with a cpu/ subfolder.
  static std::string default_dir();
  bool enabled() const { return enabled_; }
  const std::string& dir() const { return dir_; }

  // Everything that changes the binary: source, flags, compiler version, CPU.
  static std::string key_for(const std::string& source, const CompilerInfo& cc);
  std::string path_for(const std::string& key) const;  // <dir>/<digest>.so

  // Loads the entry for (source, cc), compiling it on a miss or when the entry is corrupt.
  // Throws CompileError (with the compiler's diagnostics and the kept source path).
  BuildResult load_or_build(const std::string& source, const CompilerInfo& cc) const;

  // Whether the file at `path` is a complete entry for `key` (footer, key and checksum).
  static bool valid_entry(const std::string& path, const std::string& key);

 private:
  std::string dir_;
  bool enabled_ = true;
};

// Runs the compiler on `source_path` producing the shared object `out_path`; throws
// CompileError with the diagnostics.
void run_compiler(const CompilerInfo& cc, const std::string& source_path,
                  const std::string& out_path);

}  // namespace thea::cpu
