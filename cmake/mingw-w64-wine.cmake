# Cross-compile for Windows with MinGW-w64 (Debian g++-mingw-w64-x86-64-posix) and run the
# results under Wine. The -posix compiler variant is the one with std::thread.
set(CMAKE_SYSTEM_NAME Windows)
set(CMAKE_SYSTEM_PROCESSOR x86_64)
set(CMAKE_C_COMPILER x86_64-w64-mingw32-gcc-posix)
set(CMAKE_CXX_COMPILER x86_64-w64-mingw32-g++-posix)
set(CMAKE_RC_COMPILER x86_64-w64-mingw32-windres)
# Appended, never set: a toolchain that chainloads this one (vcpkg's, for x64-mingw-static)
# has put its installed tree there already, and find_package must still see it. The toolchain
# file is read again by every try_compile, hence the check against duplicates.
if(NOT "/usr/x86_64-w64-mingw32" IN_LIST CMAKE_FIND_ROOT_PATH)
  list(APPEND CMAKE_FIND_ROOT_PATH /usr/x86_64-w64-mingw32)
endif()
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# Static runtime: otherwise every exe needs libstdc++/libwinpthread DLLs beside it, and Wine
# exits with code 53 (silently under WINEDEBUG=-all) when they are missing.
set(CMAKE_EXE_LINKER_FLAGS_INIT "-static")

# Every test and example runs through this wrapper, which boots a private Wine prefix once
# (with its output detached, so that Wine's background processes never hold ctest's pipes).
set(CMAKE_CROSSCOMPILING_EMULATOR "${CMAKE_CURRENT_LIST_DIR}/wine-run.sh")
