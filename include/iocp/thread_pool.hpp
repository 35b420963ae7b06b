#pragma once
/// @file
/// `iocp::thread_pool`: N workers that run posted work items and the completions of
/// overlapped I/O on handles associated with the pool.
///
/// @code
/// iocp::thread_pool pool(4);
/// pool.post([] { do_something(); });
/// iocp::future<int> answer = pool.submit([] { return 42; }); // or std::future<int>
/// pool.post_after(std::chrono::milliseconds(100), [] { later(); });
/// pool.wait();   // the post and the submit have run; the timer may still be pending
/// // ~thread_pool joins: runs what is queued, abandons the timer if it has not fired yet
/// @endcode
///
/// How it works. Work items go to user-space FIFOs in front of the completion port, one lane
/// per posting thread (up to 8 lanes; more threads share them), so that producers on different
/// cores do not write the same counter; the port carries I/O completions and is where idle
/// workers sleep. A producer touches the port only when a worker sleeps and no other worker is
/// already looking for work, so under load work items cost no kernel call at all. Workers look
/// at the port for I/O completions whenever the lanes are empty and at least every
/// `port_poll_interval` (64) work items. The items a worker
/// has claimed but not started yet stay visible to idle workers, which take them: N long items
/// on N idle workers run side by side, never one after another. Busy workers take them too,
/// ahead of the queue, when their owner has started none of them between two of the busy
/// workers' looks at the port: items claimed behind a long or blocking item wait for about
/// 2 x 64 items of a busy worker at most, even while producers keep the queue full. A
/// coroutine continuation (`co_await schedule()` on a worker) waits in its worker's own `next`
/// slot instead of the FIFO, visible to idle and busy workers in the same way.
///
/// Shutdown. `join()` runs queued work (and work it posts), cancels pending I/O through the
/// registered I/O objects, waits for every started operation to complete, then posts one
/// preallocated sentinel operation per worker, joins them and drains the port. `stop()` does the
/// same but abandons queued work: each abandoned callable is destroyed without running (a future
/// from `submit` then reports `std::future_errc::broken_promise`). Either way, every item
/// posted runs or is abandoned exactly once, and posts that race shutdown are refused with
/// `errc::closed`, never dropped.
///
/// Parts. The class is the public face; its engine's parts are detail types with their own
/// tests: the work FIFOs (detail/work_queue.hpp, in lanes: detail/pool/work_lanes.hpp), recycled
/// work-item blocks (work_item.hpp), timers (timer_queue.hpp), the wake protocol between producers
/// and idle workers (detail/pool/wake_protocol.hpp), outstanding-work accounting for `wait()` and
/// `join()` (outstanding_work.hpp), the shutdown phases (shutdown_phase.hpp) and the steps
/// that take the pool through them (shutdown_sequence.hpp), the workers' loop (worker_loop.hpp),
/// the I/O objects shutdown cancels (io_registry.hpp) and the backlog of completions that did not
/// go through the port (completion_backlog.hpp). Tuning constants are named once in
/// detail/pool/constants.hpp.
///
/// A failed port post (PostQueuedCompletionStatus fails when the kernel is out of non-paged
/// pool) never blocks a caller and never loses anything: a lost wake-up is made up by idle
/// workers, which look for work at least every `thread_pool::idle_recheck`; a completion that
/// cannot be posted goes to a locked backlog that the workers drain; a sentinel that cannot be
/// posted is replaced by the same periodic look, which sees that the pool is stopping.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "config.hpp"
#include "detail/pool/adaptive_spin.hpp"
#include "detail/pool/awaitables.hpp"
#include "detail/pool/completion_backlog.hpp"
#include "detail/pool/constants.hpp"
#include "detail/pool/held_items.hpp"
#include "detail/pool/io_registry.hpp"
#include "detail/pool/outstanding_work.hpp"
#include "detail/pool/shutdown_phase.hpp"
#include "detail/pool/shutdown_sequence.hpp"
#include "detail/pool/wake_protocol.hpp"
#include "detail/pool/work_lanes.hpp"
#include "detail/pool/worker_loop.hpp"
#include "detail/pool/worker_sentinels.hpp"
#include "detail/thread_name.hpp"
#include "detail/time.hpp"
#include "detail/timer_queue.hpp"
#include "detail/work_item.hpp"
#include "detail/work_queue.hpp"
#include "error.hpp"
#include "future.hpp"
#include "operation.hpp"
#include "port.hpp"

namespace iocp {

/// Construction options of a `thread_pool`. Every field has a documented range: values outside
/// it are clamped to it, except `threads`, which is refused above `max_threads`
/// (`std::errc::invalid_argument`: a silently smaller pool would be a surprise).
struct thread_pool_options {
    /// The most worker threads a pool accepts.
    static constexpr std::size_t max_threads = 4096;
    /// The largest dequeue batch (GetQueuedCompletionStatusEx takes at most 64 per call).
    static constexpr std::size_t max_batch = detail::pool_max_batch;
    /// Queue sizes: `queue_capacity` is clamped to [min, max], then rounded up to a power of
    /// two.
    static constexpr std::size_t min_queue_capacity = detail::work_queue::min_capacity;
    /// See `min_queue_capacity` (2^24 slots: 256 MiB if a backlog that large builds up).
    static constexpr std::size_t max_queue_capacity = detail::work_queue::max_capacity;
    /// The longest spin (`spin` is clamped to [0, max_spin]).
    static constexpr std::chrono::microseconds max_spin = std::chrono::seconds(1);

