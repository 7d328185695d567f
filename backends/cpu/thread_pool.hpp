// A small fork-join pool for kernel launches on a machine with few, shared cores.
// Parts are claimed one at a time from a shared counter, so the caller always works too and
// a helper the OS has not scheduled never holds a launch up (the caller takes its parts).
// Helpers spin briefly between launches (a train step launches every few microseconds) and
// then sleep on a futex, so an idle pool costs nothing and never spin-stalls the machine.
#pragma once

#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

namespace thea::cpu {

class ThreadPool {
 public:
  using PartFn = void (*)(void* ctx, int part);

  // `threads` counts the caller: 1 means no helper threads.
  explicit ThreadPool(int threads, int spin_microseconds = 100);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // THEA_NUM_THREADS, else the default (see thread_pool.cpp for the measured reason).
  static ThreadPool& global();
  static int default_threads();

  int threads() const { return static_cast<int>(helpers_.size()) + 1; }

  // Calls fn(ctx, p) once for every p in [0, nparts) and returns when all have finished.
  // Not reentrant: fn must not call run() on the same pool.
  // `solo`: run every part on the caller (same parts, same order) without waking helpers.
  void run(int nparts, PartFn fn, void* ctx, bool solo = false);

  // Launches since construction that a helper joined (for the profiler and tests).
  std::uint64_t helped_launches() const { return helped_.load(std::memory_order_relaxed); }
  // Launches run by the caller alone because helpers had been stalling (see run()).
  std::uint64_t solo_launches() const { return solo_; }

 private:
  void helper_loop();
  // Claims and runs parts of launch `gen` until none are left; returns how many it ran.
  int work(std::uint32_t gen);

  std::vector<std::thread> helpers_;
  int spin_us_;
  // High 32 bits: launch generation; low 32 bits: next unclaimed part.
  std::atomic<std::uint64_t> state_{0};
  std::atomic<std::uint32_t> generation_{0};  // futex word the helpers sleep on
  std::atomic<PartFn> fn_{nullptr};
  std::atomic<void*> ctx_{nullptr};
  std::atomic<int> nparts_{0};
  std::atomic<int> done_{0};
  std::atomic<int> sleepers_{0};
  std::atomic<bool> stop_{false};
  std::atomic<std::uint64_t> helped_{0};
  // Back-off when helpers stall (preempted on a busy machine): the next `solo_left_` launches
  // run on the caller alone; the penalty doubles on every stall and resets after a clean
  // parallel launch. Caller-only state (run() is not reentrant).
  std::uint64_t solo_left_ = 0;
  std::uint64_t solo_penalty_ = 16;
  std::uint64_t solo_ = 0;
};

}  // namespace thea::cpu
