# The CUDA backend's build glue. Included from the top CMakeLists.txt after the `thea`
# target exists.
#
# THEA_CUDA (default: ON when CMake's FindCUDAToolkit finds a toolkit) adds backends/cuda;
# OFF adds backends/no_cuda, whose backend says why it is unavailable.
#
# Link policy (why): the library and every binary must start on machines without a GPU,
# a driver or the big CUDA libraries. So libcuda is never linked (cudart loads it lazily),
# cudart is linked statically (1 MB, no runtime dependency), and NVRTC, cuBLAS and cuDNN
# are dlopen()ed on first use by backends/cuda/cuda_libs.cpp: only their headers are
# needed here, and a missing one becomes a clear BackendError instead of a loader failure.

find_package(CUDAToolkit QUIET)
option(THEA_CUDA "Build the CUDA backend (needs the CUDA toolkit headers and cudart)"
       ${CUDAToolkit_FOUND})

set(THEA_CUDA_SOURCE_DIR ${CMAKE_CURRENT_LIST_DIR}/../backends)
cmake_path(NORMAL_PATH THEA_CUDA_SOURCE_DIR)

# The top-level recursive glob of backends/*.cpp picks up both cuda/ and no_cuda/; exactly
# one of them is added back below.
get_target_property(_thea_sources thea SOURCES)
list(FILTER _thea_sources EXCLUDE REGEX "/backends/(cuda|no_cuda)/")
set_property(TARGET thea PROPERTY SOURCES ${_thea_sources})

if(THEA_CUDA AND NOT CUDAToolkit_FOUND)
  message(FATAL_ERROR
    "THEA_CUDA=ON but no CUDA toolkit was found. Install the CUDA toolkit (nvcc, cudart, "
    "NVRTC and cuBLAS headers), point CUDAToolkit_ROOT at it, or configure with -DTHEA_CUDA=OFF.")
endif()