    /// Worker threads, 1 .. `max_threads`; 0 means one per processor. More than `max_threads`
    /// is refused with `std::errc::invalid_argument`.
    std::size_t threads = 0;
    /// The completion port's concurrency limit, clamped to [1, threads]; 0 means `threads`.
    unsigned concurrency = 0;
    /// At most this many work items (and port packets) a worker takes per dequeue, clamped to
    /// [1, max_batch]. Larger batches cost fewer shared-counter updates under load; they never
    /// hold back work, since idle workers take the claimed items not started yet.
    std::size_t batch = 16;
    /// Work items each lane's lock-free queue holds (16 bytes each), clamped to
    /// [min_queue_capacity, max_queue_capacity] and rounded up to a power of two. A lane is
    /// made when the first thread that maps to it posts (at most 8 lanes; see `post` on order),
    /// with a directory of 16 bytes per 1,024 slots of capacity (64 KiB for the default) and
    /// one segment. Its memory then follows the backlog: segments of 1,024 slots (16 KiB) are
    /// added as posts outrun the workers, and reused once emptied (kept until the pool is
    /// destroyed); since a segment is reused only whole, a lane surely holds
    /// `queue_capacity` - 1,023 items. When it is full, posts to it go to a slower locked
    /// overflow list: nothing is refused for lack of room.
    std::size_t queue_capacity = std::size_t{1} << 22;
    /// How long an idle worker keeps looking for work before it sleeps on the port, clamped to
    /// [0, max_spin] (0 or negative: no spin). Bounded on purpose: on a machine with few cores
    /// a spinning worker competes with the producer. It is the longest spin: a spinner whose
    /// core is taken by other threads (a busy machine) stops early and shortens the next
    /// spins, down to a short pure spin (64 pause instructions: a few microseconds), until
    /// spinning finds work again.
    std::chrono::microseconds spin = std::chrono::microseconds(50);
    /// Workers are named "<thread_name>-<index>" (empty: left unnamed). Linux keeps 15
    /// characters of a thread's name: a longer one is shortened there, the index kept whole.
    std::string thread_name = "iocp-worker";
    /// Called on each worker, with its index, before it runs anything / after its last item.
    /// `join()` and `stop()` wait for every worker's `on_thread_start` to return before they
    /// look for outstanding work, so what it posts (from a worker: also during `join()`) is
    /// run or abandoned like any work item.
    std::function<void(std::size_t)> on_thread_start;
    /// Called on each worker, with its index, after its last item (see on_thread_start).
    std::function<void(std::size_t)> on_thread_stop;
    /// Receives exceptions thrown by posted callables, by their destructors (a callable whose
    /// call and destructor both throw gives two calls, the call's exception first), by the
    /// destructors of abandoned ones, and by the hooks above. The worker lives on. Default:
    /// print the exception to stderr.
    /// Called on the thread where the exception was thrown: usually a worker (several may call
    /// it at once, so it must be thread-safe); for a callable that a post refuses or `cancel`
    /// destroys, the calling thread; for a timer's callable that `join()`/`stop()` abandons,
    /// the thread running it.
    /// It must not throw: it is called from noexcept code, so an exception leaving it calls
    /// `std::terminate`.
    std::function<void(std::exception_ptr)> exception_handler;
};

/// Counts of the pool's calls into the completion port since it started: the kernel calls a
/// work item may cost. On Win32 these are PostQueuedCompletionStatus and
/// GetQueuedCompletionStatusEx calls; on the POSIX backend, a post or blocking wait on the
/// user-space port (each at most one futex wake or wait).
struct thread_pool_stats {
    std::uint64_t wakeups = 0;    ///< packets posted to wake a sleeping worker
    std::uint64_t sleeps = 0;     ///< blocking waits of an idle worker on the port
    std::uint64_t port_polls = 0; ///< non-blocking looks at the port by busy workers
    /// Idle workers that found work on their periodic look (`thread_pool::idle_recheck`)
    /// without a wake-up: each is a wake-up whose post failed, made up late. 0 normally.
    std::uint64_t recoveries = 0;
};

class thread_pool;

namespace detail {

struct pool_io_access;

} // namespace detail

/// A thread pool on an I/O completion port.
///
/// Thread safety: every member may be called from any thread, including the pool's workers,
/// except that `wait()`, `join()` and `stop()` report an error when called from a worker or
/// from code that a `join()` or `stop()` runs on its own thread (the destructor of a timer's
/// callable it abandons, the exception handler it calls): they would wait for themselves. The
/// destructor must not race other calls, nor run on a worker or inside `join()`/`stop()`.
class thread_pool {
public:
    /// The clock of `post_at` and `post_after`.
    using clock = std::chrono::steady_clock;

    /// Periodic look of an idle worker for work that no wake-up announced (a wake-up whose
    /// post failed) and for the shutdown of the pool (a sentinel whose post failed). Asio's
    /// GetQueuedCompletionStatus loop uses the same 500 ms.
    static constexpr std::chrono::milliseconds idle_recheck{500};

    /// Starts `threads` workers (0 = one per processor).
    /// @throws std::system_error if the port or a thread cannot be created, or
    /// (`std::errc::invalid_argument`) if `threads` exceeds `thread_pool_options::max_threads`.
    explicit thread_pool(std::size_t threads = 0) : thread_pool(make_options(threads)) {}

    /// Starts a pool with the given options (see `thread_pool_options` for their ranges).
    /// @throws std::system_error if the port or a thread cannot be created, or
    /// (`std::errc::invalid_argument`) for an option it refuses; `std::bad_alloc`. Whatever it
    /// throws, the workers it had started are stopped and joined first.
    explicit thread_pool(thread_pool_options options)
        : options_(normalise(std::move(options))), port_(options_.concurrency),
          sentinels_(options_.threads), queue_(options_.queue_capacity),
          work_(options_.threads + 1), // one finished count per worker, plus shutdown's
          held_(options_.threads),
          timers_(
              [this](detail::work_item* item) { return enqueue(item, true) == std::error_code{}; },
              [this](std::exception_ptr e) { handle_exception(std::move(e)); }) {
        try {
            workers_.reserve(options_.threads);
            for (std::size_t i = 0; i < options_.threads; ++i)
                workers_.emplace_back([this, i] { worker_main(i); });
        } catch (...) {
            // Any exception (std::system_error, std::bad_alloc from the thread's state, ...):
            // stop the workers already running, or ~thread of a joinable thread terminates.
            shutdown(false);
            throw;
        }
    }

    thread_pool(const thread_pool&) = delete;
    thread_pool& operator=(const thread_pool&) = delete;

    /// Joins (see `join()`). Destroying the pool on one of its own workers, or from code its
    /// own `join()`/`stop()` runs, cannot wait for itself: it prints why and calls
    /// `std::terminate`.
    // Only std::mutex/condition_variable can throw in here, on OS resource exhaustion, where
    // terminating is all a destructor can do.
    ~thread_pool() { // NOLINT(bugprone-exception-escape)
        if (is_worker() || in_own_shutdown()) {
            // Destroying the pool from its own worker cannot join that worker (nor can a
            // shutdown wait for itself): a bug in the caller, reported the only way a
            // destructor can.
            std::fputs("iocp::thread_pool destroyed from one of its own workers or from inside "
                       "its own join()/stop()\n",
                       stderr);
            std::terminate();
        }
        shutdown(false);
    }

