#include "cuda/allocator.hpp"

#include <cuda_runtime_api.h>

#include "cuda/cuda_libs.hpp"
#include "cuda/device.hpp"
#include "thea/error.hpp"

namespace thea::cuda {
namespace {

constexpr std::size_t kSmallAlign = 512;
constexpr std::size_t kSmallLimit = std::size_t{1} << 20;
constexpr std::size_t kLargeAlign = std::size_t{2} << 20;

std::string mib(std::size_t bytes) {
  return std::to_string(static_cast<double>(bytes) / (1024.0 * 1024.0)).substr(0, 8) + " MiB";
}

class CudaRawMemory : public RawMemory {
 public:
  void* allocate(std::size_t nbytes) override {
    make_current();
    void* p = nullptr;
    cudaError_t err = cudaMalloc(&p, nbytes);
    if (err == cudaErrorMemoryAllocation) {
      cudaGetLastError();  // not sticky; clear it so later calls do not see it
      return nullptr;
    }
    check_cuda(err, "cudaMalloc");
    return p;
  }
  void deallocate(void* ptr) override { cudaFree(ptr); }
  std::string describe() const override {
    return "device memory of " + device().name + " (" + mib(device().total_mem) + ")";
  }
};

}  // namespace

std::size_t CachingAllocator::round_size(std::size_t nbytes) {
  if (nbytes == 0) return 0;
  if (nbytes < kSmallLimit) return (nbytes + kSmallAlign - 1) / kSmallAlign * kSmallAlign;
  return (nbytes + kLargeAlign - 1) / kLargeAlign * kLargeAlign;
}

std::size_t CachingAllocator::max_reuse_size(std::size_t rounded) {
  // Small blocks reuse only their exact class; large ones accept up to 25% slack.
  if (rounded < kSmallLimit) return rounded;
  return rounded + rounded / 4;
}

CachingAllocator::CachingAllocator(std::unique_ptr<RawMemory> raw) : raw_(std::move(raw)) {}

CachingAllocator::~CachingAllocator() {
  release_cached();
  // Live blocks at exit belong to objects destroyed after us (static order); leave them
  // to process teardown rather than free memory someone still points at.
}

void* CachingAllocator::allocate(std::size_t nbytes) {
  if (nbytes == 0) return nullptr;
  std::size_t size = round_size(nbytes);
  std::lock_guard lock(mutex_);
  auto it = free_.lower_bound(size);
  if (it != free_.end() && it->first <= max_reuse_size(size)) {
    void* p = it->second;
    std::size_t got = it->first;
    free_.erase(it);
    stats_.cached_bytes -= got;
    stats_.in_use_bytes += got;
    stats_.cache_hits++;
    stats_.live_blocks++;
    if (stats_.in_use_bytes > stats_.peak_in_use_bytes)
      stats_.peak_in_use_bytes = stats_.in_use_bytes;
    live_[p] = got;
    return p;
  }
  void* p = raw_->allocate(size);
  if (!p && !free_.empty()) {
    // Out of memory: give the cache back and try once more.
    for (auto& [s, q] : free_) {
      raw_->deallocate(q);
      stats_.raw_frees++;
    }
    free_.clear();
    stats_.cached_bytes = 0;
    p = raw_->allocate(size);
  }
  if (!p)
    throw BackendError("cuda: out of memory allocating " + mib(size) + " of " + raw_->describe() +
                       " (thea holds " + mib(stats_.in_use_bytes) + " in " +
                       std::to_string(stats_.live_blocks) + " buffers)");
  stats_.raw_allocs++;
  stats_.in_use_bytes += size;
  stats_.live_blocks++;
  if (stats_.in_use_bytes > stats_.peak_in_use_bytes)
    stats_.peak_in_use_bytes = stats_.in_use_bytes;
  live_[p] = size;
  return p;
}

void CachingAllocator::deallocate(void* ptr) {
  if (!ptr) return;
  std::lock_guard lock(mutex_);
  auto it = live_.find(ptr);
  if (it == live_.end())
    throw BackendError("cuda: CachingAllocator::deallocate of a pointer it did not allocate");
  std::size_t size = it->second;
  live_.erase(it);
  stats_.in_use_bytes -= size;
  stats_.live_blocks--;
  stats_.cached_bytes += size;
  free_.emplace(size, ptr);
}

void CachingAllocator::release_cached() {
  std::lock_guard lock(mutex_);
  for (auto& [size, p] : free_) {
    raw_->deallocate(p);
    stats_.raw_frees++;
  }
  free_.clear();
  stats_.cached_bytes = 0;
}

std::size_t CachingAllocator::block_size(const void* ptr) const {
  std::lock_guard lock(mutex_);
  auto it = live_.find(ptr);
  return it == live_.end() ? 0 : it->second;
}

AllocatorStats CachingAllocator::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

CachingAllocator& device_allocator() {
  // Leaked on purpose: shared-variable mirrors may outlive any static destructor order.
  static CachingAllocator* alloc = new CachingAllocator(std::make_unique<CudaRawMemory>());
  return *alloc;
}

void DeviceBuffer::reset() noexcept {
  if (ptr_ && alloc_) {
    try {
      alloc_->deallocate(ptr_);
    } catch (...) {
      // deallocate only throws for foreign pointers, which a DeviceBuffer never holds.
    }
  }
  ptr_ = nullptr;
  nbytes_ = 0;
}

}  // namespace thea::cuda
