#pragma once
// The awaitables behind `co_await pool.schedule()` and `co_await pool.sleep_for(d)` /
// `sleep_until(t)` (the members are declared in thread_pool.hpp).
//
// They are templates on the pool type only because this header comes before the class: their
// members are instantiated where they are used, once `thread_pool` is complete.
//
// Exactly-once resumption. A suspended coroutine is resumed exactly once on every path:
// - schedule(): by the work item, on a worker (also when the worker runs it before
//   await_suspend has returned on the awaiting thread). A post the pool refuses (`errc::closed`:
//   shutdown began, or `join()` is under way and the caller is not a worker) resumes at once, in
//   the co_await, and throws. A work item `stop()` abandons is posted back as a completion (through
//   the port, counted as in-flight so that shutdown waits for it): the coroutine resumes on a
//   worker and throws `errc::closed`.
// - sleep: by the timer's work item on a worker; a stop request cancels the timer and posts the
//   completion (`errc::operation_aborted`); a timer shutdown abandons is posted the same way
//   (`errc::closed`). A timer that fires before await_suspend has returned leaves the
//   resumption to the awaiting thread: a worker goes on at once, any other thread posts it
//   through the port. Never inside `request_stop()` or inside `join()`/`stop()`, unless the
//   pool has no worker left to take the completion (then on the thread that abandons it, as
//   the last resort: the frame is still resumed once).

#include <atomic>
#include <chrono>
#include <coroutine>
#include <cstdint>
#include <exception>
#include <optional>
#include <stop_token>
#include <system_error>
#include <utility>

#include "../../error.hpp"
#include "../../operation.hpp"
#include "../timer_queue.hpp"
#include "coro_resume.hpp"

namespace iocp::detail {

struct pool_io_access;

// The common part of schedule and sleep: a work item resumes the coroutine; an abandoned one is
// turned into a completion posted through the port (this operation), which resumes it with an
// error on a worker.
template <class Pool, class Access = pool_io_access>
class pool_awaitable_base : public operation {
public:
    pool_awaitable_base(const pool_awaitable_base&) = delete;
    pool_awaitable_base& operator=(const pool_awaitable_base&) = delete;

protected:
    explicit pool_awaitable_base(Pool& pool) noexcept
        : operation(&pool_awaitable_base::on_posted), pool_(&pool) {}
    ~pool_awaitable_base() = default;

    // The callable of the work item: resumes when run, reports abandonment when destroyed unrun.
    // One pointer: it fits a work item's inline storage (no allocation).
    struct resumer {
        pool_awaitable_base* self;
        explicit resumer(pool_awaitable_base* s) noexcept : self(s) {}
        resumer(resumer&& o) noexcept : self(std::exchange(o.self, nullptr)) {}
        resumer(const resumer&) = delete;
        resumer& operator=(const resumer&) = delete;
        resumer& operator=(resumer&&) = delete;
        void operator()() noexcept {
            if (pool_awaitable_base* s = std::exchange(self, nullptr))
                s->finish({});
        }
        ~resumer() {
            if (pool_awaitable_base* s = std::exchange(self, nullptr))
                s->abandoned();
        }
    };

    // Posts the work item with `post(resumer)`, which returns the error of a refused post.
    // TRICKY: a refused post destroys the resumer inside the call, on this thread: that is
    // not an abandonment to deliver (the caller resumes at once with the error). The mark is
    // per thread, so that an abandonment on another thread (a worker in stop(), the timer
    // thread) is never mistaken for the refusal: it cannot happen inside this call.
    template <class Post>
    std::error_code post_resumer(Post&& post) noexcept {
        const void*& mark = refusing_mark();
        mark = this;
        std::error_code ec = post(resumer(this));
        mark = nullptr;
        return ec;
    }

