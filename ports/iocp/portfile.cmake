# Overlay port that builds the checkout it sits in (ports/iocp/ -> ../..), so that
#   vcpkg install iocp --overlay-ports=<checkout>/ports
# works offline and installs exactly the sources of that checkout.
#
# vcpkg computes the package ABI from this port directory, not from the sources: after
# changing the checkout, `vcpkg remove iocp` (and skip the binary cache, e.g.
# --binarysource=clear) before installing again.
get_filename_component(SOURCE_PATH "${CMAKE_CURRENT_LIST_DIR}/../.." ABSOLUTE)

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
