// Host emulation of the CUDA device features thea's generated kernels use, so the same
// kernel source compiles with the host C++ compiler for the SIMT emulator (simt.cpp).
// Only what codegen emits is provided: thread/block indices, __syncthreads, warp
// shuffles, atomics on ints, dynamic shared memory, bit casts.
#include <cmath>
#include <cstdint>
#include <cstring>

#define THEA_EMU 1
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __restrict__ __restrict

static const thea_emu_hooks* thea_emu_h = nullptr;
extern "C" void thea_emu_bind(const thea_emu_hooks* hooks) { thea_emu_h = hooks; }

#define threadIdx (thea_emu_h->current()->tid)
#define blockIdx (thea_emu_h->current()->bid)
#define blockDim (thea_emu_h->current()->bdim)
#define gridDim (thea_emu_h->current()->gdim)
#define THEA_DYN_SMEM(name) unsigned char* name = thea_emu_h->dyn_smem()

inline void __syncthreads() { thea_emu_h->syncthreads(); }

template <class T>
inline T __shfl_xor_sync(unsigned /*mask*/, T v, int lane_mask, int width = 32) {
  static_assert(sizeof(T) <= 8, "shuffle of a value wider than 8 bytes");
  long long* slots = thea_emu_h->shfl_slots();
  const unsigned me = thea_emu_h->current()->linear;
  long long bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  slots[me] = bits;
  thea_emu_h->syncwarp();
  // Lanes are numbered within the warp; xor stays inside `width`-sized groups.
  const unsigned lane = me % 32, base = me - lane;
  const unsigned src = base + ((lane ^ static_cast<unsigned>(lane_mask)) % 32);
  (void)width;
  T out;
  std::memcpy(&out, &slots[src], sizeof(T));
  thea_emu_h->syncwarp();
  return out;
}

// Blocks run one after another here: atomics need no locking and fences nothing.
inline unsigned atomicAdd(unsigned* p, unsigned v) {
  unsigned old = *p;
  *p = old + v;
  return old;
}
inline void __threadfence() {}
inline int atomicOr(int* p, int v) {
  int old = *p;
  *p = old | v;
  return old;
}
inline double __longlong_as_double(long long x) {
  double d;
  std::memcpy(&d, &x, sizeof d);
  return d;
}
inline float __int_as_float(int x) {
  float f;
  std::memcpy(&f, &x, sizeof f);
  return f;
}
