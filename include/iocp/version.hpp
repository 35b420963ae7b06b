#pragma once
/// @file
/// The library version. CMake parses these three macros, so keep them on their own lines.

#define IOCP_VERSION_MAJOR 0
#define IOCP_VERSION_MINOR 1
#define IOCP_VERSION_PATCH 0

/// The version as one number: major * 10000 + minor * 100 + patch.
#define IOCP_VERSION (IOCP_VERSION_MAJOR * 10000 + IOCP_VERSION_MINOR * 100 + IOCP_VERSION_PATCH)
