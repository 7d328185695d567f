# The cpu backend's build glue. Included from the top CMakeLists.txt after the `thea` target
# exists (the recursive glob there already compiles backends/cpu/*.cpp).
#
# - The JIT compiler: the C++ compiler found at configure time (THEA_JIT_CXX), which generated
#   kernels are compiled with at run time; the THEA_CXX environment variable overrides it.
# - The kernel preamble: backends/preamble/thea_scalar.h (the scalar functors every backend
#   shares) and backends/cpu/thea_cpu_kernels.h (GEMM micro-kernels), embedded verbatim in
#   the library so generated sources need no files at run time.
# - OpenBLAS (Debian's libopenblas-dev) for dense products the generated kernels do not cover.

find_package(Threads REQUIRED)

set(THEA_JIT_CXX "${CMAKE_CXX_COMPILER}" CACHE STRING
    "C++ compiler the cpu backend runs to build kernels (THEA_CXX overrides it at run time)")

set(_thea_backends_dir ${CMAKE_CURRENT_LIST_DIR}/../backends)
cmake_path(NORMAL_PATH _thea_backends_dir)
set(_thea_cpu_gen ${CMAKE_CURRENT_BINARY_DIR}/generated/cpu)

# One raw string literal per embedded header, regenerated when the header changes.
foreach(_pair "preamble/thea_scalar.h;thea_cpu_scalar_preamble.inc"
              "cpu/thea_cpu_kernels.h;thea_cpu_kernels_preamble.inc")
  list(GET _pair 0 _src)
  list(GET _pair 1 _dst)
  set(_src ${_thea_backends_dir}/${_src})
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${_src})
  file(READ ${_src} _text)
  file(CONFIGURE OUTPUT ${_thea_cpu_gen}/${_dst}
       CONTENT "// Generated from ${_src} by third_party/CpuBackend.cmake.\nR\"thea_embed(@_text@)thea_embed\"\n"
       @ONLY)
endforeach()

find_package(OpenBLAS CONFIG QUIET)
if(NOT OpenBLAS_FOUND OR NOT OpenBLAS_LIBRARIES)
  message(FATAL_ERROR
    "thea's cpu backend needs OpenBLAS: install the Debian package 'libopenblas-dev' "
    "(sudo apt-get install libopenblas-dev, or run scripts/setup).")
endif()

target_include_directories(thea PRIVATE ${_thea_cpu_gen})
target_include_directories(thea SYSTEM PRIVATE ${OpenBLAS_INCLUDE_DIRS})
# Tests of the backend's internals include "cpu/<file>.hpp".
target_include_directories(thea PUBLIC $<BUILD_INTERFACE:${_thea_backends_dir}>)
target_link_libraries(thea PRIVATE ${OpenBLAS_LIBRARIES} Threads::Threads ${CMAKE_DL_LIBS})
target_compile_definitions(thea PRIVATE
  THEA_JIT_CXX_DEFAULT="${THEA_JIT_CXX}"
  THEA_HAVE_CPU_PREAMBLE=1
  THEA_HAVE_OPENBLAS=1)
message(STATUS "thea: cpu backend (JIT compiler ${THEA_JIT_CXX}, OpenBLAS ${OpenBLAS_VERSION})")

# bench/gemm_skinny: OpenBLAS against the generated GEMM micro-kernels on the MNIST shapes
# (the measurement behind the backend's choice), built with the apps.
if(THEA_BUILD_APPS AND EXISTS ${_thea_backends_dir}/../bench/gemm_skinny.cpp)
  add_executable(gemm_skinny ${_thea_backends_dir}/../bench/gemm_skinny.cpp)
  target_include_directories(gemm_skinny SYSTEM PRIVATE ${OpenBLAS_INCLUDE_DIRS})
  target_link_libraries(gemm_skinny PRIVATE ${OpenBLAS_LIBRARIES} Threads::Threads)
  # The same code generation as the JIT's kernels.
  target_compile_options(gemm_skinny PRIVATE -O3 -march=native -mprefer-vector-width=512)
endif()