if(THEA_CUDA)
  if(CUDAToolkit_VERSION_MAJOR LESS 12)
    message(FATAL_ERROR "thea's CUDA backend needs CUDA 12 or newer (found ${CUDAToolkit_VERSION}).")
  endif()
  foreach(header nvrtc.h cublas_v2.h)
    find_file(THEA_CUDA_HEADER_${header} ${header} HINTS ${CUDAToolkit_INCLUDE_DIRS} NO_CACHE)
    if(NOT THEA_CUDA_HEADER_${header})
      message(FATAL_ERROR "THEA_CUDA=ON but ${header} was not found under ${CUDAToolkit_INCLUDE_DIRS}; "
                          "install the toolkit's NVRTC/cuBLAS development files or use -DTHEA_CUDA=OFF.")
    endif()
  endforeach()
  # cuDNN is optional: without its header the backend uses its own kernels only.
  find_path(THEA_CUDNN_INCLUDE_DIR cudnn.h
    HINTS ${CUDAToolkit_INCLUDE_DIRS} ENV CUDNN_ROOT PATH_SUFFIXES include)
  set(THEA_CUDNN_MAJOR 0)
  if(THEA_CUDNN_INCLUDE_DIR AND EXISTS ${THEA_CUDNN_INCLUDE_DIR}/cudnn_version.h)
    file(STRINGS ${THEA_CUDNN_INCLUDE_DIR}/cudnn_version.h _cudnn_major REGEX "^#define CUDNN_MAJOR [0-9]+")
    string(REGEX REPLACE "^#define CUDNN_MAJOR ([0-9]+).*" "\\1" THEA_CUDNN_MAJOR "${_cudnn_major}")
  endif()

  file(GLOB THEA_CUDA_SOURCES CONFIGURE_DEPENDS ${THEA_CUDA_SOURCE_DIR}/cuda/*.cpp)
  # The scalar preamble and the kernel library, embedded so generated kernels need no files
  # at run time.
  foreach(_embed PREAMBLE:preamble/thea_scalar.h KERNEL_LIB:cuda/kernel_lib.h
                 EMU_DEVICE:cuda/emu_device.h EMU_ABI:cuda/emu_abi.h)
    string(REPLACE ":" ";" _pair ${_embed})
    list(GET _pair 0 _var)
    list(GET _pair 1 _file)
    set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${THEA_CUDA_SOURCE_DIR}/${_file})
    file(READ ${THEA_CUDA_SOURCE_DIR}/${_file} THEA_CUDA_${_var}_TEXT)
  endforeach()
  configure_file(${THEA_CUDA_SOURCE_DIR}/cuda/preamble_embed.cpp.in
                 ${CMAKE_CURRENT_BINARY_DIR}/generated/thea_cuda_preamble.cpp @ONLY)
  target_sources(thea PRIVATE ${THEA_CUDA_SOURCES}
                              ${CMAKE_CURRENT_BINARY_DIR}/generated/thea_cuda_preamble.cpp)
  target_include_directories(thea SYSTEM PRIVATE ${CUDAToolkit_INCLUDE_DIRS})
  if(THEA_CUDNN_MAJOR GREATER 0)
    target_include_directories(thea SYSTEM PRIVATE ${THEA_CUDNN_INCLUDE_DIR})
  endif()
  # By path, not the CUDA::cudart_static target, so the installed package's export needs no
  # find_dependency(CUDAToolkit).
  target_link_libraries(thea PRIVATE "${CUDA_cudart_static_LIBRARY}" ${CMAKE_DL_LIBS} rt pthread)
  target_compile_definitions(thea PRIVATE
    THEA_CUDA_MAJOR=${CUDAToolkit_VERSION_MAJOR}
    THEA_CUDNN_MAJOR=${THEA_CUDNN_MAJOR}
    THEA_CUDA_TOOLKIT_LIB_DIR="${CUDAToolkit_LIBRARY_DIR}")
  # Tests of the backend's internals include "cuda/<file>.hpp"; they need the toolkit headers too.
  target_include_directories(thea PUBLIC $<BUILD_INTERFACE:${THEA_CUDA_SOURCE_DIR}>)
  target_include_directories(thea SYSTEM PUBLIC $<BUILD_INTERFACE:${CUDAToolkit_INCLUDE_DIRS}>)
  target_compile_definitions(thea PUBLIC $<BUILD_INTERFACE:THEA_HAVE_CUDA=1>)
  message(STATUS "thea: CUDA backend ON (CUDA ${CUDAToolkit_VERSION}, cuDNN major ${THEA_CUDNN_MAJOR}; "
                 "NVRTC/cuBLAS/cuDNN loaded at run time)")
else()
  file(GLOB THEA_NO_CUDA_SOURCES CONFIGURE_DEPENDS ${THEA_CUDA_SOURCE_DIR}/no_cuda/*.cpp)
  target_sources(thea PRIVATE ${THEA_NO_CUDA_SOURCES})
  target_compile_definitions(thea PUBLIC $<BUILD_INTERFACE:THEA_HAVE_CUDA=0>)
  if(CUDAToolkit_FOUND)
    message(STATUS "thea: CUDA backend OFF (THEA_CUDA=OFF); the 'cuda' backend is a stub")
  else()
    message(STATUS "thea: CUDA backend OFF (no CUDA toolkit found); the 'cuda' backend is a stub")
  endif()
endif()

# bench/gpu_bench (the GPU benchmark scripts/gpu-check runs), built with the apps. It
# times whichever backend it is given, so it exists without CUDA too.
if(THEA_BUILD_APPS AND EXISTS ${THEA_CUDA_SOURCE_DIR}/../bench/gpu_bench.cpp)
  add_executable(gpu_bench ${THEA_CUDA_SOURCE_DIR}/../bench/gpu_bench.cpp)
  target_link_libraries(gpu_bench PRIVATE thea CLI11::CLI11 fmt::fmt)
endif()
