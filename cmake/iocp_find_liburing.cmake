# Finds liburing (Linux) and makes the imported target iocp::liburing: the library, its include
# directory, and IOCP_HAS_LIBURING=1 for every target that links it (the io_uring backend of
# include/iocp/detail/io/linux/ is compiled only then). Used by the top-level CMakeLists.txt
# and again by the installed iocpConfig.cmake, so consumers find what the package was built
# with. pkg-config's `liburing` first (it knows the flags of non-standard prefixes), then a
# plain search for <liburing.h> and -luring. Sets IOCP_LIBURING_FOUND.
if(TARGET iocp::liburing)
  set(IOCP_LIBURING_FOUND TRUE)
  return()
endif()
set(IOCP_LIBURING_FOUND FALSE)

find_package(PkgConfig QUIET)
if(PKG_CONFIG_FOUND)
  pkg_check_modules(IOCP_PC_LIBURING QUIET liburing)
endif()
find_path(IOCP_LIBURING_INCLUDE_DIR liburing.h HINTS ${IOCP_PC_LIBURING_INCLUDE_DIRS})
find_library(IOCP_LIBURING_LIBRARY NAMES uring HINTS ${IOCP_PC_LIBURING_LIBRARY_DIRS})
mark_as_advanced(IOCP_LIBURING_INCLUDE_DIR IOCP_LIBURING_LIBRARY)

if(IOCP_LIBURING_INCLUDE_DIR AND IOCP_LIBURING_LIBRARY)
  add_library(iocp::liburing INTERFACE IMPORTED)
  set_target_properties(iocp::liburing PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${IOCP_LIBURING_INCLUDE_DIR}"
    INTERFACE_LINK_LIBRARIES "${IOCP_LIBURING_LIBRARY}"
    INTERFACE_COMPILE_DEFINITIONS "IOCP_HAS_LIBURING=1")
  set(IOCP_LIBURING_FOUND TRUE)
endif()
