# ctest driver (cmake -P): installs the built thea into a scratch prefix, then configures,
# builds and runs the outside project in this folder against that prefix only.
# Variables: BUILD_DIR (thea's build tree), SOURCE_DIR (this folder), WORK_DIR (scratch),
# CONFIG (build type), CXX (compiler), GENERATOR.
foreach(var BUILD_DIR SOURCE_DIR WORK_DIR CONFIG CXX GENERATOR)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "run.cmake: -D${var}=... is required")
  endif()
endforeach()

function(step what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "install check: ${what} failed (exit ${rc}):\n${out}")
  endif()
  message(STATUS "install check: ${what}: ok")
endfunction()

file(REMOVE_RECURSE "${WORK_DIR}")
set(prefix "${WORK_DIR}/prefix")
step("cmake --install" ${CMAKE_COMMAND} --install "${BUILD_DIR}" --prefix "${prefix}"
     --config "${CONFIG}")
if(NOT EXISTS "${prefix}/include/thea/thea.hpp")
  message(FATAL_ERROR "install check: ${prefix}/include/thea/thea.hpp was not installed")
endif()

# Only the scratch prefix may satisfy find_package: no package registry, no build tree.
step("configure the outside project" ${CMAKE_COMMAND} -S "${SOURCE_DIR}" -B "${WORK_DIR}/build"
     -G "${GENERATOR}" -DCMAKE_BUILD_TYPE=${CONFIG} -DCMAKE_CXX_COMPILER=${CXX}
     -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF
     -DCMAKE_FIND_PACKAGE_NO_PACKAGE_REGISTRY=ON)
step("build the outside project" ${CMAKE_COMMAND} --build "${WORK_DIR}/build" --config "${CONFIG}")
step("run the outside project" "${WORK_DIR}/build/app")
