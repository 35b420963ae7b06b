# Header check (CI): every public header compiles alone, and all of them together with the
# calls a user makes compile warning-free with -Wall -Wextra -Wpedantic -Werror at -O0, -O1,
# -O2, -Os and -O3, with each compiler a user may have:
#
#   cmake [-D IOCP_HEADER_CONFIGS="gcc;clang;mingw;clang-mingw"] [-D IOCP_HEADERS_BINARY_DIR=<dir>]
#         [-D IOCP_SOURCE_DIR=<checkout>] -P tests/headers/run.cmake
#
#   gcc          the host g++, the native backend;
#   clang        the host clang++, the native backend;
#   mingw        MinGW-w64 g++ (cmake/mingw-w64-wine.cmake), the Win32 and the POSIX backend;
#   clang-mingw  clang++ --target=x86_64-w64-mingw32 (cmake/clang-mingw-w64.cmake), both
#                backends. The clang-mingw preset compiles the tests and examples the same way.
#
# Every configuration runs even after a failure; the exit status is non-zero if any failed.
# IOCP_SOURCE_DIR may name another checkout (e.g. a git worktree of an older commit), to see
# what the check says about it; the check project and toolchains are always this one's.
cmake_minimum_required(VERSION 3.21)

get_filename_component(_here "${CMAKE_CURRENT_LIST_DIR}/../.." ABSOLUTE)
if(NOT DEFINED IOCP_SOURCE_DIR)
  set(IOCP_SOURCE_DIR "${_here}")
endif()
get_filename_component(IOCP_SOURCE_DIR "${IOCP_SOURCE_DIR}" ABSOLUTE)
if(NOT DEFINED IOCP_HEADERS_BINARY_DIR)
  set(IOCP_HEADERS_BINARY_DIR "${_here}/build/headers")
endif()
get_filename_component(IOCP_HEADERS_BINARY_DIR "${IOCP_HEADERS_BINARY_DIR}" ABSOLUTE)
if(NOT DEFINED IOCP_HEADER_CONFIGS)
  set(IOCP_HEADER_CONFIGS gcc clang mingw clang-mingw)
endif()

find_program(_ninja NAMES ninja ninja-build)
set(_generator_args)
if(_ninja)
  set(_generator_args -G Ninja)
endif()

set(_passed "")
set(_failed "")
set(_total 0)
foreach(config IN LISTS IOCP_HEADER_CONFIGS)
  # Clang's warnings come from its front end and do not change with the level; GCC's
  # optimisers warn (and stay silent) level by level. Clang checks -O0 and -O2.
  set(_levels "0;1;2;s;3")
  if(config STREQUAL "gcc")
    set(_args -DCMAKE_CXX_COMPILER=g++)
  elseif(config STREQUAL "clang")
    set(_args -DCMAKE_CXX_COMPILER=clang++)
    set(_levels "0;2")
  elseif(config STREQUAL "mingw")
    set(_args "-DCMAKE_TOOLCHAIN_FILE=${_here}/cmake/mingw-w64-wine.cmake")
  elseif(config STREQUAL "clang-mingw")
    set(_args "-DCMAKE_TOOLCHAIN_FILE=${_here}/cmake/clang-mingw-w64.cmake")
    set(_levels "0;2")
  else()
    message(FATAL_ERROR "[headers] unknown configuration '${config}' (gcc, clang, mingw, clang-mingw)")
  endif()
  set(_bin "${IOCP_HEADERS_BINARY_DIR}/${config}")
  file(REMOVE_RECURSE "${_bin}")
  message(STATUS "[headers] ${config}: configure")
  execute_process(COMMAND "${CMAKE_COMMAND}" -S "${CMAKE_CURRENT_LIST_DIR}" -B "${_bin}"
                          ${_generator_args} ${_args} "-DIOCP_SOURCE_DIR=${IOCP_SOURCE_DIR}"
                          "-DIOCP_CHECK_LEVELS=${_levels}"
                  RESULT_VARIABLE _rc)
  if(_rc EQUAL 0)
    message(STATUS "[headers] ${config}: build")
    # -k 0 (Ninja): every check runs, so one run lists every failing header and level.
    set(_keep_going)
    if(_ninja)
      set(_keep_going -- -k 0)
    endif()
    execute_process(COMMAND "${CMAKE_COMMAND}" --build "${_bin}" -j 2 ${_keep_going}
                    RESULT_VARIABLE _rc)
  endif()
  file(STRINGS "${_bin}/checks.txt" _count LIMIT_COUNT 1)
  if(NOT _count)
    set(_count 0)
  endif()
  math(EXPR _total "${_total} + ${_count}")
  if(_rc EQUAL 0)
    list(APPEND _passed "${config} ${_count}")
  else()
    list(APPEND _failed "${config}")
    message(STATUS "[headers] ${config}: FAILED (${_rc})")
  endif()
endforeach()

list(JOIN _passed ", " _passed_text)
if(_failed)
  list(JOIN _failed ", " _failed_text)
  message(FATAL_ERROR "[headers] FAILED: ${_failed_text}; passed: ${_passed_text}")
endif()
message(STATUS "[headers] ${_total} checks passed: ${_passed_text}")
