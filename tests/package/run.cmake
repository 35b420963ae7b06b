# Package tests: proves that users can consume the library the documented ways.
#
#   cmake [-D IOCP_PACKAGE_CONFIGS="native;mingw-wine"] [-D IOCP_PACKAGE_BINARY_DIR=<dir>]
#         -P tests/package/run.cmake
#
# For each configuration (native: the host compiler; mingw-wine: cmake/mingw-w64-wine.cmake,
# the programs run under Wine through cmake/wine-run.sh), from scratch:
#   1. configures the library alone and installs it into a private prefix;
#   2. builds tests/package/find_package against that prefix and runs it (ctest); when cross
#      compiling, also with the prefix in a CMAKE_FIND_ROOT_PATH given before the toolchain
#      file runs (how vcpkg's toolchain chainloads ours);
#   3. builds the same consumer against the library's build tree (its export());
#   4. builds tests/package/add_subdirectory, which adds the checkout to its own tree, and runs it.
# Any failure stops the script with a non-zero exit status.
cmake_minimum_required(VERSION 3.21)

get_filename_component(IOCP_SOURCE_DIR "${CMAKE_CURRENT_LIST_DIR}/../.." ABSOLUTE)
if(NOT DEFINED IOCP_PACKAGE_BINARY_DIR)
  set(IOCP_PACKAGE_BINARY_DIR "${IOCP_SOURCE_DIR}/build/package")
endif()
# A relative directory is relative to where cmake runs; the consumers need it absolute.
get_filename_component(IOCP_PACKAGE_BINARY_DIR "${IOCP_PACKAGE_BINARY_DIR}" ABSOLUTE)
if(NOT DEFINED IOCP_PACKAGE_CONFIGS)
  set(IOCP_PACKAGE_CONFIGS native mingw-wine)
endif()

# The version the installed package must report, read where CMakeLists.txt reads it.
file(READ "${IOCP_SOURCE_DIR}/include/iocp/version.hpp" _header)
foreach(_part MAJOR MINOR PATCH)
  string(REGEX MATCH "#define IOCP_VERSION_${_part} ([0-9]+)" _ "${_header}")
  set(_v_${_part} "${CMAKE_MATCH_1}")
endforeach()
set(IOCP_VERSION "${_v_MAJOR}.${_v_MINOR}.${_v_PATCH}")

find_program(_ninja NAMES ninja ninja-build)
set(_generator_args)
if(_ninja)
  set(_generator_args -G Ninja)
endif()

# run(<what> <command>...): runs a command, echoing its output; stops everything on failure.
function(run what)
  message(STATUS "[package] ${what}")
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE _rc TIMEOUT 900)
  if(NOT _rc EQUAL 0)
    message(FATAL_ERROR "[package] FAILED (${_rc}): ${what}")
  endif()
endfunction()

# consume(<config> <name> <source dir> <cmake args>...): configure, build and ctest a consumer.
function(consume config name source)
  set(_bin "${IOCP_PACKAGE_BINARY_DIR}/${config}/${name}")
  run("${config}: configure ${name}" "${CMAKE_COMMAND}" -S "${source}" -B "${_bin}"
      ${_generator_args} -DCMAKE_BUILD_TYPE=Release ${ARGN})
  run("${config}: build ${name}" "${CMAKE_COMMAND}" --build "${_bin}")
  run("${config}: run ${name}" "${CMAKE_CTEST_COMMAND}" --test-dir "${_bin}"
      --output-on-failure --no-tests=error --timeout 120)
  set_property(GLOBAL APPEND PROPERTY IOCP_PACKAGE_PASSED "${config}/${name}")
endfunction()