    /// Number of worker threads.
    std::size_t size() const noexcept { return options_.threads; }

    /// The index (0 .. size()-1) of the calling worker thread, or nothing if the caller is not
    /// a worker of any pool.
    static std::optional<std::size_t> this_worker_index() noexcept {
        if (current().pool == nullptr)
            return std::nullopt;
        return current().index;
    }

    /// True when called from one of this pool's workers.
    bool is_worker() const noexcept { return current().pool == this; }

    // --- work --------------------------------------------------------------------------------

    /// Queues `f` to run once on a worker. Fire-and-forget: an exception from `f` goes to the
    /// exception handler.
    /// Order: the items one thread posts are started in the order it posted them. Items posted
    /// by different threads have no order, even when one post happens before the other (each
    /// posting thread has its own queue, and workers take from them in turn): to order work
    /// across threads, post the second item from the first, or wait for the first.
    /// Thread safety: any thread may post at any time, the pool's workers included.
    /// Errors: `errc::closed` once shutdown has begun (after `join()` started, only the
    /// pool's own workers may still post); `std::errc::invalid_argument` for an empty
    /// `std::function` or null function pointer, or when copying or moving `f` into the pool
    /// throws (this form cannot carry that exception; the throwing form rethrows it);
    /// `std::errc::not_enough_memory`. A refused `f` is destroyed, never run.
    template <class F>
    void post(F&& f, std::error_code& ec) noexcept {
        post_impl(std::forward<F>(f), ec, nullptr);
    }
    /// As above. @throws std::system_error, or what copying or moving `f` threw (but a
    /// `std::bad_alloc` from it, like the pool's own, is `not_enough_memory`).
    template <class F>
    void post(F&& f) {
        std::error_code ec;
        std::exception_ptr thrown;
        post_impl(std::forward<F>(f), ec, &thrown);
        rethrow_or_throw_if(thrown, ec, "iocp::thread_pool::post");
    }

    /// Queues `f` and returns a future for its result or its exception (`iocp::future`, which
    /// has `std::future`'s interface and converts to one: future.hpp). If the pool abandons it
    /// (`stop()`), `get()` throws `std::future_error` with `std::future_errc::broken_promise`.
    /// The future's shared state lives in the pool's recycled work-item blocks: for a small
    /// callable and a small result (up to about 64 bytes) a submit allocates nothing and makes
    /// no system call in steady state (a `std::future` would make one: future.hpp says why);
    /// larger ones are allocated with `std::allocator`.
    /// Errors: as `post`; a refused `f` returns an invalid
    /// future (`valid() == false`) and is destroyed, never run.
    template <class F, class R = std::invoke_result_t<std::decay_t<F>&>>
    future<R> submit(F&& f, std::error_code& ec) noexcept {
        return submit_impl<F, R>(std::forward<F>(f), ec, nullptr);
    }
    /// As above. @throws std::system_error, or what copying or moving `f` threw (but a
    /// `std::bad_alloc` from it, like the pool's own, is `not_enough_memory`).
    template <class F, class R = std::invoke_result_t<std::decay_t<F>&>>
    future<R> submit(F&& f) {
        std::error_code ec;
        std::exception_ptr thrown;
        future<R> result = submit_impl<F, R>(std::forward<F>(f), ec, &thrown);
        rethrow_or_throw_if(thrown, ec, "iocp::thread_pool::submit");
        return result;
    }

    /// Blocks until every work item posted so far has finished (run or abandoned). It may
    /// also wait for items posted while it waits. Can be called again, from several threads.
    /// Errors: `std::errc::resource_deadlock_would_occur` when called from one of the pool's
    /// workers, or from code that this pool's `join()`/`stop()` runs on its own thread (it
    /// would wait for itself).
    void wait(std::error_code& ec) noexcept {
        if (is_worker() || in_own_shutdown()) {
            ec = std::make_error_code(std::errc::resource_deadlock_would_occur);
            return;
        }
        try {
            wait_until_idle(false);
            ec.clear();
        } catch (const std::system_error& e) {
            ec = e.code(); // the OS refused a mutex or condition variable
        }
    }
    /// As above. @throws std::system_error
    void wait() {
        std::error_code ec;
        wait(ec);
        detail::throw_if(ec, "iocp::thread_pool::wait");
    }

    /// Graceful shutdown: stops accepting posts from other threads, runs everything queued
    /// (including what those items post), abandons pending timers, cancels pending I/O and
    /// waits for it, then stops the workers. Idempotent; the destructor calls it. A `join()` or
    /// `stop()` that runs while another is under way waits for it to end, then returns (a
    /// `stop()` then returns 0: the first call decided what ran and what was abandoned).
    /// Errors: `std::errc::resource_deadlock_would_occur` when called from a worker, or from
    /// code that a `join()`/`stop()` of this pool runs on its own thread: the destructor of a
    /// timer's callable it abandons, the exception handler that destructor's exception reaches
    /// (an exception handler that stops the pool on a fatal error must expect this code).
    // Only std::mutex/condition_variable can throw in shutdown(), on OS resource exhaustion,
    // where terminating is all a noexcept call can do (as for the destructor).
    // NOLINTNEXTLINE(bugprone-exception-escape)
    void join(std::error_code& ec) noexcept {
        if (is_worker() || in_own_shutdown()) {
            ec = std::make_error_code(std::errc::resource_deadlock_would_occur);
            return;
        }
        shutdown(false);
        ec.clear();
    }
    /// As above. @throws std::system_error
    void join() {
        std::error_code ec;
        join(ec);
        detail::throw_if(ec, "iocp::thread_pool::join");
    }