    // The work item ran (on a worker) or its abandonment was delivered: resume with `ec`.
    void finish(std::error_code ec) noexcept {
        ec_ = ec;
        if (!gate_.complete())
            return; // await_suspend is still running: it resumes (and ends the count)
        before_resume();
        Pool* pool = pool_;
        const bool counted = counted_;
        resume_loop(handle_);
        // `this` may be gone (the frame went on and finished): only locals from here.
        if (counted)
            Access::operation_finished(*pool);
    }

    // await_suspend's end (sleep): true to stay suspended; false to go on now, ending the count.
    // TRICKY: the completion may have come first: the timer fired and a worker ran its work
    // item while await_suspend was still arming the stop callback, so the gate left the
    // resumption to this thread. On one of the pool's workers the coroutine goes on here; on
    // any other thread (sync_wait in `main`) that would break the promise to resume on a
    // worker, so the completion is posted again through the port (it is still counted in
    // flight, so shutdown waits for it) and a worker resumes it. The gate has both bits set
    // now: finish() resumes at once. Only with no worker left does it go on here.
    bool suspend_or_resume() noexcept {
        if (gate_.suspend())
            return true;
        if (counted_ && !pool_->is_worker()) {
            std::error_code post_error;
            pool_->post_completion(this, completion{ec_, 0, nullptr}, post_error);
            if (!post_error)
                return true; // `this` may be gone already: touch nothing
        }
        if (counted_)
            Access::operation_finished(*pool_);
        return false;
    }

    // await_suspend's start when nothing is left to do after the post (schedule): the work
    // item resumes the coroutine wherever it runs, even before await_suspend has returned.
    void suspend_before_post() noexcept { (void)gate_.suspend(); }

    // The work item was destroyed unrun (shutdown, or a cancelled timer): deliver the error
    // through the port, so that the coroutine resumes on a worker and not in here.
    void abandoned() noexcept {
        if (refusing_mark() == this)
            return; // refused inside post_resumer(): the caller resumes with the error
        ec_ = abandon_error();
        if (!counted_) {
            // Counted as in flight: shutdown waits for this completion before it stops the
            // workers (sleep counts from its start).
            (void)Access::operation_started(*pool_);
            counted_ = true;
        }
        std::error_code post_error;
        const completion c{ec_, 0, nullptr};
        pool_->post_completion(this, c, post_error);
        if (post_error) // no worker left to take it: resume here, the last resort
            finish(ec_);
    }

    // Why a work item was abandoned (sleep: a stop request, or shutdown).
    virtual std::error_code abandon_error() const noexcept { return make_error_code(errc::closed); }
    // Called before resuming (sleep: deregisters its stop callback).
    virtual void before_resume() noexcept {}

    // The completion posted by abandoned(); in destroy mode (the pool's final drain, which its
    // shutdown rules out for a counted completion) it resumes on the draining thread.
    static void on_posted(void*, operation* base, const completion&) noexcept {
        auto* self = static_cast<pool_awaitable_base*>(base);
        self->finish(self->ec_);
    }

    static const void*& refusing_mark() noexcept {
        thread_local const void* mark = nullptr;
        return mark;
    }

    Pool* pool_;
    std::coroutine_handle<> handle_;
    std::error_code ec_;
    bool counted_ = false; // holds one of the pool's in-flight counts
    resume_gate gate_;
};

/// What `co_await pool.schedule()` awaits (see `thread_pool::schedule`).
template <class Pool, class Access = pool_io_access>
class schedule_awaitable final : public pool_awaitable_base<Pool, Access> {
    using base = pool_awaitable_base<Pool, Access>;

public:
    explicit schedule_awaitable(Pool& pool) noexcept : base(pool) {}

    bool await_ready() const noexcept { return false; }

