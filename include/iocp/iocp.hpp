#pragma once
/// @file
/// The whole library. Each header also stands alone.

#include "config.hpp"
#include "error.hpp"
#include "operation.hpp"
#include "overlapped.hpp"
#include "port.hpp"
#include "thread_pool.hpp"
#include "unique_handle.hpp"
#include "version.hpp"
