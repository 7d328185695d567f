#include "cuda/nvrtc_compiler.hpp"

#include <elf.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <mutex>

#include "cuda/cuda_libs.hpp"
#include "disk_cache.hpp"
#include "thea/error.hpp"
#include "thea/rewrite.hpp"

namespace thea::cuda {

std::string nvrtc_version() {
  static const std::string v = [] {
    int major = 0, minor = 0;
    check_nvrtc(nvrtc().nvrtcVersion(&major, &minor), "nvrtcVersion");
    return std::to_string(major) + "." + std::to_string(minor);
  }();
  return v;
}

std::vector<int> nvrtc_supported_archs() {
  static const std::vector<int> archs = [] {
    int n = 0;
    check_nvrtc(nvrtc().nvrtcGetNumSupportedArchs(&n), "nvrtcGetNumSupportedArchs");
    std::vector<int> a(static_cast<std::size_t>(n));
    if (n > 0) check_nvrtc(nvrtc().nvrtcGetSupportedArchs(a.data()), "nvrtcGetSupportedArchs");
    return a;
  }();
  return archs;
}

std::vector<std::string> default_nvrtc_options() {
  return {"-std=c++17", "--fmad=true", "-default-device"};
}

const std::string& kernel_prelude() {
  static const std::string prelude = std::string(
                                         "// thea generated CUDA\n"
                                         "typedef signed char int8_t;\n"
                                         "typedef unsigned char uint8_t;\n"
                                         "typedef int int32_t;\n"
                                         "typedef unsigned int uint32_t;\n"
                                         "typedef long long int64_t;\n"
                                         "typedef unsigned long long uint64_t;\n") +
                                     kScalarPreamble + "\n";
  return prelude;
}

int cubin_arch(const std::string& binary) {
  Elf64_Ehdr h;
  if (binary.size() < sizeof h) return -1;
  std::memcpy(&h, binary.data(), sizeof h);
  if (std::memcmp(h.e_ident, ELFMAG, SELFMAG) != 0 || h.e_machine != 190 /* EM_CUDA */) return -1;
  // CUDA ELF ABI v8 keeps the SM number in bits 8..15 of e_flags (0x5a00 for sm_90).
  return static_cast<int>((h.e_flags >> 8) & 0xff);
}

std::string compile_key(const std::string& source, const CompileTarget& target,
                        const std::vector<std::string>& options) {
  std::string key =
      "thea-cuda-kernel v1\nnvrtc " + nvrtc_version() + "\ntarget " + target.str() + "\noptions";
  for (const auto& o : options) key += " " + o;
  key += "\n";
  key += source;
  return key;
}

CompiledCode compile_cuda(const std::string& source, const CompileTarget& target,
                          const std::vector<std::string>& options, const KernelCache* cache,
                          const std::string& what) {
  auto t0 = std::chrono::steady_clock::now();
  const NvrtcApi& api = nvrtc();
  std::string key = compile_key(source, target, options);
  CompiledCode out;
  out.cubin = target.cubin;
  if (cache) {
    if (auto hit = cache->load(key)) {
      out.binary = std::move(*hit);
      out.from_cache = true;
      out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      return out;
    }
  }
  if (debug_enabled("kernels"))
    std::fprintf(stderr, "=== thea cuda %s (%s) ===\n%s\n", what.c_str(), target.str().c_str(),
                 source.c_str());

  nvrtcProgram prog = nullptr;
  check_nvrtc(
      api.nvrtcCreateProgram(&prog, source.c_str(), (what + ".cu").c_str(), 0, nullptr, nullptr),
      "nvrtcCreateProgram");
  auto destroy = [&api](nvrtcProgram* p) { api.nvrtcDestroyProgram(p); };
  std::unique_ptr<nvrtcProgram, decltype(destroy)> guard(&prog, destroy);

  std::vector<std::string> all = options;
  all.push_back(target.option());
  std::vector<const char*> argv;
  for (const auto& o : all) argv.push_back(o.c_str());
  nvrtcResult res = api.nvrtcCompileProgram(prog, static_cast<int>(argv.size()), argv.data());
  std::size_t log_size = 0;
  api.nvrtcGetProgramLogSize(prog, &log_size);
  if (log_size > 1) {
    out.log.resize(log_size);
    api.nvrtcGetProgramLog(prog, out.log.data());
    out.log.resize(log_size - 1);
  }
  if (res != NVRTC_SUCCESS) {
    std::string where;
    if (cache && cache->enabled()) {
      std::string path = cache->dir() + "/failed-" + disk_cache::digest128(key) + ".cu";
      std::ofstream f(path);
      if (f << source) where = "\n  source written to " + path;
    }
    throw CompileError("cuda: NVRTC " + nvrtc_version() + " could not compile " + what + " for " +
                       target.str() + ": " + api.nvrtcGetErrorString(res) + "\n" + out.log + where);
  }
  std::size_t size = 0;
  if (target.cubin) {
    check_nvrtc(api.nvrtcGetCUBINSize(prog, &size), "nvrtcGetCUBINSize");
    out.binary.resize(size);
    check_nvrtc(api.nvrtcGetCUBIN(prog, out.binary.data()), "nvrtcGetCUBIN");
  } else {
    check_nvrtc(api.nvrtcGetPTXSize(prog, &size), "nvrtcGetPTXSize");
    out.binary.resize(size);  // includes the terminating NUL the loader needs
    check_nvrtc(api.nvrtcGetPTX(prog, out.binary.data()), "nvrtcGetPTX");
  }
  if (cache) cache->store(key, out.binary);
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return out;
}

}  // namespace thea::cuda
