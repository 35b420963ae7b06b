# Compile-only Windows build with Clang: clang++ --target=x86_64-w64-mingw32 against the
# MinGW-w64 headers and libstdc++ of Debian's g++-mingw-w64-x86-64-posix. On Linux this is the
# nearest we get to clang-cl's diagnostics on the Win32 backend.
#
# Nothing is linked or run (Debian ships no Clang runtime for MinGW): an "executable" is an
# empty file, and CMake's compiler checks build a static library. With
# -DIOCP_CLANG_MINGW_SYNTAX_ONLY=ON sources are only checked (-fsyntax-only, an empty object
# file), which halves the time of a build of every test; the header check compiles for real.
set(CMAKE_SYSTEM_NAME Windows)
set(CMAKE_SYSTEM_PROCESSOR x86_64)

set(IOCP_CLANG_MINGW_TARGET x86_64-w64-mingw32)
find_program(IOCP_CLANG_CXX NAMES clang++-14 clang++ REQUIRED)
find_program(IOCP_CLANG_C NAMES clang-14 clang REQUIRED)
find_program(IOCP_MINGW_GXX NAMES ${IOCP_CLANG_MINGW_TARGET}-g++-posix REQUIRED)
set(CMAKE_CXX_COMPILER "${IOCP_CLANG_CXX}")
set(CMAKE_C_COMPILER "${IOCP_CLANG_C}") # GoogleTest's project enables C
set(CMAKE_CXX_COMPILER_TARGET ${IOCP_CLANG_MINGW_TARGET})
set(CMAKE_C_COMPILER_TARGET ${IOCP_CLANG_MINGW_TARGET})
set(CMAKE_TRY_COMPILE_TARGET_TYPE STATIC_LIBRARY)

# The include directories: the ones MinGW's g++ itself searches, minus GCC's own compiler
# headers (include, include-fixed: intrinsics and limits.h that only GCC understands; Clang
# brings its own). Clang's MinGW driver would otherwise add the host's /usr/include and
# /usr/include/c++ (it looks for a GCC installation the Debian way it does not know), so all
# standard directories are switched off and these are given explicitly.
execute_process(
    COMMAND "${IOCP_MINGW_GXX}" -E -v -x c++ -
    INPUT_FILE /dev/null
    OUTPUT_QUIET
    ERROR_VARIABLE _iocp_gxx_v
    RESULT_VARIABLE _iocp_rc)
if(NOT _iocp_rc EQUAL 0)
    message(FATAL_ERROR "${IOCP_MINGW_GXX} -E -v failed: ${_iocp_gxx_v}")
endif()
string(REGEX MATCH "#include <\\.\\.\\.> search starts here:\n(.*)\nEnd of search list" _
             "${_iocp_gxx_v}")
string(REPLACE "\n" ";" _iocp_dirs "${CMAKE_MATCH_1}")
execute_process(
    COMMAND "${IOCP_CLANG_CXX}" -print-resource-dir
    OUTPUT_VARIABLE _iocp_resource_dir
    OUTPUT_STRIP_TRAILING_WHITESPACE)
# Clang's order: libstdc++, then Clang's own headers, then the MinGW C headers.
set(_iocp_cxx_dirs "")
set(_iocp_c_dirs "")
foreach(_dir IN LISTS _iocp_dirs)
    string(STRIP "${_dir}" _dir)
    get_filename_component(_dir "${_dir}" REALPATH)
    if(_dir MATCHES "/include-fixed$" OR _dir MATCHES "/lib/gcc/[^/]+/[^/]+/include$")
        continue()
    elseif(_dir MATCHES "/c\\+\\+(/|$)")
        list(APPEND _iocp_cxx_dirs "${_dir}")
    else()
        list(APPEND _iocp_c_dirs "${_dir}")
    endif()
endforeach()
if(NOT _iocp_cxx_dirs OR NOT _iocp_c_dirs)
    message(FATAL_ERROR "no libstdc++ or C include directory in ${IOCP_MINGW_GXX}'s search list")
endif()
set(_iocp_flags "-nostdinc")
foreach(_dir IN ITEMS "${_iocp_resource_dir}/include" LISTS _iocp_c_dirs)
    string(APPEND _iocp_flags " -isystem ${_dir}")
endforeach()
set(CMAKE_C_FLAGS_INIT "${_iocp_flags}")
set(_iocp_flags "-nostdinc -nostdinc++")
foreach(_dir IN LISTS _iocp_cxx_dirs ITEMS "${_iocp_resource_dir}/include" LISTS _iocp_c_dirs)
    string(APPEND _iocp_flags " -isystem ${_dir}")
endforeach()
set(CMAKE_CXX_FLAGS_INIT "${_iocp_flags}")

set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# Compile only. Windows' platform files set the link rules after a toolchain file is read, so
# ours come from a rules override file, read after them.
set(CMAKE_USER_MAKE_RULES_OVERRIDE_CXX "${CMAKE_CURRENT_LIST_DIR}/compile-only-rules.cmake")
