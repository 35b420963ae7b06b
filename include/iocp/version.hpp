#pragma once
/// @file
/// The library version. CMake parses these three macros, so keep them on their own lines.

/// Major version: incompatible changes.
#define IOCP_VERSION_MAJOR 0
/// Minor version: additions.
#define IOCP_VERSION_MINOR 1
/// Patch version: fixes.
#define IOCP_VERSION_PATCH 0

/// The version as one number: major * 10000 + minor * 100 + patch.
#define IOCP_VERSION (IOCP_VERSION_MAJOR * 10000 + IOCP_VERSION_MINOR * 100 + IOCP_VERSION_PATCH)
