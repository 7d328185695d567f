# How thea finds its dependencies: Debian packages only, through their CMake configs.
# A missing one stops configuration with the package to install (scripts/setup does it).

macro(thea_require package debian_package)
  find_package(${package} CONFIG QUIET)
  if(NOT ${package}_FOUND)
    message(FATAL_ERROR
      "thea needs ${package}: install the Debian package '${debian_package}' "
      "(sudo apt-get install ${debian_package}, or run scripts/setup).")
  endif()
endmacro()

thea_require(fmt libfmt-dev)
thea_require(spdlog libspdlog-dev)
thea_require(CLI11 libcli11-dev)
find_package(ZLIB QUIET)
if(NOT ZLIB_FOUND)
  message(FATAL_ERROR "thea needs zlib: install the Debian package 'zlib1g-dev' (or run scripts/setup).")
endif()
if(THEA_BUILD_TESTS)
  thea_require(doctest doctest-dev)
endif()