    /// Immediate shutdown: refuses new posts, abandons queued work and pending timers, cancels
    /// pending I/O and waits for it, then stops the workers. Items already running finish.
    /// Returns how many work items (and timers) this call abandoned: 0 when the pool was
    /// already shut down or another `join()`/`stop()` was under way (this call waits for it).
    /// Errors: `std::errc::resource_deadlock_would_occur` when called from a worker, or from
    /// code that a `join()`/`stop()` of this pool runs on its own thread (returns 0).
    // NOLINTNEXTLINE(bugprone-exception-escape): as join(std::error_code&)
    std::size_t stop(std::error_code& ec) noexcept {
        if (is_worker() || in_own_shutdown()) {
            ec = std::make_error_code(std::errc::resource_deadlock_would_occur);
            return 0;
        }
        ec.clear();
        return shutdown(true);
    }
    /// As above. @throws std::system_error
    std::size_t stop() {
        std::error_code ec;
        std::size_t n = stop(ec);
        detail::throw_if(ec, "iocp::thread_pool::stop");
        return n;
    }

    // --- timers ------------------------------------------------------------------------------

    /// Runs `f` on the pool once `delay` (any `std::chrono::duration`, floating-point
    /// included) has passed. Returns an id for `cancel`. The delay saturates: zero or negative
    /// runs `f` as soon as a worker is free; a delay that passes `steady_clock::time_point::max()`
    /// (e.g. `iocp::infinite`, `duration::max()`) never runs it: it stays pending until
    /// `cancel` or shutdown abandons it.
    /// Errors: as `post`, except that `errc::closed` comes from every thread, the pool's workers
    /// included, once shutdown has begun (`join()` abandons timers, so it takes no new ones);
    /// `std::errc::not_enough_memory` or the OS error when the timer thread cannot be started.
    /// A refused `f` is destroyed, never run, and the id is empty (0).
    template <class Rep, class Period, class F>
    timer_id post_after(std::chrono::duration<Rep, Period> delay, F&& f,
                        std::error_code& ec) noexcept {
        return post_at(detail::deadline_after<clock>(clock::now(), delay), std::forward<F>(f), ec);
    }
    /// As above. @throws std::system_error, or what copying or moving `f` threw (but a
    /// `std::bad_alloc` from it, like the pool's own, is `not_enough_memory`).
    template <class Rep, class Period, class F>
    timer_id post_after(std::chrono::duration<Rep, Period> delay, F&& f) {
        std::error_code ec;
        std::exception_ptr thrown;
        timer_id id = post_at_impl(detail::deadline_after<clock>(clock::now(), delay),
                                   std::forward<F>(f), ec, &thrown);
        rethrow_or_throw_if(thrown, ec, "iocp::thread_pool::post_after");
        return id;
    }

    /// Runs `f` on the pool at `when` (a `std::chrono::steady_clock` time point of any
    /// duration type). Saturates as `post_after`: a time in the past runs `f` at once,
    /// `time_point::max()` (or beyond, in a wider duration) never runs it.
    /// Errors: as `post_after`.
    template <class Duration, class F>
    timer_id post_at(std::chrono::time_point<clock, Duration> when, F&& f,
                     std::error_code& ec) noexcept {
        return post_at_impl(when, std::forward<F>(f), ec, nullptr);
    }
    /// As above. @throws std::system_error, or what copying or moving `f` threw (but a
    /// `std::bad_alloc` from it, like the pool's own, is `not_enough_memory`).
    template <class Duration, class F>
    timer_id post_at(std::chrono::time_point<clock, Duration> when, F&& f) {
        std::error_code ec;
        std::exception_ptr thrown;
        timer_id id = post_at_impl(when, std::forward<F>(f), ec, &thrown);
        rethrow_or_throw_if(thrown, ec, "iocp::thread_pool::post_at");
        return id;
    }

    /// Cancels a pending timer: true if it will never run (its callable is destroyed), false
    /// if it already ran, is running, was cancelled before, or was abandoned by `join()` /
    /// `stop()` (so after shutdown, false does not mean that it ran).
    bool cancel(timer_id id) noexcept { return timers_.cancel(id); }

    // --- coroutines --------------------------------------------------------------------------

    /// `co_await pool.schedule()` resumes the coroutine on a worker (as a posted work item: no
    /// allocation in steady state). Awaited on one of this pool's workers, the continuation
    /// runs on that worker as soon as the current work item returns, ahead of the shared queue
    /// (as Asio runs a continuation from its thread's private queue): a hop costs no shared
    /// counter and stays in this core's cache. If this worker stays busy, an idle worker takes
    /// it the next time it looks for work (a spinning one when its spin ends: at most `spin`
    /// later). After 32 such continuations in a row one goes through the queue, behind the work
    /// items and timers already queued, and a worker looks for I/O completions every 64 items
    /// it runs, hops included: a coroutine that hops in a loop starves nothing.
    /// If the pool refuses the post (`errc::closed`: shutdown
    /// began; during `join()` only the pool's own workers may still post) the co_await throws
    /// `std::system_error` at once, on the calling thread; if `stop()` abandons the queued
    /// resumption, the coroutine resumes on a worker (or, with none left, on the thread that
    /// abandons it) and the co_await throws `errc::closed`. Either way it resumes exactly once.
    /// The awaitable must be awaited at once (`co_await pool.schedule()`).
    detail::schedule_awaitable<thread_pool> schedule() noexcept {
        return detail::schedule_awaitable<thread_pool>(*this);
    }

    /// `co_await pool.sleep_for(d)` suspends the coroutine for `d` (saturating as `post_after`)
    /// on the pool's timers and resumes it on a worker. The co_await returns a
    /// `std::error_code`: empty when the time came; `errc::operation_aborted` when `stop` was
    /// requested first (the timer is cancelled; the coroutine resumes on a worker, never inside
    /// `request_stop()`; a stop requested before the co_await resumes at once without a timer);
    /// `errc::closed` when the pool refused the timer (shutdown began) or abandoned it at
    /// `join()` / `stop()` (it then resumes on a worker before the workers stop). A timeout is
    /// this plus a `std::stop_source` shared with the I/O awaitables.
    template <class Rep, class Period>
    detail::sleep_awaitable<thread_pool> sleep_for(std::chrono::duration<Rep, Period> d,
                                                   std::stop_token stop = {}) noexcept {
        return detail::sleep_awaitable<thread_pool>(
            *this, detail::deadline_after<clock>(clock::now(), d), std::move(stop));
    }
    /// As `sleep_for`, until `t` (a `steady_clock` time point of any duration; a time in the
    /// past resumes as soon as a worker is free).
    template <class Duration>
    detail::sleep_awaitable<thread_pool> sleep_until(std::chrono::time_point<clock, Duration> t,
                                                     std::stop_token stop = {}) noexcept {
        return detail::sleep_awaitable<thread_pool>(*this, detail::saturating_time_point(t),
                                                    std::move(stop));
    }

