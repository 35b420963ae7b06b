# Offline check of the vcpkg overlay port in ports/iocp (vcpkg itself is not needed):
#
#   cmake [-D IOCP_PACKAGE_BINARY_DIR=<dir>] -P tests/package/vcpkg_port.cmake
#
# 1. vcpkg.json parses, names the port iocp, carries the version of include/iocp/version.hpp,
#    depends on the host tools vcpkg-cmake and vcpkg-cmake-config and has no "supports".
# 2. portfile.cmake runs against small stand-ins for the vcpkg helpers it calls (they do what
#    vcpkg's do for a header-only CMake package: configure, install into the package dir,
#    check the config dir, install the copyright), and the resulting package has vcpkg's layout.
#    It runs three times: reached through a symlink to ports/iocp, through a symlink to ports/,
#    and in the checkout; each time it must build this checkout.
# 3. The find_package consumer builds and runs against that package.
# The stand-ins are not vcpkg: a real `vcpkg install iocp --overlay-ports=ports` remains the
# final word.
cmake_minimum_required(VERSION 3.21)

get_filename_component(_source "${CMAKE_CURRENT_LIST_DIR}/../.." ABSOLUTE)
set(_port_dir "${_source}/ports/iocp")
if(NOT DEFINED IOCP_PACKAGE_BINARY_DIR)
  set(IOCP_PACKAGE_BINARY_DIR "${_source}/build/package")
endif()
get_filename_component(IOCP_PACKAGE_BINARY_DIR "${IOCP_PACKAGE_BINARY_DIR}" ABSOLUTE)
set(_root "${IOCP_PACKAGE_BINARY_DIR}/vcpkg")
file(REMOVE_RECURSE "${_root}")

function(fail)
  list(JOIN ARGN "" _msg)
  message(FATAL_ERROR "[vcpkg port] ${_msg}")
endfunction()

# --- 1. the manifest -------------------------------------------------------------------------
file(READ "${_port_dir}/vcpkg.json" _json)
string(JSON _name ERROR_VARIABLE _err GET "${_json}" name)
if(_err)
  fail("vcpkg.json: ${_err}")
endif()
if(NOT _name STREQUAL "iocp")
  fail("vcpkg.json names the port '${_name}', not iocp")
endif()
set(_version "")
foreach(_key version-semver version version-string version-date)
  string(JSON _v ERROR_VARIABLE _err GET "${_json}" ${_key})
  if(NOT _err)
    set(_version "${_v}")
  endif()
endforeach()
file(READ "${_source}/include/iocp/version.hpp" _header)
foreach(_part MAJOR MINOR PATCH)
  string(REGEX MATCH "#define IOCP_VERSION_${_part} ([0-9]+)" _ "${_header}")
  set(_v_${_part} "${CMAKE_MATCH_1}")
endforeach()
set(_header_version "${_v_MAJOR}.${_v_MINOR}.${_v_PATCH}")
if(NOT _version STREQUAL _header_version)
  fail("vcpkg.json has version '${_version}', include/iocp/version.hpp says ${_header_version}")
endif()
string(JSON _supports ERROR_VARIABLE _err GET "${_json}" supports)
if(NOT _err)
  fail("vcpkg.json restricts the port with \"supports\": it builds everywhere")
endif()
string(JSON _license ERROR_VARIABLE _err GET "${_json}" license)
if(_err OR NOT _license STREQUAL "MIT")
  fail("vcpkg.json should say \"license\": \"MIT\", as LICENSE does")
endif()
set(_host_deps "")
string(JSON _count LENGTH "${_json}" dependencies)
math(EXPR _last "${_count} - 1")
foreach(_i RANGE ${_last})
  string(JSON _dep GET "${_json}" dependencies ${_i})
  string(JSON _dep_name ERROR_VARIABLE _err GET "${_dep}" name)
  string(JSON _dep_host ERROR_VARIABLE _err_host GET "${_dep}" host)
  if(NOT _err AND NOT _err_host AND _dep_host)
    list(APPEND _host_deps "${_dep_name}")
  endif()
endforeach()
foreach(_required vcpkg-cmake vcpkg-cmake-config)
  if(NOT _required IN_LIST _host_deps)
    fail("vcpkg.json lacks the host dependency ${_required}")
  endif()
