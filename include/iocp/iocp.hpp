#pragma once
/// @file
/// The whole library. Each header also stands alone.

#include "config.hpp"
#include "error.hpp"
#include "future.hpp"
#include "operation.hpp"
#include "overlapped.hpp"
#include "port.hpp"
#include "thread_pool.hpp"
#include "unique_handle.hpp"
#include "version.hpp"

#if IOCP_HAS_IO
// File, socket and datagram I/O on the pool (Win32: overlapped calls; Linux: io_uring or epoll).
#include "acceptor.hpp"
#include "buffer.hpp"
#include "datagram_socket.hpp"
#include "endpoint.hpp"
#include "file.hpp"
#include "io_operation.hpp"
#include "socket.hpp"
#endif

#if IOCP_HAS_IOCP
// Win32 only: any overlapped call on any handle, and named pipes.
#include "overlapped_handle.hpp"
#include "pipe.hpp"
#endif
// C++20 coroutines: tasks, spawn, sync_wait, when_all and the I/O awaitables.
#include "coroutine.hpp"