    // --- I/O ---------------------------------------------------------------------------------

    /// Binds `handle` to the pool's port: the completions of overlapped I/O on it run on the
    /// workers, as `operation` completions (`owner` is this pool; `completion::key` is `key`).
    void associate(native_handle_type handle, void* key, std::error_code& ec) noexcept {
        port_.associate(handle, key, ec);
    }
    /// As above. @throws std::system_error
    void associate(native_handle_type handle, void* key = nullptr) { port_.associate(handle, key); }

    /// Queues the completion of `op` with `result` through the port, so that it runs on a
    /// worker — never inside the caller. This is how an initiator reports an operation that
    /// failed (or finished) synchronously. When the port refuses the packet (the kernel is out
    /// of memory), the completion goes to a backlog that the workers drain instead.
    /// A `result` with an error arrives with its error and key but 0 bytes: it travels as the
    /// port's `post_failure`, whose packet has no room for a byte count. Keep the bytes of a
    /// transfer that failed part-way in the operation itself.
    /// Errors: `errc::closed` once the workers have stopped; `std::errc::invalid_argument` for a
    /// null `op`; `std::errc::not_enough_memory` when neither the port nor the backlog can take
    /// it. On any error the operation was not queued and stays the caller's to complete or free.
    void post_completion(operation* op, const completion& result, std::error_code& ec) noexcept {
        if (op == nullptr) {
            ec = std::make_error_code(std::errc::invalid_argument);
            return;
        }
        // TRICKY: the final drain must see every completion posted before the port closes. A
        // post announces itself, then checks the gate; shutdown closes the gate, then waits
        // for announced posts before it drains (seq_cst on both sides: a Dekker pair). The
        // backlog is filled inside the same window, so the drain sees it too.
        gated_post(op, result, ec, [&] {
            std::error_code posted;
            if (result.error)
                port_.post_failure(op, result.key, result.error, posted);
            else
                port_.post(op, result.key, result.bytes, posted);
            return posted;
        });
    }
    /// As above. @throws std::system_error
    void post_completion(operation* op, const completion& result) {
        std::error_code ec;
        post_completion(op, result, ec);
        detail::throw_if(ec, "iocp::thread_pool::post_completion");
    }

    /// How often the pool called into the port (see `thread_pool_stats`).
    thread_pool_stats stats() const noexcept {
        return {wakeups_.load(std::memory_order_relaxed), sleeps_.load(std::memory_order_relaxed),
                port_polls_.load(std::memory_order_relaxed),
                recoveries_.load(std::memory_order_relaxed)};
    }

private:
    // The I/O layer's side of the pool (detail::pool_io_access): in-flight accounting, the
    // registry of objects to cancel at shutdown, and its handlers' exceptions.
    friend struct detail::pool_io_access;
    // The workers' loop (detail/pool/worker_loop.hpp) runs on the pool's parts directly.
    friend class detail::worker_loop<thread_pool>;
    // The shutdown steps (detail/pool/shutdown_sequence.hpp) likewise.
    friend class detail::shutdown_sequence<thread_pool>;

    // Counts an operation as started (call before handing it to the kernel). Returns false
    // once shutdown is cancelling I/O: the caller must then not start it, and completes it
    // with `errc::closed` through `post_completion` instead. Either way, pair it with exactly
    // one `operation_finished()` when its completion has run.
    bool operation_started() noexcept {
        // TRICKY: seq_cst count, then a seq_cst look at the phase, against the shutdown's
        // seq_cst move to cancelling_io and its later idle wait: either this start sees the
        // cancel pass coming (and refuses), or shutdown counts it and waits for it.
        work_.operation_started();
        return !phase_.at_least(phase::cancelling_io);
    }

    // Counts a started operation as finished (after its handler ran or it was destroyed).
    void operation_finished() noexcept { work_.operation_finished(); }

    // The gate of every completion post (post_completion explains it): `deliver()` tries to
    // queue the completion and returns its error; a failure other than `closed` goes to the
    // backlog, where the workers and the final drain find it.
    template <class Deliver>
    void gated_post(operation* op, const completion& result, std::error_code& ec,
                    Deliver&& deliver) noexcept {
        // TRICKY: the Dekker pair with shutdown's final drain (see post_completion).
        completions_posting_.fetch_add(1, std::memory_order_seq_cst);
        if (phase_.at_least(phase::closed)) {
            completions_posting_.fetch_sub(1, std::memory_order_release);
            ec = make_error_code(errc::closed);
            return;
        }
        ec = deliver();
        if (ec && ec != errc::closed && backlog_.push(op, result)) {
            ec.clear();
            wake_one_if_needed(); // after the seq_cst push: the wake protocol's first half
        }
        completions_posting_.fetch_sub(1, std::memory_order_release);
    }

    // As post_completion, but into the pool's own completion queue (the backlog the workers
    // drain), never the port: how the I/O layer delivers a call that succeeded at once on a
    // handle that skips the port on success, without a port call (a port post happens only if
    // every worker sleeps, to wake one). Costs one small allocation (the backlog node) where the
    // port would cost a post and a dequeue. Same gate, same errors.
    void queue_completion(operation* op, const completion& result, std::error_code& ec) noexcept {
        // "Not queued" sends it to the backlog, which clears ec once it holds it.
        gated_post(op, result, ec,
                   [] { return std::make_error_code(std::errc::not_enough_memory); });
    }

#if !IOCP_HAS_IOCP
    // post_completion for a completion the calling thread reaped or caused (Linux I/O): when
    // the caller is a worker of this pool it takes the packet itself on its next look at the
    // port, so the post wakes nobody (posix::port_state::post, `local`). Elsewhere as
    // post_completion.
    void post_completion_local(operation* op, const completion& result,
                               std::error_code& ec) noexcept {
        gated_post(op, result, ec, [&] { return post_local_packet(op, result); });
    }