endforeach()
message(STATUS "[vcpkg port] vcpkg.json: iocp ${_version}, host deps: ${_host_deps}")

# --- 2. the portfile, against stand-ins for vcpkg's helpers -------------------------------
set(PORT iocp)
set(TARGET_TRIPLET x64-linux)
set(CURRENT_PACKAGES_DIR "${_root}/packages/${PORT}_${TARGET_TRIPLET}")
set(CURRENT_BUILDTREES_DIR "${_root}/buildtrees/${PORT}")
find_program(_ninja NAMES ninja ninja-build)
set(_generator_args)
if(_ninja)
  set(_generator_args -G Ninja)
endif()

function(vcpkg_cmake_configure)
  cmake_parse_arguments(PARSE_ARGV 0 arg "" "SOURCE_PATH" "OPTIONS;OPTIONS_RELEASE;OPTIONS_DEBUG")
  if(NOT arg_SOURCE_PATH OR NOT EXISTS "${arg_SOURCE_PATH}/CMakeLists.txt")
    fail("vcpkg_cmake_configure: SOURCE_PATH '${arg_SOURCE_PATH}' holds no CMakeLists.txt")
  endif()
  file(REAL_PATH "${arg_SOURCE_PATH}" _real_source)
  file(REAL_PATH "${_source}" _real_checkout)
  if(NOT _real_source STREQUAL _real_checkout)
    fail("vcpkg_cmake_configure: SOURCE_PATH is ${arg_SOURCE_PATH}, not the checkout ${_source}")
  endif()
  if(NOT VCPKG_BUILD_TYPE STREQUAL "release")
    fail("a header-only port sets VCPKG_BUILD_TYPE to release before configuring")
  endif()
  execute_process(COMMAND "${CMAKE_COMMAND}" -S "${arg_SOURCE_PATH}"
                          -B "${CURRENT_BUILDTREES_DIR}/${TARGET_TRIPLET}-rel" ${_generator_args}
                          -DCMAKE_BUILD_TYPE=Release
                          "-DCMAKE_INSTALL_PREFIX=${CURRENT_PACKAGES_DIR}"
                          ${arg_OPTIONS} ${arg_OPTIONS_RELEASE}
                  RESULT_VARIABLE _rc)
  if(NOT _rc EQUAL 0)
    fail("vcpkg_cmake_configure: configuring failed")
  endif()
endfunction()

function(vcpkg_cmake_install)
  execute_process(COMMAND "${CMAKE_COMMAND}" --build "${CURRENT_BUILDTREES_DIR}/${TARGET_TRIPLET}-rel"
                          --target install
                  RESULT_VARIABLE _rc)
  if(NOT _rc EQUAL 0)
    fail("vcpkg_cmake_install: install failed")
  endif()
endfunction()

function(vcpkg_cmake_config_fixup)
  cmake_parse_arguments(PARSE_ARGV 0 arg "" "CONFIG_PATH;PACKAGE_NAME" "")
  if(NOT arg_PACKAGE_NAME)
    set(arg_PACKAGE_NAME "${PORT}")
  endif()
  if(NOT EXISTS "${CURRENT_PACKAGES_DIR}/${arg_CONFIG_PATH}/iocpConfig.cmake")
    fail("vcpkg_cmake_config_fixup: no iocpConfig.cmake in CONFIG_PATH ${arg_CONFIG_PATH}")
  endif()
  if(NOT arg_CONFIG_PATH STREQUAL "share/${arg_PACKAGE_NAME}")
    file(RENAME "${CURRENT_PACKAGES_DIR}/${arg_CONFIG_PATH}"
         "${CURRENT_PACKAGES_DIR}/share/${arg_PACKAGE_NAME}")
  endif()
endfunction()

function(vcpkg_install_copyright)
  cmake_parse_arguments(PARSE_ARGV 0 arg "" "" "FILE_LIST")
  set(_text "")
  foreach(_file IN LISTS arg_FILE_LIST)
    if(NOT EXISTS "${_file}")
      fail("vcpkg_install_copyright: ${_file} does not exist")
    endif()
    file(READ "${_file}" _part)
    string(APPEND _text "${_part}")
  endforeach()
  file(WRITE "${CURRENT_PACKAGES_DIR}/share/${PORT}/copyright" "${_text}")