foreach(config IN LISTS IOCP_PACKAGE_CONFIGS)
  if(config STREQUAL "native")
    set(_toolchain_args)
  elseif(config STREQUAL "mingw-wine")
    set(_toolchain_args "-DCMAKE_TOOLCHAIN_FILE=${IOCP_SOURCE_DIR}/cmake/mingw-w64-wine.cmake")
  else()
    message(FATAL_ERROR "[package] unknown configuration '${config}' (native, mingw-wine)")
  endif()

  set(_root "${IOCP_PACKAGE_BINARY_DIR}/${config}")
  set(_prefix "${_root}/prefix")
  file(REMOVE_RECURSE "${_root}")

  # 1. The library on its own: nothing to compile, only the install step.
  run("${config}: configure the library" "${CMAKE_COMMAND}" -S "${IOCP_SOURCE_DIR}"
      -B "${_root}/iocp" ${_generator_args} ${_toolchain_args} -DCMAKE_BUILD_TYPE=Release
      -DIOCP_BUILD_TESTS=OFF -DIOCP_BUILD_BENCHMARKS=OFF -DIOCP_BUILD_EXAMPLES=OFF
      "-DCMAKE_INSTALL_PREFIX=${_prefix}")
  run("${config}: build the library" "${CMAKE_COMMAND}" --build "${_root}/iocp")
  run("${config}: install the library" "${CMAKE_COMMAND}" --install "${_root}/iocp")
  foreach(_file include/iocp/iocp.hpp include/iocp/version.hpp share/iocp/iocpConfig.cmake
          share/iocp/iocpConfigVersion.cmake share/iocp/iocpTargets.cmake
          share/doc/iocp/LICENSE)
    if(NOT EXISTS "${_prefix}/${_file}")
      message(FATAL_ERROR "[package] ${config}: the install lacks ${_file}")
    endif()
  endforeach()

  # 2. find_package against the install. When cross-compiling, the toolchain confines package
  # searches to the MinGW sysroot (CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY), so a cross user
  # points iocp_DIR at the package; natively, CMAKE_PREFIX_PATH finds it.
  if(_toolchain_args)
    set(_find_args "-Diocp_DIR=${_prefix}/share/iocp")
  else()
    set(_find_args "-DCMAKE_PREFIX_PATH=${_prefix}")
  endif()
  consume(${config} find_package "${CMAKE_CURRENT_LIST_DIR}/find_package" ${_toolchain_args}
          ${_find_args} -DIOCP_EXPECTED_VERSION=${IOCP_VERSION})
  file(STRINGS "${_root}/find_package/CMakeCache.txt" _dir REGEX "^iocp_DIR:")
  string(REGEX REPLACE "^iocp_DIR:[A-Z]+=" "" _dir "${_dir}")
  file(REAL_PATH "${_dir}" _dir)
  file(REAL_PATH "${_prefix}/share/iocp" _expected)
  if(NOT _dir STREQUAL _expected)
    message(FATAL_ERROR "[package] ${config}: find_package used ${_dir}, not the install")
  endif()

  # 2b. A root path set before the toolchain runs, as vcpkg's toolchain does when it
  # chainloads ours: the package is found in it (the toolchain adds to CMAKE_FIND_ROOT_PATH,
  # it does not replace it). vcpkg also puts its tree in CMAKE_PREFIX_PATH.
  if(_toolchain_args)
    consume(${config} find_root_path "${CMAKE_CURRENT_LIST_DIR}/find_package" ${_toolchain_args}
            "-DCMAKE_FIND_ROOT_PATH=${_prefix}" "-DCMAKE_PREFIX_PATH=${_prefix}"
            -DIOCP_EXPECTED_VERSION=${IOCP_VERSION})
  endif()

  # 3. find_package against the library's build tree (export()).
  consume(${config} build_tree "${CMAKE_CURRENT_LIST_DIR}/find_package" ${_toolchain_args}
          "-Diocp_DIR=${_root}/iocp" -DIOCP_EXPECTED_VERSION=${IOCP_VERSION})

  # 4. add_subdirectory on the checkout.
  consume(${config} add_subdirectory "${CMAKE_CURRENT_LIST_DIR}/add_subdirectory"
          ${_toolchain_args} "-DIOCP_SOURCE_DIR=${IOCP_SOURCE_DIR}")
endforeach()

get_property(_passed GLOBAL PROPERTY IOCP_PACKAGE_PASSED)
list(LENGTH _passed _count)
list(JOIN _passed ", " _passed)
message(STATUS "[package] ${_count} consumers built and ran: ${_passed}")