    std::error_code post_local_packet(operation* op, const completion& result) noexcept {
        detail::posix::port_state* state = port_.native_handle();
        if (state == nullptr)
            return make_error_code(errc::closed);
        if (detail::fault_injection::fail_port_post())
            return std::make_error_code(std::errc::not_enough_memory);
        void* key = detail::erase_key(result.key);
        if (result.error)
            detail::stamp_posted_failure(*op, key, result.error.category());
        return state->post(
            detail::raw_packet{op, key, result.error ? 0 : result.bytes, result.error}, true);
    }
#endif

    // Registers an I/O object to be cancelled at shutdown (detail/pool/io_registry.hpp); one
    // registered after the cancel pass is cancelled at once.
    void add_io_object(detail::io_object_hook& hook) noexcept { io_objects_.add(hook); }

    // Unregisters an I/O object (before it is destroyed).
    void remove_io_object(detail::io_object_hook& hook) noexcept { io_objects_.remove(hook); }

    // Reports an exception to the pool's exception handler (I/O handlers run on the workers).
    void report_exception(std::exception_ptr e) noexcept { handle_exception(std::move(e)); }

    // The key of a wake-up packet (a packet with no OVERLAPPED): recognised by its address.
    // Wake-ups are key-based because several threads post them at once; nothing of ours may be
    // queued twice at once.
    struct wake_tag {
        unsigned char unused = 0;
    };

    using sentinel = detail::worker_sentinels::sentinel;

    using phase = detail::shutdown_phase::phase;

    struct worker_identity {
        thread_pool* pool = nullptr;
        std::size_t index = 0;
    };

    static worker_identity& current() noexcept {
        thread_local worker_identity id;
        return id;
    }

    static thread_pool_options make_options(std::size_t threads) {
        thread_pool_options o;
        o.threads = threads;
        return o;
    }

    static thread_pool_options normalise(thread_pool_options o) {
        using opts = thread_pool_options;
        if (o.threads > opts::max_threads)
            throw std::system_error(std::make_error_code(std::errc::invalid_argument),
                                    "iocp::thread_pool: more threads than max_threads");
        if (o.threads == 0)
            o.threads = (std::min)(std::size_t{(std::max)(1u, std::thread::hardware_concurrency())},
                                   opts::max_threads);
        if (o.concurrency == 0 || o.concurrency > o.threads)
            o.concurrency = static_cast<unsigned>(o.threads); // fits: threads <= max_threads
        o.batch = (std::min)((std::max)(o.batch, std::size_t{1}), opts::max_batch);
        o.queue_capacity = (std::min)((std::max)(o.queue_capacity, opts::min_queue_capacity),
                                      opts::max_queue_capacity);
        o.spin = (std::min)((std::max)(o.spin, std::chrono::microseconds::zero()), opts::max_spin);
        return o;
    }

    template <class F>
    static bool is_null(const F& f) noexcept {
        // Pointers, std::function, std::move_only_function: anything comparable to nullptr.
        // A function passed by name (F a function type, `f` a reference to it) is never null,
        // and comparing it is a warning (GCC's -Wnonnull-compare / -Waddress) in user code.
        if constexpr (!std::is_function_v<F> && requires { f == nullptr; })
            return f == nullptr;
        else
            return false;
    }

    // True on the thread that runs this pool's shutdown(), while it runs it: in user code that
    // shutdown calls there (the destructor of an abandoned timer callable, the exception
    // handler). A join() or stop() from there would wait on shutdown_mutex_, which this thread
    // holds: a deadlock (std::mutex is not recursive), so they refuse instead.
    // TRICKY: relaxed is enough: only this thread ever stores its own id, and its own later
    // store (the reset) is sequenced before anything else it reads; another thread's id never
    // compares equal, stale or not.
    bool in_own_shutdown() const noexcept {
        return shutdown_thread_.load(std::memory_order_relaxed) == std::this_thread::get_id();
    }

    void check_not_worker(const char* what) const {
        if (is_worker())
            throw std::system_error(std::make_error_code(std::errc::resource_deadlock_would_occur),
                                    what);
    }

    // --- the work queue ------------------------------------------------------------------

    // Items ever accepted: the queue's, plus the continuations put into the workers' `next`
    // slots. Monotonic (the accounting of outstanding_work.hpp needs that).
    std::uint64_t accepted() const noexcept { return queue_.pushed() + held_.next_accepted(); }

    // Posts the continuation of a coroutine (`co_await schedule()`). On one of our workers, the
    // item goes into that worker's `next` slot instead of the shared queue: the worker runs it
    // as soon as its current item returns (which, for a coroutine that just suspended, is at
    // once), on the same core, with no shared counter touched. This is Go's `runnext` and
    // Asio's private queue for continuations. Idle workers take a waiting `next` like a held
    // item, so a worker busy with a long item never sits on it. Bounded: after
    // `continuation_streak` continuations in a row, the next goes through the queue, behind
    // the work already waiting (and worker_loop::run counts continuations toward its look at the
    // port). Anywhere else (another thread, the slot taken, shutdown under way) it is an
    // ordinary post.
    template <class F>
    void post_continuation(F&& f, std::error_code& ec) noexcept {
        const worker_identity& me = current();
        if (me.pool != this || phase_.current() != phase::running ||
            !held_.next_available(me.index)) {
            post(std::forward<F>(f), ec);
            return;
        }
        detail::work_item* item = make_item(std::forward<F>(f), ec);
        if (item == nullptr)
            return;
        // TRICKY: shutdown may have begun since the phase was read. The item is counted as
        // accepted all the same (put_next) while whatever posts it is still counted (a work
        // item, an I/O operation's handler) or while shutdown waits for the on_thread_start
        // hooks, so join()/stop() wait for it: this worker (or a thief) runs it, or abandons it
        // under stop(), exactly as a queued item.
        held_.put_next(me.index, item);
        ec.clear();
        wake_one_if_needed(); // after put_next's seq_cst store: the wake protocol's first half
    }

    // --- the post paths behind the public forms -------------------------------------------
    // Each public call has an error_code form (`thrown` null) and a throwing form, which also
    // gets back the exception copying or moving the callable threw.

