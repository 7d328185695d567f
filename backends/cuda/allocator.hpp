// A caching device allocator: freed blocks are kept in size-ordered free lists and reused,
// so steady-state training never calls cudaMalloc/cudaFree (which synchronize the device).
// The bookkeeping is independent of CUDA (RawMemory is an interface) so it is unit-tested
// on the host.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

namespace thea::cuda {

// Where blocks really come from: cudaMalloc/cudaFree on a GPU, malloc in tests.
class RawMemory {
 public:
  virtual ~RawMemory() = default;
  // nullptr when out of memory (no throw): the allocator then frees its cache and retries.
  virtual void* allocate(std::size_t nbytes) = 0;
  virtual void deallocate(void* ptr) = 0;
  virtual std::string describe() const { return "device memory"; }
};

struct AllocatorStats {
  std::size_t in_use_bytes = 0;  // handed out (rounded sizes)
  std::size_t cached_bytes = 0;  // free blocks kept for reuse
  std::size_t peak_in_use_bytes = 0;
  std::size_t raw_allocs = 0;  // calls to RawMemory::allocate that succeeded
  std::size_t raw_frees = 0;
  std::size_t cache_hits = 0;  // allocations served from the cache
  std::size_t live_blocks = 0;
};

class CachingAllocator {
 public:
  explicit CachingAllocator(std::unique_ptr<RawMemory> raw);
  ~CachingAllocator();  // returns every cached block; live blocks are reported leaked
  CachingAllocator(const CachingAllocator&) = delete;
  CachingAllocator& operator=(const CachingAllocator&) = delete;

  // Size classes: multiples of 512 B below 1 MiB, of 2 MiB above (fewer, larger raw
  // blocks for datasets; little waste for the many small buffers of a step).
  static std::size_t round_size(std::size_t nbytes);
  // Largest slack accepted when reusing a cached block for a smaller request.
  static std::size_t max_reuse_size(std::size_t rounded);

  // Never returns nullptr for nbytes > 0; throws BackendError when memory is exhausted
  // even after freeing the cache. nbytes == 0 returns nullptr.
  void* allocate(std::size_t nbytes);
  // Returns the block to the cache. The caller guarantees no queued GPU work still uses
  // it (synchronize its stream first). Unknown pointers throw BackendError.
  void deallocate(void* ptr);
  // Gives every cached block back to RawMemory.
  void release_cached();
  std::size_t block_size(const void* ptr) const;  // rounded size of a live block

  AllocatorStats stats() const;

 private:
  std::unique_ptr<RawMemory> raw_;
  mutable std::mutex mutex_;
  std::multimap<std::size_t, void*> free_;             // rounded size -> cached block
  std::unordered_map<const void*, std::size_t> live_;  // handed-out block -> rounded size
  AllocatorStats stats_;
};

// The process-wide allocator over cudaMalloc for the current device.
CachingAllocator& device_allocator();

// A device buffer owned by the allocator; moves, never copies.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(CachingAllocator* alloc, std::size_t nbytes)
      : alloc_(alloc), ptr_(alloc->allocate(nbytes)), nbytes_(nbytes) {}
  ~DeviceBuffer() { reset(); }
  DeviceBuffer(DeviceBuffer&& o) noexcept : alloc_(o.alloc_), ptr_(o.ptr_), nbytes_(o.nbytes_) {
    o.ptr_ = nullptr;
    o.nbytes_ = 0;
  }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      reset();
      alloc_ = o.alloc_;
      ptr_ = o.ptr_;
      nbytes_ = o.nbytes_;
      o.ptr_ = nullptr;
      o.nbytes_ = 0;
    }
    return *this;
  }
  void reset() noexcept;
  void* get() const { return ptr_; }
  std::size_t nbytes() const { return nbytes_; }
  explicit operator bool() const { return ptr_ != nullptr; }

 private:
  CachingAllocator* alloc_ = nullptr;
  void* ptr_ = nullptr;
  std::size_t nbytes_ = 0;
};

}  // namespace thea::cuda