    bool await_suspend(std::coroutine_handle<> h) noexcept {
        this->handle_ = h;
        // TRICKY: suspended before the post, so the worker that runs the work item resumes
        // the coroutine there, even if it runs before this call returns (a gate deciding at
        // the end would leave that resumption to this thread, which need not be a worker).
        // After a post that succeeded nothing here touches the awaitable. A refused post
        // destroyed the resumer inside the call, unrun (see post_resumer): nothing else
        // resumes, and the coroutine goes on here with the error.
        this->suspend_before_post();
        std::error_code ec = this->post_resumer([this](typename base::resumer r) {
            std::error_code e;
            Access::post_continuation(*this->pool_, std::move(r), e);
            return e;
        });
        if (!ec)
            return true;
        this->ec_ = ec;
        return false;
    }

    /// @throws std::system_error with `errc::closed` if the pool refused or abandoned the work.
    void await_resume() const {
        if (this->ec_)
            throw std::system_error(this->ec_, "iocp::thread_pool::schedule");
    }
};

/// What `co_await pool.sleep_for(d)` / `sleep_until(t)` awaits (see `thread_pool::sleep_for`).
template <class Pool, class Access = pool_io_access>
class sleep_awaitable final : public pool_awaitable_base<Pool, Access> {
    using base = pool_awaitable_base<Pool, Access>;

public:
    sleep_awaitable(Pool& pool, std::chrono::steady_clock::time_point when,
                    std::stop_token token) noexcept
        : base(pool), when_(when), token_(std::move(token)) {}

    bool await_ready() const noexcept { return false; }

    bool await_suspend(std::coroutine_handle<> h) noexcept {
        this->handle_ = h;
        if (token_.stop_requested()) {
            this->ec_ = make_error_code(errc::operation_aborted);
            return false; // nothing started
        }
        this->counted_ = true;
        if (!Access::operation_started(*this->pool_)) {
            this->ec_ = make_error_code(errc::closed); // shutdown is cancelling: refused
            return this->suspend_or_resume_refused();
        }
        std::error_code ec = this->post_resumer([this](typename base::resumer r) {
            std::error_code e;
            id_ = this->pool_->post_at(when_, std::move(r), e);
            return e;
        });
        if (ec) {
            this->ec_ = ec;
            return this->suspend_or_resume_refused();
        }
        // TRICKY: registered after the timer exists (the callback needs its id); the timer may
        // fire meanwhile, and the gate keeps the frame alive until this returns.
        if (token_.stop_possible())
            stop_.arm(token_, &sleep_awaitable::cancel, this); // runs it here if stop came
        return this->suspend_or_resume();
    }

    /// Empty when the time came; `errc::operation_aborted` after a stop request; `errc::closed`
    /// when the pool refused the timer or abandoned it at shutdown.
    std::error_code await_resume() noexcept {
        stop_.disarm();
        return this->ec_;
    }

private:
    // The stop request (at most once, never after disarm() returned).
    static void cancel(void* context) noexcept {
        auto* self = static_cast<sleep_awaitable*>(context);
        self->stop_requested_.store(true, std::memory_order_release);
        // True: the callable is destroyed unrun, here, and abandoned() posts the completion;
        // false: the timer fired already (or is firing). The post cannot fail here (so the
        // coroutine is never resumed inside this call, where disarm() would wait for itself):
        // a pool refuses completions only once its workers have stopped, and its timers were
        // all abandoned before that (cancel() finds nothing then).
        (void)self->pool_->cancel(self->id_);
    }

    bool suspend_or_resume_refused() noexcept {
        this->counted_ = false;
        Access::operation_finished(*this->pool_);
        return false;
    }

    std::error_code abandon_error() const noexcept override {
        return make_error_code(stop_requested_.load(std::memory_order_acquire)
                                   ? errc::operation_aborted
                                   : errc::closed);
    }
    // TRICKY: disarm() waits for a cancel running on another thread, so that the frame
    // outlives it.
    void before_resume() noexcept override { stop_.disarm(); }

    std::chrono::steady_clock::time_point when_;
    std::stop_token token_;
    timer_id id_{};
    std::atomic<bool> stop_requested_{false};
    stop_registration stop_;
};

} // namespace iocp::detail
