#pragma once
// The operation object behind every handler-based call (file::read_at, socket::recv,
// socket::send_all, acceptor::accept, ...): one template, an io_operation-derived record that
// owns the user's handler. One per call, in memory recycled through a small per-thread cache
// (detail::per_thread, the library's one such mechanism), so that steady state (a handler that
// starts the next operation, on a worker) allocates nothing. Over-aligned handlers get memory
// of their alignment.

#include <cstddef>
#include <exception>
#include <new>
#include <system_error>
#include <type_traits>
#include <utility>

#include "../../io_operation.hpp"
#include "../../thread_pool.hpp"
#include "../per_thread.hpp"

namespace iocp::detail::io {

// Two block sizes, from the size of an io_operation on this backend (~100 bytes on Win32; ~500
// on Linux, where it embeds the backend's request: eight iovecs, a msghdr, a sockaddr_storage):
// a small block holds an operation with a handler of up to 20 pointers (160 bytes); a large one
// also a send_all or accept operation's extras (buffer descriptors, addresses: 256 bytes more).
// Bigger operations are plain heap allocations. 16 blocks per size and thread keep a burst of
// operations started and completed on one worker off the heap.
class op_memory {
public:
    static constexpr std::size_t small_block = (sizeof(io_operation) + 160 + 15) / 16 * 16;
    static constexpr std::size_t large_block = small_block + 256;
    static constexpr std::size_t slots = 16;

    // Memory for `n` bytes aligned to `align`. @throws std::bad_alloc
    static void* allocate(std::size_t n, std::size_t align) {
        if (align > __STDCPP_DEFAULT_NEW_ALIGNMENT__)
            return ::operator new (n, std::align_val_t{align}); // the cache's blocks are not
        if (n <= large_block) {
            cache::bin& b = per_thread<cache>().pick(n);
            if (b.count > 0)
                return b.blocks[--b.count];
            return ::operator new(n <= small_block ? small_block : large_block);
        }
        return ::operator new(n);
    }

    // Gives back memory of allocate(n, align).
    static void deallocate(void* p, std::size_t n, std::size_t align) noexcept {
        if (align > __STDCPP_DEFAULT_NEW_ALIGNMENT__) {
            ::operator delete (p, std::align_val_t{align});
            return;
        }
        if (n <= large_block) {
            if (cache* c = local(); c != nullptr) {
                cache::bin& b = c->pick(n);
                if (b.count < slots) {
                    b.blocks[b.count++] = p;
                    return;
                }
            }
        }
        ::operator delete(p);
    }

private:
    struct cache {
        struct bin {
            void* blocks[slots];
            std::size_t count = 0;
        };
        bin small;
        bin large;
        bin& pick(std::size_t n) noexcept { return n <= small_block ? small : large; }
        cache() = default;
        cache(const cache&) = delete;
        cache& operator=(const cache&) = delete;
        ~cache() {
            for (bin* b : {&small, &large})
                while (b->count > 0)
                    ::operator delete(b->blocks[--b->count]);
        }
    };

    // This thread's cache, or nullptr if it cannot be created now (no memory): the block then
    // goes back to the heap.
    static cache* local() noexcept {
        try {
            return &per_thread<cache>();
        } catch (...) {
            return nullptr;
        }
    }
};

// Calls `h` with what it accepts: (error, bytes) or (error).
template <class Handler>
void call_handler(Handler& h, const std::error_code& ec, std::size_t bytes) {
    if constexpr (std::is_invocable_v<Handler&, const std::error_code&, std::size_t>)
        h(ec, bytes);
    else
        h(ec);
}

// What a handler receives besides the error, taken out of the operation before it is freed.
// For reads, writes, receives and sends: the bytes transferred. Operation kinds that hand
// over something else (accept: the connection and the peer) specialise it.
template <class Base>
struct handler_args {
    std::size_t bytes;
    handler_args(Base&, std::size_t n) noexcept : bytes(n) {}
    template <class Handler>
    void call(Handler& h, const std::error_code& ec) {
        call_handler(h, ec, bytes);
    }
};

// `Base` is io_operation or a subclass (send_all_operation, accept_operation); its constructor
// takes the completion function. The handler is moved out and the block freed before the
// handler runs, so that the handler's next operation reuses the block.
template <class Base, class Handler>
class handler_op final : public Base {
public:
    template <class H>
    static handler_op* create(H&& h) {
        void* mem = op_memory::allocate(sizeof(handler_op), alignof(handler_op));
        try {
            return ::new (mem) handler_op(std::forward<H>(h));
        } catch (...) {
            op_memory::deallocate(mem, sizeof(handler_op), alignof(handler_op));
            throw;
        }
    }

    // Frees an operation whose start failed, or that the pool abandons: the handler is
    // destroyed without running.
    static void discard(handler_op* op) noexcept {
        op->~handler_op();
        op_memory::deallocate(op, sizeof(handler_op), alignof(handler_op));
    }

private:
    // Never a copy or a move: the requires-clause excludes handler_op itself (clang-tidy 14's
    // bugprone-forwarding-reference-overload does not read requires-clauses, hence the NOLINT).
    template <class H>
    // NOLINTNEXTLINE(bugprone-forwarding-reference-overload): constrained by the requires-clause
    requires(!std::is_same_v<std::remove_cvref_t<H>, handler_op>) explicit handler_op(H&& h)
        : Base(&handler_op::invoke), handler_(std::forward<H>(h)) {
        this->set_abandon(&handler_op::abandon);
    }

    // A moved-out handler lives on the stack: only handlers of default alignment go there
    // (MinGW-w64 GCC does not align over-aligned stack objects, GCC bug 54412).
    static constexpr bool move_out = std::is_nothrow_move_constructible_v<Handler> &&
                                     alignof(Handler) <= alignof(std::max_align_t);

    static void invoke(io_operation* base, const std::error_code& ec, std::size_t bytes) noexcept {
        auto* self = static_cast<handler_op*>(base);
        thread_pool* pool = self->pool();
        handler_args<Base> args(*self, bytes);
        if constexpr (move_out) {
            Handler h(std::move(self->handler_));
            discard(self);
            run(pool, h, ec, args);
        } else {
            run(pool, self->handler_, ec, args);
            discard(self);
        }
    }

    static void abandon(io_operation* base) noexcept { discard(static_cast<handler_op*>(base)); }

    // A handler's exception goes to the pool's exception handler, never further: completion
    // functions are noexcept and the worker must live on.
    static void run(thread_pool* pool, Handler& h, const std::error_code& ec,
                    handler_args<Base>& args) noexcept {
        try {
            args.call(h, ec);
        } catch (...) {
            detail::pool_io_access::report_exception(*pool, std::current_exception());
        }
    }

    Handler handler_;
};

// Starts a handler operation with `start(op)` (which returns the error of an operation that
// was not started); on such an error the operation is discarded and the error thrown, as
// documented on each handler-based call.
template <class Base, class Handler, class Start>
void start_handler_op(Handler&& handler, const char* what, Start&& start) {
    using op_type = handler_op<Base, std::decay_t<Handler>>;
    op_type* op = op_type::create(std::forward<Handler>(handler));
    if (std::error_code ec = start(*op)) {
        op_type::discard(op);
        throw std::system_error(ec, what);
    }
}

} // namespace iocp::detail::io
