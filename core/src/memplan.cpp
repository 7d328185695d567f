#include "thea/memplan.hpp"

#include <algorithm>
#include <sstream>

namespace thea::sched {

namespace {

int root(const Schedule& s, int b) {
  while (s.buffers[b].kind == BufferKind::View) b = s.buffers[b].base;
  return b;
}

bool reads_root(const Schedule& s, const Kernel& k, int r) {
  for (int b : k.reads)
    if (root(s, b) == r) return true;
  if (k.kind == KernelKind::Gemm) {
    for (int b : {k.gemm.a, k.gemm.b, k.gemm.c_in, k.gemm.alpha.buffer, k.gemm.beta.buffer})
      if (b >= 0 && root(s, b) == r) return true;
  }
  return false;
}

// Whether kernel k can write buffer `value` into the storage of `target` (same shape)
// while computing it: every read of the target happens at the element being written.
bool can_write_in_place(const Schedule& s, const Kernel& k, int value, int target) {
  const Buffer& vb = s.buffers[value];
  const Buffer& tb = s.buffers[target];
  if (vb.dims != tb.dims || vb.dtype != tb.dtype) return false;
  if (k.kind == KernelKind::Gemm) {
    const GemmKernel& g = k.gemm;
    if (g.out != value || g.c_in != target) return false;  // C itself, not a view of it
    for (int b : {g.a, g.b, g.alpha.buffer, g.beta.buffer})
      if (b >= 0 && root(s, b) == target) return false;
    return true;
  }
  if (k.kind != KernelKind::Loop) return false;
  const LoopKernel& lk = k.loop;
  const Store* store = nullptr;
  for (const Store& st : lk.stores)
    if (lk.accesses[st.access].buffer == value) store = &st;
  if (!store) return false;
  const Expr& se = lk.exprs[store->expr];
  const std::vector<int>& axes = lk.accesses[store->access].axis_of;
  for (std::size_t i = 0; i < lk.exprs.size(); ++i) {
    const Expr& e = lk.exprs[i];
    if (e.kind != ExprKind::Load) continue;
    const Access& a = lk.accesses[e.access];
    if (root(s, a.buffer) != target) continue;
    // The same element, read no later than it is written.
    if (a.buffer != target || a.axis_of != axes) return false;
    // (Renderers store inner values in the last pass and outer ones after all passes, so
    // every read of an element precedes its write.)
    if (e.level != se.level) return false;
    if (!e.index_args.empty()) return false;
  }
  // The store must write each element once: a domain axis the value does not move along
  // repeats the store (and the reads in between would see new values), unless the loop
  // does not iterate it for that value (size 1, or an inner axis of an outer value).
  for (std::size_t d = 0; d < axes.size(); ++d) {
    if (axes[d] >= 0) continue;
    if (lk.inner[d] && se.level != 2) continue;
    if (!(lk.domain[d].is_static() && lk.domain[d].size == 1)) return false;
  }
  return true;
}

}  // namespace

MemPlan make_memplan(const Schedule& s) {
  MemPlan plan;
  const int nb = static_cast<int>(s.buffers.size());
  const int nk = static_cast<int>(s.kernels.size());
  plan.buffers.resize(nb);
  for (int b = 0; b < nb; ++b) {
    const Buffer& buf = s.buffers[b];
    BufferPlan& p = plan.buffers[b];
    switch (buf.kind) {
      case BufferKind::Input:
      case BufferKind::Shared:
      case BufferKind::Constant:
        p.placement = Placement::External;
        break;
      case BufferKind::View:
        p.placement = Placement::Alias;
        p.alias = buf.base;
        break;
      case BufferKind::Temp:
        p.placement = Placement::Arena;
        p.first = buf.producer;
        break;
    }
  }
  // Liveness of storage owners: the last kernel reading them directly or through views.
  for (int k = 0; k < nk; ++k) {
    for (int b : s.kernels[k].reads) {
      int r = root(s, b);
      plan.buffers[r].last = std::max(plan.buffers[r].last, k);
    }
    if (s.kernels[k].kind == KernelKind::Gemm) {
      const GemmKernel& g = s.kernels[k].gemm;
      for (int b : {g.a, g.b, g.c_in, g.alpha.buffer, g.beta.buffer})
        if (b >= 0) plan.buffers[root(s, b)].last = std::max(plan.buffers[root(s, b)].last, k);
    }
  }
  for (int o : s.outputs) plan.buffers[root(s, o)].last = nk;
  for (int v : s.update_values) plan.buffers[root(s, v)].last = nk;

  // In-place updates.
  plan.update_inplace.assign(s.update_targets.size(), false);
  for (std::size_t u = 0; u < s.update_targets.size(); ++u) {
    const int target = s.update_targets[u];
    const int value = s.update_values[u];
    const Buffer& vb = s.buffers[value];
    if (vb.kind != BufferKind::Temp || vb.producer < 0) continue;
    // The old value must not be needed after the call's kernels: not an output, not another
    // update's value (those are copied at the end), not read by a later kernel.
    bool needed_later = false;
    for (int o : s.outputs)
      if (root(s, o) == target) needed_later = true;
    for (std::size_t w = 0; w < s.update_values.size(); ++w)
      if (w != u && root(s, s.update_values[w]) == target) needed_later = true;
    for (int k = vb.producer + 1; k < nk; ++k)
      if (reads_root(s, s.kernels[k], target)) needed_later = true;
    if (needed_later) continue;
    // Nor may the value's own storage be shared with another output or update.
    int uses = 0;
    for (int o : s.outputs)
      if (root(s, o) == value) ++uses;
    for (int v : s.update_values)
      if (root(s, v) == value) ++uses;
    if (uses > 1) continue;
    if (!can_write_in_place(s, s.kernels[vb.producer], value, target)) continue;
    plan.update_inplace[u] = true;
    plan.buffers[value].placement = Placement::Alias;
    plan.buffers[value].alias = target;
  }

  // Outputs computed by kernels are written straight into the caller's fresh tensors.
  for (int o : s.outputs) {
    BufferPlan& p = plan.buffers[o];
    if (s.buffers[o].kind == BufferKind::Temp && p.placement == Placement::Arena)
      p.placement = Placement::Output;
  }
  return plan;
}

ArenaLayout layout_lifetimes(const std::vector<ArenaItem>& items, std::int64_t align) {
  ArenaLayout out;
  const int n = static_cast<int>(items.size());
  out.offset.assign(static_cast<std::size_t>(n), -1);
  std::vector<int> order;
  for (int i = 0; i < n; ++i)
    if (items[static_cast<std::size_t>(i)].nbytes >= 0) order.push_back(i);
  // Largest first within the same start: fewer holes.
  std::sort(order.begin(), order.end(), [&](int a, int b) {
    const ArenaItem& x = items[static_cast<std::size_t>(a)];
    const ArenaItem& y = items[static_cast<std::size_t>(b)];
    if (x.first != y.first) return x.first < y.first;
    if (x.nbytes != y.nbytes) return x.nbytes > y.nbytes;
    return a < b;
  });
  struct Block {
    std::int64_t begin, end;
    int last;
  };
  std::vector<Block> placed;
  for (int i : order) {
    const ArenaItem& it = items[static_cast<std::size_t>(i)];
    const std::int64_t size = (std::max<std::int64_t>(it.nbytes, 1) + align - 1) / align * align;
    // Blocks still alive when this one is written (inclusive: a kernel's inputs and outputs
    // never share memory).
    std::vector<Block> live;
    for (const Block& blk : placed)
      if (blk.last >= it.first) live.push_back(blk);
    std::sort(live.begin(), live.end(),
              [](const Block& a, const Block& b) { return a.begin < b.begin; });
    std::int64_t at = 0;
    for (const Block& blk : live) {
      if (blk.begin - at >= size) break;
      at = std::max(at, blk.end);
    }
    out.offset[static_cast<std::size_t>(i)] = at;
    placed.push_back({at, at + size, std::max(it.last, it.first)});
    out.size = std::max(out.size, at + size);
  }
  return out;
}

ArenaLayout layout_arena(const MemPlan& plan, const std::vector<std::int64_t>& nbytes) {
  std::vector<ArenaItem> items(plan.buffers.size());
  for (std::size_t b = 0; b < plan.buffers.size(); ++b)
    if (plan.buffers[b].placement == Placement::Arena)
      items[b] = {plan.buffers[b].first, plan.buffers[b].last, nbytes[b]};
  return layout_lifetimes(items, 64);
}

std::string MemPlan::describe(const Schedule& s) const {
  std::ostringstream os;
  for (std::size_t b = 0; b < buffers.size(); ++b) {
    const BufferPlan& p = buffers[b];
    const char* where = p.placement == Placement::External ? "external"
                        : p.placement == Placement::Arena  ? "arena"
                        : p.placement == Placement::Output ? "output"
                                                           : "alias";
    os << "  b" << b << " " << s.buffers[b].node->label() << " " << dtype_name(s.buffers[b].dtype)
       << dims_str(s.buffers[b].dims) << ": " << where;
    if (p.alias >= 0) os << " of b" << p.alias;
    os << " live [" << p.first << ", " << p.last << "]\n";
  }
  for (std::size_t u = 0; u < update_inplace.size(); ++u)
    os << "  update " << s.buffers[s.update_targets[u]].node->label()
       << (update_inplace[u] ? ": in place\n" : ": copied at the end\n");
  return os.str();
}

int storage_owner(const Schedule& s, const MemPlan& plan, int b) {
  // Chains are short (a view of an in-place value); the bound guards against a cycle bug.
  for (int guard = 0; guard < 64; ++guard) {
    if (s.buffers[b].kind == BufferKind::View)
      b = s.buffers[b].base;
    else if (plan.buffers[b].placement == Placement::Alias && plan.buffers[b].alias >= 0)
      b = plan.buffers[b].alias;
    else
      break;
  }
  return b;
}

bool storage_shared(const Schedule& s, const MemPlan& plan, int b, int besides) {
  for (int o = 0; o < static_cast<int>(s.buffers.size()); ++o)
    if (o != b && o != besides && storage_owner(s, plan, o) == b) return true;
  return false;
}

}  // namespace thea::sched