    template <class F, class R>
    future<R> submit_impl(F&& f, std::error_code& ec, std::exception_ptr* thrown) noexcept {
        if (is_null(f)) {
            ec = std::make_error_code(std::errc::invalid_argument);
            return {};
        }
        try {
            auto* state = detail::future_state<R>::make();
            future<R> result(state);
            // From here each side owns its reference: whatever throws or refuses below, the
            // promise's destructor reports broken_promise and lets go, and so does `result`.
            detail::future_promise<R> promise(state);
            // The closure's move may throw when F's does: make_item catches that (the post
            // is refused with invalid_argument, the exception kept in `thrown`), so nothing
            // escapes this noexcept call. The
            // closure's call is noexcept too: run() catches what fn throws, which clang-tidy
            // does not prove for every F.
            // NOLINTNEXTLINE(bugprone-exception-escape)
            post_impl([promise = std::move(promise),
                       fn = std::forward<F>(f)]() mutable noexcept { promise.run(fn); },
                      ec, thrown);
            if (ec)
                return {};
            return result;
        } catch (const std::bad_alloc&) {
            ec = std::make_error_code(std::errc::not_enough_memory);
        } catch (...) {
            ec = std::make_error_code(std::errc::invalid_argument); // F's copy threw
            if (thrown != nullptr)
                *thrown = std::current_exception();
        }
        return {};
    }

    template <class F>
    void post_impl(F&& f, std::error_code& ec, std::exception_ptr* thrown) noexcept {
        static_assert(std::is_invocable_v<std::decay_t<F>&>,
                      "post needs a callable with no arguments");
        if (is_null(f)) {
            ec = std::make_error_code(std::errc::invalid_argument);
            return;
        }
        detail::work_item* item = make_item(std::forward<F>(f), ec, thrown);
        if (item == nullptr)
            return;
        ec = enqueue(item, false);
        if (ec)
            abandon(item);
    }

    // The throwing overloads' ending: the exception copying or moving the callable threw, if
    // any, else a std::system_error for `ec`, if set.
    static void rethrow_or_throw_if(const std::exception_ptr& thrown, const std::error_code& ec,
                                    const char* what) {
        if (thrown)
            std::rethrow_exception(thrown);
        detail::throw_if(ec, what);
    }

    template <class Duration, class F>
    timer_id post_at_impl(std::chrono::time_point<clock, Duration> when, F&& f, std::error_code& ec,
                          std::exception_ptr* thrown) noexcept {
        static_assert(std::is_invocable_v<std::decay_t<F>&>,
                      "post_at needs a callable with no arguments");
        if (is_null(f)) {
            ec = std::make_error_code(std::errc::invalid_argument);
            return {};
        }
        if (phase_.current() != phase::running) {
            // Refused: `f` is destroyed here, as post() destroys what it refuses (its state
            // released now, an exception from its destructor to the handler on this thread).
            // Returning without taking it left what the caller moved in alive in the caller's
            // variable, and a throwing destructor went to the caller instead of the handler.
            // (`closed` wins over a copy that throws, in both forms: no `thrown` here.)
            if (detail::work_item* refused = make_item(std::forward<F>(f), ec))
                abandon(refused);
            ec = make_error_code(errc::closed);
            return {};
        }
        detail::work_item* item = make_item(std::forward<F>(f), ec, thrown);
        if (item == nullptr)
            return {};
        timer_id id;
        try {
            // The queue owns the item from here on, whatever happens.
            id = timers_.add(detail::saturating_time_point(when), item);
        } catch (const std::system_error& e) {
            ec = e.code();
            return {};
        } catch (...) {
            ec = std::make_error_code(std::errc::not_enough_memory);
            return {};
        }
        if (id.value == 0)
            ec = make_error_code(errc::closed);
        else
            ec.clear();
        return id;
    }

    // A work item holding `f`, or nullptr with `ec` set (no memory, or F's copy or move threw:
    // then its exception goes to `*thrown` when the caller wants it).
    template <class F>
    static detail::work_item* make_item(F&& f, std::error_code& ec,
                                        std::exception_ptr* thrown = nullptr) noexcept {
        try {
            return detail::make_work_item(std::forward<F>(f));
        } catch (const std::bad_alloc&) {
            ec = std::make_error_code(std::errc::not_enough_memory);
        } catch (...) {
            ec = std::make_error_code(std::errc::invalid_argument);
            if (thrown != nullptr)
                *thrown = std::current_exception();
        }
        return nullptr;
    }

    // Takes ownership of `item` on success only.
    std::error_code enqueue(detail::work_item* item, bool internal) noexcept {
        // The queue checks who may post in the same atomic step that claims the item's slot
        // (see work_queue::restrict and work_lanes::restrict): a post is refused, or queued before
        // any drain.
        if (!queue_.push(item, internal || is_worker()))
            return make_error_code(errc::closed);
        wake_one_if_needed(); // after the seq_cst publish: the wake-up protocol's first half
        return {};
    }

    // The producer's half of the wake protocol (detail/pool/wake_protocol.hpp), called after a
    // seq_cst publish: posts the wake-up of the sleeper it claimed, if it claimed one.
    void wake_one_if_needed() noexcept {
        if (!wake_.must_wake())
            return;
        wakeups_.fetch_add(1, std::memory_order_relaxed);
        if (!post_wakeup())
            wake_.wake_failed(); // the sleepers' periodic look makes up for it
    }

    // One wake-up packet; false if the port refused it.
    bool post_wakeup() noexcept {
        std::error_code ec;
        port_.post(nullptr, &wake_tag_, 0, ec);
        return !ec;
    }

    // A worker's sentinel, posted once. A refusal is not retried: the worker sees the exiting phase
    // at its next periodic look instead.
    void post_sentinel(sentinel& s) noexcept {
        std::error_code ec;
        port_.post(&s, nullptr, 0, ec);
    }

    void abandon(detail::work_item* item) noexcept {
        if (std::exception_ptr e = detail::abandon_work_item(item))
            handle_exception(std::move(e));
    }

    // --- workers -------------------------------------------------------------------------

    void worker_main(std::size_t index) noexcept {
        current() = {this, index};
        if (!options_.thread_name.empty()) {
            try {
                detail::set_current_thread_name(worker_name(options_.thread_name, index));
            } catch (...) {
                handle_exception(std::current_exception()); // no memory for the name
            }
        }
        call_hook(options_.on_thread_start, index);
        {
            std::lock_guard lock(start_mutex_);
            ++workers_started_;
        }
        start_cv_.notify_all();
        detail::worker_loop<thread_pool>(*this, index).run();
        call_hook(options_.on_thread_stop, index);
        current() = {};
    }