endfunction()

# run_port(<port dir> <what>): runs <port dir>/portfile.cmake as vcpkg would, into a fresh
# package directory, and checks the package.
function(run_port port_dir what)
  file(REMOVE_RECURSE "${CURRENT_PACKAGES_DIR}" "${CURRENT_BUILDTREES_DIR}")
  include("${port_dir}/portfile.cmake")

  foreach(_file include/iocp/iocp.hpp include/iocp/version.hpp share/iocp/iocpConfig.cmake
          share/iocp/iocpConfigVersion.cmake share/iocp/iocpTargets.cmake share/iocp/copyright
          share/iocp/usage)
    if(NOT EXISTS "${CURRENT_PACKAGES_DIR}/${_file}")
      fail("${what}: the package lacks ${_file}")
    endif()
  endforeach()
  foreach(_dir debug lib bin share/doc)
    if(EXISTS "${CURRENT_PACKAGES_DIR}/${_dir}")
      fail("${what}: a header-only package has no ${_dir}/")
    endif()
  endforeach()
  # vcpkg packages are relocatable: no absolute path of this build in the CMake files.
  file(GLOB _config_files "${CURRENT_PACKAGES_DIR}/share/iocp/*.cmake")
  foreach(_file IN LISTS _config_files)
    file(READ "${_file}" _text)
    foreach(_path "${CURRENT_PACKAGES_DIR}" "${_source}")
      string(FIND "${_text}" "${_path}" _at)
      if(NOT _at EQUAL -1)
        fail("${what}: ${_file} contains the absolute path ${_path}")
      endif()
    endforeach()
  endforeach()
  message(STATUS "[vcpkg port] ${what}: portfile.cmake produced ${CURRENT_PACKAGES_DIR}")
endfunction()

# The port reached through symlinks, as users set overlays up: a folder of overlays holding a
# link to <checkout>/ports/iocp, and a link to <checkout>/ports itself. "../.." of the port
# then lies beside the link; a decoy project there (which installs nothing) is what a port
# that does not resolve links would build.
set(_links "${_root}/links")
file(MAKE_DIRECTORY "${_links}/overlays")
file(CREATE_LINK "${_port_dir}" "${_links}/overlays/iocp" RESULT _link_rc SYMBOLIC)
if(NOT _link_rc EQUAL 0)
  fail("cannot create a symlink in ${_links}: ${_link_rc}")
endif()
file(CREATE_LINK "${_source}/ports" "${_links}/ports" SYMBOLIC)
file(WRITE "${_links}/CMakeLists.txt"
     "cmake_minimum_required(VERSION 3.21)\nproject(not_iocp NONE)\n"
     "message(FATAL_ERROR \"the vcpkg port built ${_links}, not the iocp checkout\")\n")

run_port("${_links}/overlays/iocp" "overlay linked to ports/iocp")
run_port("${_links}/ports/iocp" "overlay through a linked ports folder")
run_port("${_port_dir}" "overlay in the checkout")

# --- 3. a consumer of the package --------------------------------------------------------
set(_bin "${_root}/consumer")
execute_process(COMMAND "${CMAKE_COMMAND}" -S "${CMAKE_CURRENT_LIST_DIR}/find_package"
                        -B "${_bin}" ${_generator_args} -DCMAKE_BUILD_TYPE=Release
                        "-DCMAKE_PREFIX_PATH=${CURRENT_PACKAGES_DIR}"
                        "-DIOCP_EXPECTED_VERSION=${_header_version}"
                RESULT_VARIABLE _rc)
if(_rc EQUAL 0)
  execute_process(COMMAND "${CMAKE_COMMAND}" --build "${_bin}" RESULT_VARIABLE _rc)
endif()
if(_rc EQUAL 0)
  execute_process(COMMAND "${CMAKE_CTEST_COMMAND}" --test-dir "${_bin}" --output-on-failure
                          --no-tests=error --timeout 60
                  RESULT_VARIABLE _rc)
endif()
if(NOT _rc EQUAL 0)
  fail("the find_package consumer failed against the vcpkg package")
endif()
message(STATUS "[vcpkg port] OK: the port installs iocp ${_version} and a consumer uses it")
