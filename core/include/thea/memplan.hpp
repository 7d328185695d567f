// The memory plan of a schedule: where every buffer lives, how long it lives, and which
// values are written in place. Decided once at compile time; only the arena offsets depend
// on the run-time sizes and are laid out again when the input shapes change, so a function
// called repeatedly with the same shapes allocates nothing for its temporaries.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "thea/schedule.hpp"

namespace thea::sched {

enum class Placement : std::uint8_t {
  External,  // an input, shared variable or constant: memory the Program does not own
  Arena,     // a temporary in the Program's arena, reused once dead
  Output,    // a function output: a fresh tensor per call, owned by the caller afterwards
  Alias,     // another buffer's storage (views; values written in place)
};

struct BufferPlan {
  Placement placement = Placement::Arena;
  int alias = -1;  // Alias: the buffer whose storage this one uses
  int first = -1;  // kernel that writes it (-1: before the first kernel)
  int last = -1;   // last kernel that reads it (kernel count: read after the kernels)
};

struct MemPlan {
  std::vector<BufferPlan> buffers;
  // Per update: its value is written directly into the shared variable's storage by the
  // kernel that computes it (no copy at the end of the call).
  std::vector<bool> update_inplace;
  std::string describe(const Schedule& s) const;
};

// Decides placements, liveness and in-place updates. A shared variable is updated in place
// only when the kernel computing its new value reads each old element exactly where it
// writes the new one, and no later kernel, output or other update needs the old value.
MemPlan make_memplan(const Schedule& s);

// The buffer whose storage `b` uses: through views to their bases and aliased (in-place)
// buffers to their targets.
int storage_owner(const Schedule& s, const MemPlan& plan, int b);
// Whether a buffer other than `b` and `besides` uses b's storage (a view of it, or a value
// written in place into it).
bool storage_shared(const Schedule& s, const MemPlan& plan, int b, int besides = -1);

// Arena offsets (bytes, 64-byte aligned) for concrete buffer sizes: buffers whose lifetimes
// do not overlap share memory. Non-arena buffers get -1.
struct ArenaLayout {
  std::vector<std::int64_t> offset;
  std::int64_t size = 0;
};
ArenaLayout layout_arena(const MemPlan& plan, const std::vector<std::int64_t>& nbytes);

// The same layout for any list of lifetimes (the cuda backend's device buffers): an item is
// written by step `first` (-1: before the first step) and last used by step `last`; items
// whose lifetimes overlap, ends included, never share bytes. nbytes < 0: not in the arena.
struct ArenaItem {
  int first = -1;
  int last = -1;
  std::int64_t nbytes = -1;
};
ArenaLayout layout_lifetimes(const std::vector<ArenaItem>& items, std::int64_t align);

}  // namespace thea::sched
