/* The interface between thea's SIMT emulator (backends/cuda/simt.cpp, in the library)
   and generated kernels compiled for the host (emu_device.h + the kernel source, in a
   shared object). Plain C structs: both sides are compiled separately. */
#ifndef THEA_EMU_ABI_H
#define THEA_EMU_ABI_H

struct thea_emu_uint3 {
  unsigned x, y, z;
};

struct thea_emu_thread {
  struct thea_emu_uint3 tid, bid, bdim, gdim;
  unsigned linear; /* tid.x + bdim.x * (tid.y + bdim.y * tid.z) */
};

struct thea_emu_hooks {
  const struct thea_emu_thread* (*current)(void);
  void (*syncthreads)(void); /* block barrier */
  void (*syncwarp)(void);    /* barrier of the calling thread's warp */
  unsigned char* (*dyn_smem)(void);
  long long* (*shfl_slots)(void); /* one 8-byte exchange slot per thread of the block */
};

typedef void (*thea_emu_entry)(const long long* params, const long long* args);

#endif
