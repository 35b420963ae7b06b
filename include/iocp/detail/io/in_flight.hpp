#pragma once
// One operation in flight, as one RAII guard: the pool's count of started I/O (which join()
// and stop() wait on) and a reference on the handle's state (which keeps the state readable
// by the completion even after the owner closed the object). Taken together at the start,
// handed to the operation while the backend has it, and given back together when the
// completion has run (or the operation is abandoned).

#include <utility>

#include "../../thread_pool.hpp"

namespace iocp::detail::io {

struct io_state;
void add_ref(io_state* st) noexcept;
void release(io_state* st) noexcept;

class in_flight {
public:
    // Adopts what an operation held: `pool`'s count (and, if given, a reference on `st`).
    explicit in_flight(thread_pool* pool, io_state* st = nullptr) noexcept
        : pool_(pool), state_(st) {}

    // Takes both for a new start. admitted() is false when the pool's shutdown is cancelling
    // I/O: the start must not be issued (the guard still holds the count, as the pool asks:
    // the refused start completes with errc::closed and is counted finished like any other).
    static in_flight begin(thread_pool& pool, io_state* st) noexcept {
        add_ref(st);
        in_flight g(&pool, st);
        g.admitted_ = pool_io_access::operation_started(pool);
        return g;
    }

    in_flight(in_flight&& o) noexcept
        : pool_(std::exchange(o.pool_, nullptr)), state_(std::exchange(o.state_, nullptr)),
          admitted_(o.admitted_) {}
    in_flight(const in_flight&) = delete;
    in_flight& operator=(const in_flight&) = delete;
    in_flight& operator=(in_flight&&) = delete;
    ~in_flight() { reset(); }

    bool admitted() const noexcept { return admitted_; }

    // The operation holds it now (a completion will adopt it again).
    void hand_over() noexcept {
        pool_ = nullptr;
        state_ = nullptr;
    }

    // Gives both back: the state reference first (it may be the last), then the count (which
    // may let join() return and the pool go away).
    void reset() noexcept {
        release(std::exchange(state_, nullptr));
        if (thread_pool* p = std::exchange(pool_, nullptr))
            pool_io_access::operation_finished(*p);
    }

private:
    thread_pool* pool_;
    io_state* state_;
    bool admitted_ = true;
};

} // namespace iocp::detail::io
