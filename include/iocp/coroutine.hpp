#pragma once
/// @file
/// C++20 coroutines on the pool: `iocp::task<T>`, `iocp::spawn`, `iocp::sync_wait`,
/// `iocp::when_all`, and (wherever `IOCP_HAS_IO` is 1) every file and socket operation as an
/// awaitable (`iocp::async_recv`, `async_send_all`, `async_accept`, ...). `co_await
/// pool.schedule()` and `pool.sleep_for(d)` are members of `iocp::thread_pool`.
///
/// @code
/// #include <iocp/coroutine.hpp>
///
/// iocp::task<int> work(iocp::thread_pool& pool) {
///     co_await pool.schedule();                            // on a worker now
///     co_await pool.sleep_for(std::chrono::milliseconds(10));
///     co_return 42;
/// }
/// int main() {
///     iocp::thread_pool pool(2);
///     return iocp::sync_wait(work(pool)) == 42 ? 0 : 1;
/// }
/// @endcode
///
/// `iocp.hpp` includes it; each header under `iocp/coro/` also stands alone.

#include "config.hpp"
#include "coro/spawn.hpp"
#include "coro/sync_wait.hpp"
#include "coro/task.hpp"
#include "coro/when_all.hpp"

#if IOCP_HAS_IO
#include "coro/io.hpp"
#endif
