# Rules override (CMAKE_USER_MAKE_RULES_OVERRIDE_CXX) of cmake/clang-mingw-w64.cmake: a
# compile-only build. Linking an executable or a shared library writes an empty file.
# With IOCP_CLANG_MINGW_SYNTAX_ONLY, sources are only checked (-fsyntax-only, which still
# writes the dependency file) and objects and static libraries are empty files too. CMake's own
# checks never see that option (try_compile does not pass it on): they read real objects.
set(CMAKE_CXX_LINK_EXECUTABLE "<CMAKE_COMMAND> -E touch <TARGET>")
set(CMAKE_CXX_CREATE_SHARED_LIBRARY "<CMAKE_COMMAND> -E touch <TARGET>")
if(IOCP_CLANG_MINGW_SYNTAX_ONLY)
  set(CMAKE_CXX_COMPILE_OBJECT
      "<CMAKE_CXX_COMPILER> <DEFINES> <INCLUDES> <FLAGS> -fsyntax-only <SOURCE> && <CMAKE_COMMAND> -E touch <OBJECT>")
  set(CMAKE_CXX_CREATE_STATIC_LIBRARY "<CMAKE_COMMAND> -E touch <TARGET>")
endif()
