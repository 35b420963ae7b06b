# Overlay port that builds the checkout it sits in (ports/iocp/ -> ../..), so that
#   vcpkg install iocp --overlay-ports=<checkout>/ports
# works offline and installs exactly the sources of that checkout.
#
# vcpkg computes the package ABI from this port directory, not from the sources: after
# changing the checkout, `vcpkg remove iocp` (classic mode; in manifest mode delete
# <build>/vcpkg_installed) and skip the binary cache (--binarysource=clear) before installing
# again (README, "vcpkg").
#
# The links are resolved first: an overlay reached through a symlink (a ports folder that
# links to <checkout>/ports/iocp) would otherwise put "../.." beside the link, not in the
# checkout. REALPATH resolves every link on the way, ABSOLUTE none.
get_filename_component(_iocp_port_dir "${CMAKE_CURRENT_LIST_DIR}" REALPATH)
get_filename_component(SOURCE_PATH "${_iocp_port_dir}/../.." ABSOLUTE)
if(NOT EXISTS "${SOURCE_PATH}/include/iocp/iocp.hpp")
    message(FATAL_ERROR "iocp port: ${_iocp_port_dir} is not <checkout>/ports/iocp "
                        "(no include/iocp/iocp.hpp in ${SOURCE_PATH})")
endif()

# Header-only: one (release) configuration is enough.
set(VCPKG_BUILD_TYPE release)

vcpkg_cmake_configure(
    SOURCE_PATH "${SOURCE_PATH}"
    OPTIONS
        -DIOCP_BUILD_TESTS=OFF
        -DIOCP_BUILD_BENCHMARKS=OFF
        -DIOCP_BUILD_EXAMPLES=OFF
        -DIOCP_INSTALL=ON
)
vcpkg_cmake_install()

# The package installs its CMake config to ${CMAKE_INSTALL_DATADIR}/iocp.
vcpkg_cmake_config_fixup(CONFIG_PATH share/iocp)

# Nothing is compiled: no lib/ or debug/ trees. The license goes to share/iocp/copyright
# below, so the copy the project installs under share/doc is dropped.
file(REMOVE_RECURSE
    "${CURRENT_PACKAGES_DIR}/debug"
    "${CURRENT_PACKAGES_DIR}/lib"
    "${CURRENT_PACKAGES_DIR}/share/doc")

file(INSTALL "${CMAKE_CURRENT_LIST_DIR}/usage" DESTINATION "${CURRENT_PACKAGES_DIR}/share/${PORT}")
vcpkg_install_copyright(FILE_LIST "${SOURCE_PATH}/LICENSE")
