#include "thread_pool.hpp"

#include <linux/futex.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <string>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define THEA_CPU_RELAX() _mm_pause()
#else
#define THEA_CPU_RELAX() ((void)0)
#endif

namespace thea::cpu {
namespace {

constexpr std::uint64_t kPartMask = 0xffffffffULL;

// Raw futex calls: libstdc++ 12's atomic::wait can lose wake-ups (seen as a hang at exit).
void futex_wait(std::atomic<std::uint32_t>* word, std::uint32_t expected) {
  ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), FUTEX_WAIT_PRIVATE, expected,
            nullptr, nullptr, 0);
}
void futex_wake_all(std::atomic<std::uint32_t>* word) {
  ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr,
            nullptr, 0);
}

std::uint64_t pack(std::uint32_t gen, std::uint32_t next) {
  return (static_cast<std::uint64_t>(gen) << 32) | next;
}

}  // namespace

ThreadPool::ThreadPool(int threads, int spin_microseconds) : spin_us_(spin_microseconds) {
  for (int i = 1; i < threads; ++i) helpers_.emplace_back([this] { helper_loop(); });
}

ThreadPool::~ThreadPool() {
  stop_.store(true, std::memory_order_release);
  generation_.fetch_add(1, std::memory_order_release);
  futex_wake_all(&generation_);
  for (auto& t : helpers_) t.join();
}

int ThreadPool::default_threads() {
  if (const char* env = std::getenv("THEA_NUM_THREADS"); env && *env) {
    int n = std::atoi(env);
    if (n >= 1) return n < 256 ? n : 256;
  }
  unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : static_cast<int>(hw);
}

ThreadPool& ThreadPool::global() {
  // Leaked on purpose: helpers must outlive every static Program destroyed at exit.
  static ThreadPool* pool = new ThreadPool(default_threads());
  return *pool;
}

int ThreadPool::work(std::uint32_t gen) {
  int ran = 0;
  for (;;) {
    std::uint64_t s = state_.load(std::memory_order_acquire);
    if ((s >> 32) != gen) return ran;
    auto next = static_cast<std::uint32_t>(s & kPartMask);
    // Fields are read before the claim; a failed CAS (new generation) discards them.
    PartFn fn = fn_.load(std::memory_order_relaxed);
    void* ctx = ctx_.load(std::memory_order_relaxed);
    auto nparts = static_cast<std::uint32_t>(nparts_.load(std::memory_order_relaxed));
    if (next >= nparts) return ran;
    if (!state_.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel)) continue;
    fn(ctx, static_cast<int>(next));
    ++ran;
    done_.fetch_add(1, std::memory_order_release);
  }
}

void ThreadPool::helper_loop() {
  std::uint32_t seen = generation_.load(std::memory_order_acquire);
  for (;;) {
    // A helper can start after its pool is already being destroyed (the caller ran every
    // launch alone), so stop is checked before every wait.
    if (stop_.load(std::memory_order_acquire)) return;
    // Spin for a while: launches come in quick succession during a training loop.
    auto deadline = std::chrono::steady_clock::now() + std::chrono::microseconds(spin_us_);
    std::uint32_t gen = seen;
    int polls = 0;
    const auto yield_after = std::chrono::steady_clock::now() + std::chrono::microseconds(10);
    while ((gen = generation_.load(std::memory_order_acquire)) == seen) {
      THEA_CPU_RELAX();
      if (++polls % 64 != 0) continue;
      const auto t = std::chrono::steady_clock::now();
      // After a short busy spin, keep polling through sched_yield: on an idle core it
      // returns at once, on a busy one it lets the other processes (and our own caller)
      // run instead of burning their time.
      if (t > yield_after) sched_yield();
      if (t > deadline) {
        sleepers_.fetch_add(1, std::memory_order_seq_cst);
        // Re-check after announcing ourselves, so a launch published meanwhile is not missed.
        if (generation_.load(std::memory_order_seq_cst) == seen &&
            !stop_.load(std::memory_order_seq_cst))
          futex_wait(&generation_, seen);
        sleepers_.fetch_sub(1, std::memory_order_relaxed);
        deadline = std::chrono::steady_clock::now() + std::chrono::microseconds(spin_us_);
      }
    }
    seen = gen;
    if (stop_.load(std::memory_order_acquire)) return;
    if (work(gen) > 0) helped_.fetch_add(1, std::memory_order_relaxed);
  }
}

void ThreadPool::run(int nparts, PartFn fn, void* ctx, bool solo) {
  if (nparts <= 0) return;
  if (helpers_.empty() || nparts == 1 || solo) {
    for (int p = 0; p < nparts; ++p) fn(ctx, p);
    return;
  }
  if (solo_left_ > 0) {
    // Helpers were recently too late: the same parts, in order, on this thread.
    --solo_left_;
    ++solo_;
    for (int p = 0; p < nparts; ++p) fn(ctx, p);
    return;
  }
  std::uint32_t gen = generation_.load(std::memory_order_relaxed) + 1;
  fn_.store(fn, std::memory_order_relaxed);
  ctx_.store(ctx, std::memory_order_relaxed);
  nparts_.store(nparts, std::memory_order_relaxed);
  done_.store(0, std::memory_order_relaxed);
  state_.store(pack(gen, 0), std::memory_order_release);
  generation_.store(gen, std::memory_order_seq_cst);
  if (sleepers_.load(std::memory_order_seq_cst) > 0) futex_wake_all(&generation_);
  const auto t_mine = std::chrono::steady_clock::now();
  int mine = work(gen);
  const auto t_done_mine = std::chrono::steady_clock::now();
  // Wait for parts that helpers claimed; yield when they take long (a descheduled helper
  // sharing our core gets to run).
  int polls = 0;
  bool waited = false;
  while (done_.load(std::memory_order_acquire) < nparts) {
    THEA_CPU_RELAX();
    waited = true;
    if (++polls > 2000) sched_yield();
  }
  if (waited) {
    // A helper still busy long after we ran out of parts was preempted mid-part (a busy,
    // shared machine): one thread is faster until the machine calms down.
    const auto now = std::chrono::steady_clock::now();
    const auto ours = std::max(t_done_mine - t_mine,
                               std::chrono::steady_clock::duration(std::chrono::microseconds(20)));
    if (now - t_done_mine > 4 * ours) {
      solo_left_ = solo_penalty_;
      solo_penalty_ = std::min<std::uint64_t>(solo_penalty_ * 2, 4096);
    } else {
      solo_penalty_ = 16;
    }
  } else {
    solo_penalty_ = 16;
  }
  (void)mine;
  // Retire the launch before the next one rewrites fn_/ctx_/nparts_: no claim can succeed
  // against a retired state, so a late helper never pairs this generation with new fields.
  state_.store(pack(gen, 0xffffffffU), std::memory_order_release);
}

}  // namespace thea::cpu
