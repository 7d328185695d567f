#include "cuda/simt.hpp"

#include <ucontext.h>

#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "thea/error.hpp"

namespace thea::cuda {
namespace {

enum class State : std::uint8_t { Runnable, BlockBarrier, WarpBarrier, Done };

constexpr std::size_t kStackBytes = 256 * 1024;

struct Coroutine {
  ucontext_t ctx{};
  std::unique_ptr<char[]> stack;
  thea_emu_thread info{};
  State state = State::Runnable;
};

// One emulated block at a time per OS thread (the emulator serialises launches).
struct BlockRun {
  ucontext_t scheduler{};
  std::vector<Coroutine> threads;
  std::vector<long long> slots;
  std::vector<unsigned char> smem;
  Coroutine* current = nullptr;
  thea_emu_entry entry = nullptr;
  const std::int64_t* params = nullptr;
  const std::int64_t* args = nullptr;
  std::string error;
};

thread_local BlockRun* g_run = nullptr;

const thea_emu_thread* hook_current() { return &g_run->current->info; }

void yield_with(State s) {
  Coroutine* me = g_run->current;
  me->state = s;
  swapcontext(&me->ctx, &g_run->scheduler);
}

void hook_syncthreads() { yield_with(State::BlockBarrier); }
void hook_syncwarp() { yield_with(State::WarpBarrier); }
unsigned char* hook_smem() { return g_run->smem.data(); }
long long* hook_slots() { return g_run->slots.data(); }

const thea_emu_hooks kHooks = {&hook_current, &hook_syncthreads, &hook_syncwarp, &hook_smem,
                               &hook_slots};

void trampoline() {
  BlockRun* run = g_run;
  try {
    run->entry(reinterpret_cast<const long long*>(run->params),
               reinterpret_cast<const long long*>(run->args));
  } catch (const std::exception& e) {
    if (run->error.empty()) run->error = e.what();
  }
  run->current->state = State::Done;
  // uc_link returns to the scheduler.
}

void run_block(BlockRun& run, unsigned n_threads) {
  // Resume runnable threads in order until all are done, releasing barriers when every
  // live thread of the block (or of a warp) has arrived.
  while (true) {
    bool progressed = false;
    for (unsigned t = 0; t < n_threads; ++t) {
      Coroutine& c = run.threads[t];
      if (c.state != State::Runnable) continue;
      run.current = &c;
      swapcontext(&run.scheduler, &c.ctx);
      progressed = true;
    }
    bool all_done = true;
    for (unsigned t = 0; t < n_threads; ++t) all_done &= run.threads[t].state == State::Done;
    if (all_done) return;
    bool released = false;
    // Warp barriers: all live threads of the warp are at one.
    for (unsigned w = 0; w * 32 < n_threads; ++w) {
      unsigned lo = w * 32, hi = std::min(n_threads, lo + 32);
      bool all_at = true, any_at = false;
      for (unsigned t = lo; t < hi; ++t) {
        State s = run.threads[t].state;
        if (s == State::Done) continue;
        all_at &= s == State::WarpBarrier;
        any_at |= s == State::WarpBarrier;
      }
      if (all_at && any_at) {
        for (unsigned t = lo; t < hi; ++t)
          if (run.threads[t].state == State::WarpBarrier) run.threads[t].state = State::Runnable;
        released = true;
      }
    }
    if (!released) {
      bool all_at = true, any_at = false;
      for (unsigned t = 0; t < n_threads; ++t) {
        State s = run.threads[t].state;
        if (s == State::Done) continue;
        all_at &= s == State::BlockBarrier;
        any_at |= s == State::BlockBarrier;
      }
      if (all_at && any_at) {
        for (unsigned t = 0; t < n_threads; ++t)
          if (run.threads[t].state == State::BlockBarrier) run.threads[t].state = State::Runnable;
        released = true;
      }
    }
    if (!released && !progressed)
      throw Error(
          "cuda emulator: deadlock — some threads wait at a barrier others never reach "
          "(divergent __syncthreads or shuffle)");
    if (!released) {
      bool any_runnable = false;
      for (unsigned t = 0; t < n_threads; ++t)
        any_runnable |= run.threads[t].state == State::Runnable;
      if (!any_runnable)
        throw Error(
            "cuda emulator: deadlock — threads wait at different barriers "
            "(divergent __syncthreads or shuffle)");
    }
  }
}

// Out of line: getcontext is returns_twice, and inlined into simt_run's block loops it made
// GCC warn (-Wclobbered) that the loop counters might be clobbered.
[[gnu::noinline]] void start_thread(BlockRun& run, const LaunchConfig& cfg, unsigned t, unsigned bx,
                                    unsigned by, unsigned bz) {
  Coroutine& c = run.threads[t];
  c.info.bid = {bx, by, bz};
  c.info.gdim = {cfg.grid_x, cfg.grid_y, cfg.grid_z};
  c.info.bdim = {cfg.block_x, cfg.block_y, cfg.block_z};
  c.info.tid = {t % cfg.block_x, (t / cfg.block_x) % cfg.block_y, t / (cfg.block_x * cfg.block_y)};
  c.info.linear = t;
  c.state = State::Runnable;
  getcontext(&c.ctx);
  c.ctx.uc_stack.ss_sp = c.stack.get();
  c.ctx.uc_stack.ss_size = kStackBytes;
  c.ctx.uc_link = &run.scheduler;
  makecontext(&c.ctx, &trampoline, 0);
}

}  // namespace

const thea_emu_hooks* simt_hooks() { return &kHooks; }

void simt_run(const LaunchConfig& cfg, thea_emu_entry entry, const std::int64_t* params,
              const std::int64_t* args) {
  static std::mutex mutex;  // one emulated launch at a time: kernels share static state
  std::lock_guard lock(mutex);
  const unsigned n_threads = cfg.block_x * cfg.block_y * cfg.block_z;
  if (n_threads == 0 || n_threads > 1024)
    throw Error("cuda emulator: invalid block size " + cfg.str());
  BlockRun run;
  run.entry = entry;
  run.params = params;
  run.args = args;
  run.threads.resize(n_threads);
  run.slots.assign(n_threads, 0);
  for (auto& c : run.threads) c.stack.reset(new char[kStackBytes]);
  BlockRun* saved = g_run;
  g_run = &run;
  try {
    for (unsigned bz = 0; bz < cfg.grid_z; ++bz)
      for (unsigned by = 0; by < cfg.grid_y; ++by)
        for (unsigned bx = 0; bx < cfg.grid_x; ++bx) {
          // Uninitialised shared memory is garbage on a GPU: poison it here too.
          run.smem.assign(std::max<std::size_t>(cfg.shared_bytes, 16), 0xCD);
          for (unsigned t = 0; t < n_threads; ++t) start_thread(run, cfg, t, bx, by, bz);
          run_block(run, n_threads);
          if (!run.error.empty()) throw Error("cuda emulator: kernel threw: " + run.error);
        }
  } catch (...) {
    g_run = saved;
    throw;
  }
  g_run = saved;
}

}  // namespace thea::cuda
