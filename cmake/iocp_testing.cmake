# Test helpers shared by tests/ and examples/.

set(CMAKE_CXX_EXTENSIONS OFF)

include(GoogleTest)

# GoogleTest: the installed package natively; when cross-compiling, the source Debian ships in
# /usr/src/googletest; otherwise FetchContent (needs the internet).
set(IOCP_GTEST_SOURCE_DIR "/usr/src/googletest" CACHE PATH
    "GoogleTest sources to build when no installed package fits (cross builds)")
if(IOCP_BUILD_TESTS AND NOT TARGET GTest::gtest)
  if(NOT CMAKE_CROSSCOMPILING)
    find_package(GTest QUIET)
  endif()
  if(NOT TARGET GTest::gtest)
    set(gtest_force_shared_crt ON CACHE BOOL "" FORCE)
    set(INSTALL_GTEST OFF CACHE BOOL "" FORCE)
    set(BUILD_GMOCK OFF CACHE BOOL "" FORCE)
    if(EXISTS "${IOCP_GTEST_SOURCE_DIR}/CMakeLists.txt")
      add_subdirectory("${IOCP_GTEST_SOURCE_DIR}" "${CMAKE_BINARY_DIR}/_deps/googletest"
                       EXCLUDE_FROM_ALL)
    else()
      include(FetchContent)
      FetchContent_Declare(googletest
        URL https://github.com/google/googletest/archive/refs/tags/release-1.12.1.tar.gz)
      FetchContent_MakeAvailable(googletest)
    endif()
    if(NOT TARGET GTest::gtest)
      add_library(GTest::gtest ALIAS gtest)
    endif()
  endif()
endif()

# Warnings as errors for everything we build ourselves (not for users of the headers).
function(iocp_warnings target)
  if(MSVC)
    target_compile_options(${target} PRIVATE /W4 /WX /permissive-)
  else()
    target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Werror)
  endif()
endfunction()

# Backends to build each test for: the platform's native one and, on Windows, the user-space
# port too (IOCP_FORCE_POSIX_BACKEND), so that both are tested there.
set(IOCP_TEST_BACKENDS native)
if(WIN32)
  list(APPEND IOCP_TEST_BACKENDS posix)
endif()

# The Linux I/O backends each I/O test runs on (IOCP_IO_BACKEND in its environment, see
# include/iocp/detail/io/linux/select.hpp): io_uring only where the library links liburing.
set(IOCP_TEST_IO_BACKENDS "")
if(CMAKE_SYSTEM_NAME STREQUAL "Linux")
  if(IOCP_LIBURING_FOUND)
    list(APPEND IOCP_TEST_IO_BACKENDS io_uring)
  endif()
  list(APPEND IOCP_TEST_IO_BACKENDS epoll)
endif()

# iocp_add_io_test(<name> <command>... [PROPERTIES <prop> <value>...]): a plain ctest test of
# files and sockets, once per Linux I/O backend (<name>_io_uring, <name>_epoll), elsewhere once.
function(iocp_add_io_test name)
  cmake_parse_arguments(PARSE_ARGV 1 arg "" "WORKING_DIRECTORY" "PROPERTIES")
  set(dir_args)
  if(arg_WORKING_DIRECTORY)
    set(dir_args WORKING_DIRECTORY ${arg_WORKING_DIRECTORY})
  endif()
  if(NOT IOCP_TEST_IO_BACKENDS)
    add_test(NAME ${name} COMMAND ${arg_UNPARSED_ARGUMENTS} ${dir_args})
    set_tests_properties(${name} PROPERTIES TIMEOUT 120 ${arg_PROPERTIES})
    return()
  endif()
  foreach(io IN LISTS IOCP_TEST_IO_BACKENDS)
    add_test(NAME ${name}_${io} COMMAND ${arg_UNPARSED_ARGUMENTS} ${dir_args})
    set_tests_properties(${name}_${io} PROPERTIES TIMEOUT 120 ENVIRONMENT IOCP_IO_BACKEND=${io}
                         ${arg_PROPERTIES})
  endforeach()
endfunction()

# iocp_add_gtest(<name> [IO] [COMPILE_DEFINITIONS <def>...] [SOURCES] <source>...):
# one test program per backend, each GoogleTest case a ctest test with a timeout. Names: <name>
# (native backend) and <name>_posix_backend. IO: tests of files and sockets, built where they
# exist (IOCP_HAS_IO: the Win32 backend, not the user-space port on Windows; Linux), and on
# Linux run once per I/O backend: <name>_io_uring.<case> and <name>_epoll.<case> (one program,
# IOCP_IO_BACKEND in each test's environment). COMPILE_DEFINITIONS: for this program only, on
# every backend (e.g. IOCP_FAULT_INJECTION); put the sources after SOURCES, or before
# COMPILE_DEFINITIONS.
function(iocp_add_gtest name)
  cmake_parse_arguments(PARSE_ARGV 1 arg "IO" "" "COMPILE_DEFINITIONS;SOURCES")
  set(sources ${arg_UNPARSED_ARGUMENTS} ${arg_SOURCES})
  foreach(definition IN LISTS arg_COMPILE_DEFINITIONS)
    if(definition MATCHES "\\.(cpp|cc|cxx|hpp|h)$")
      message(FATAL_ERROR "iocp_add_gtest(${name}): '${definition}' is a source, not a "
                          "definition: list sources after SOURCES")
    endif()
  endforeach()
  if(NOT sources)
    message(FATAL_ERROR "iocp_add_gtest(${name}): no sources")
  endif()
  set(backends ${IOCP_TEST_BACKENDS})
  set(io_backends "")
  if(arg_IO)
    if(NOT WIN32 AND NOT CMAKE_SYSTEM_NAME STREQUAL "Linux")
      return() # no I/O backend for this system yet
    endif()
    set(backends native)
    set(io_backends ${IOCP_TEST_IO_BACKENDS})
  endif()
  foreach(backend IN LISTS backends)
    set(target ${name})
    if(backend STREQUAL "posix")
      set(target ${name}_posix_backend)
    endif()
    add_executable(${target} ${sources} ${PROJECT_SOURCE_DIR}/tests/support/test_main.cpp)
    target_link_libraries(${target} PRIVATE iocp::iocp GTest::gtest)
    target_include_directories(${target} PRIVATE ${PROJECT_SOURCE_DIR}/tests)
    if(backend STREQUAL "posix")
      target_compile_definitions(${target} PRIVATE IOCP_FORCE_POSIX_BACKEND)
    endif()
    if(arg_COMPILE_DEFINITIONS)
      target_compile_definitions(${target} PRIVATE ${arg_COMPILE_DEFINITIONS})
    endif()
    iocp_warnings(${target})
    if(NOT io_backends)
      gtest_discover_tests(${target}
        TEST_PREFIX "${target}."
        DISCOVERY_MODE PRE_TEST
        DISCOVERY_TIMEOUT 120
        PROPERTIES TIMEOUT 120)
    endif()
    foreach(io IN LISTS io_backends)
      gtest_discover_tests(${target}
        TEST_PREFIX "${target}_${io}."
        DISCOVERY_MODE PRE_TEST
        DISCOVERY_TIMEOUT 120
        PROPERTIES TIMEOUT 120 ENVIRONMENT IOCP_IO_BACKEND=${io})
    endforeach()
  endforeach()
endfunction()