    // "<name>-<index>". Linux keeps 15 characters of a thread's name (set_current_thread_name
    // cuts the rest): shorten the name, not the index, or workers 1 and 10..19 of a pool
    // named "orders-database-pool" would all be "orders-database".
    static std::string worker_name(const std::string& name, std::size_t index) {
        const std::string number = std::to_string(index);
        std::size_t keep = name.size();
#if defined(__linux__)
        constexpr std::size_t linux_name_max = 15;
        if (keep + 1 + number.size() > linux_name_max)
            keep = linux_name_max - (std::min)(number.size() + 1, linux_name_max);
#endif
        // Appended piece by piece: GCC 12 at -O3 warns (-Wrestrict, wrongly) on
        // "-" + std::to_string(index), which -Werror turns into a failed build.
        std::string out;
        out.append(name, 0, keep);
        out += '-';
        out += number;
        return out;
    }

    void call_hook(const std::function<void(std::size_t)>& hook, std::size_t index) noexcept {
        if (!hook)
            return;
        try {
            hook(index);
        } catch (...) {
            handle_exception(std::current_exception());
        }
    }

    void handle_exception(std::exception_ptr e) noexcept {
        if (options_.exception_handler) {
            options_.exception_handler(std::move(e));
            return;
        }
        try {
            std::rethrow_exception(std::move(e));
        } catch (const std::exception& ex) {
            std::fprintf(stderr, "iocp::thread_pool: a posted task threw: %s\n", ex.what());
        } catch (...) {
            std::fputs("iocp::thread_pool: a posted task threw a non-standard exception\n", stderr);
        }
    }

    // --- idle tracking and shutdown --------------------------------------------------------

    // Waits until no work item is in flight (and, with `with_io`, no operation either): the
    // accounting is detail/pool/outstanding_work.hpp, over the queue's accepted count.
    void wait_until_idle(bool with_io) {
        work_.wait_until_idle(with_io, [this] { return accepted(); });
    }

    // The one shutdown path (detail/pool/shutdown_sequence.hpp): `abandon_queued` distinguishes
    // stop() from join(). Returns the number of work items this call abandoned.
    // NOLINTNEXTLINE(bugprone-exception-escape): as for the destructor.
    std::size_t shutdown(bool abandon_queued) noexcept {
        return detail::shutdown_sequence<thread_pool>(*this).run(abandon_queued);
    }

    const thread_pool_options options_;
    port<> port_;
    detail::worker_sentinels sentinels_; // one per worker, preallocated: shutdown never allocates
    wake_tag wake_tag_;                  // the key of every wake-up packet
    std::vector<std::thread> workers_;
    // Workers whose on_thread_start hook has returned (shutdown waits for all of them).
    std::mutex start_mutex_;
    std::condition_variable start_cv_;
    std::size_t workers_started_ = 0; // guarded by start_mutex_

    // The work items' FIFOs (a lane per posting thread), the shutdown phase and the wake
    // protocol, read on every post.
    detail::work_lanes queue_;
    detail::shutdown_phase phase_;
    [[maybe_unused]] detail::cache_line_pad pad0_{};
    detail::wake_protocol wake_;

    // Outstanding work (wait(), join()), and the claimed items idle workers may take.
    detail::outstanding_work work_;
    detail::held_items held_;
    // The idle spin's length: written by the spinner when it changes, apart from the lines that
    // every post reads.
    [[maybe_unused]] detail::cache_line_pad pad1_{};
    detail::adaptive_spin spin_{options_.spin};

    // I/O objects to cancel at shutdown.
    detail::io_registry io_objects_;
    std::atomic<int> completions_posting_{0}; // post_completion calls under way

    // Completions whose port post failed (post_completion) or that the I/O layer queued
    // (queue_completion), oldest first.
    detail::completion_backlog backlog_;

    std::atomic<std::size_t> abandoned_{0};
    // Port call counts (slow paths only): stats().
    [[maybe_unused]] detail::cache_line_pad pad2_{};
    std::atomic<std::uint64_t> wakeups_{0};
    std::atomic<std::uint64_t> sleeps_{0};
    std::atomic<std::uint64_t> port_polls_{0};
    std::atomic<std::uint64_t> recoveries_{0};
    std::mutex shutdown_mutex_;
    // The thread inside shutdown() (under shutdown_mutex_), or none: in_own_shutdown().
    std::atomic<std::thread::id> shutdown_thread_{};

    detail::timer_queue timers_; // last: its thread calls enqueue, so it goes first
};

namespace detail {

// What the I/O layer (detail/io/) needs of a pool and users must not call: count an operation
// started before it is issued (false once shutdown is cancelling I/O: complete it with
// errc::closed instead) and finished after its completion ran; register the objects shutdown
// cancels; report a handler's exception. detail/io/in_flight.hpp pairs the counts as one RAII
// guard.
struct pool_io_access {
    template <class F>
    static void post_continuation(thread_pool& p, F&& f, std::error_code& ec) noexcept {
        p.post_continuation(std::forward<F>(f), ec);
    }
    static bool operation_started(thread_pool& p) noexcept { return p.operation_started(); }
    static void operation_finished(thread_pool& p) noexcept { p.operation_finished(); }
    static void queue_completion(thread_pool& p, operation* op, const completion& result,
                                 std::error_code& ec) noexcept {
        p.queue_completion(op, result, ec);
    }
    static void add_io_object(thread_pool& p, io_object_hook& h) noexcept { p.add_io_object(h); }
    static void remove_io_object(thread_pool& p, io_object_hook& h) noexcept {
        p.remove_io_object(h);
    }
    static void report_exception(thread_pool& p, std::exception_ptr e) noexcept {
        p.report_exception(std::move(e));
    }
#if !IOCP_HAS_IOCP
    static void post_completion_local(thread_pool& p, operation* op, const completion& result,
                                      std::error_code& ec) noexcept {
        p.post_completion_local(op, result, ec);
    }
    // The I/O backend whose completions the pool's idle workers reap themselves (Linux).
    static void set_completion_poller(thread_pool& p, posix::completion_poller* poller) noexcept {
        if (posix::port_state* state = p.port_.native_handle())
            state->set_poller(poller);
    }
#endif
};

} // namespace detail

} // namespace iocp
