#pragma once
// The operation object behind each handler-based call (socket::recv, file::read_at, ...): an
// io_operation-derived record that owns the user's handler. One per call, in memory recycled
// through a small per-thread cache, so that steady state (a handler that starts the next
// operation, on a worker) allocates nothing.

#include <cstddef>
#include <exception>
#include <new>
#include <system_error>
#include <type_traits>
#include <utility>

#include "../../io_operation.hpp"
#include "../../thread_pool.hpp"

namespace iocp::detail::win32 {

// Two block sizes: 256 bytes hold an operation (~90 bytes) with a handler of up to ~20
// pointers; 512 hold a send_all operation (its 8 buffer descriptors) with a handler of the same
// size. Bigger operations are plain heap allocations. 16 blocks per size and thread keep a
// burst of operations started and completed on one worker off the heap.
//
// The per-thread cache lives in a fiber-local storage slot, not in a C++ thread_local: with
// MinGW-w64 (emutls over winpthreads) the storage of a thread_local object can be freed before
// its destructor runs at thread exit (measured here: the destructor then reads reused heap
// memory). The FLS callback runs at thread exit on Windows and Wine alike, with the pointer.
class op_memory {
public:
    static constexpr std::size_t small_block = 256;
    static constexpr std::size_t large_block = 512;
    static constexpr std::size_t slots = 16;

    static void* allocate(std::size_t n) {
        if (n <= large_block) {
            if (cache* c = local(); c != nullptr) {
                cache::bin& b = c->pick(n);
                if (b.count > 0)
                    return b.blocks[--b.count];
            }
            return ::operator new(n <= small_block ? small_block : large_block);
        }
        return ::operator new(n);
    }

    static void deallocate(void* p, std::size_t n) noexcept {
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

    static void WINAPI release(void* c) noexcept { delete static_cast<cache*>(c); }

    static DWORD slot() noexcept {
        static const DWORD index = ::FlsAlloc(&op_memory::release);
        return index;
    }

    // This thread's cache, created on first use; nullptr if none can be had (no FLS slot or no
    // memory): the blocks then come from the heap and go back to it.
    static cache* local() noexcept {
        const DWORD index = slot();
        if (index == FLS_OUT_OF_INDEXES)
            return nullptr;
        auto* c = static_cast<cache*>(::FlsGetValue(index));
        if (c == nullptr) {
            c = new (std::nothrow) cache;
            if (c != nullptr && !::FlsSetValue(index, c)) {
                delete c;
                c = nullptr;
            }
        }
        return c;
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

// `Base` is io_operation or a subclass (send_all_operation); its constructor takes the
// completion function. The handler is moved out and the block freed before the handler runs,
// so that the handler's next operation reuses the block.
template <class Base, class Handler>
class handler_op final : public Base {
public:
    static_assert(alignof(Handler) <= __STDCPP_DEFAULT_NEW_ALIGNMENT__,
                  "over-aligned handlers are not supported");

    template <class H>
    static handler_op* create(H&& h) {
        void* mem = op_memory::allocate(sizeof(handler_op));
        try {
            return ::new (mem) handler_op(std::forward<H>(h));
        } catch (...) {
            op_memory::deallocate(mem, sizeof(handler_op));
            throw;
        }
    }

    // Frees an operation whose start failed (the handler is destroyed without running).
    static void discard(handler_op* op) noexcept {
        op->~handler_op();
        op_memory::deallocate(op, sizeof(handler_op));
    }

private:
    template <class H>
    explicit handler_op(H&& h) : Base(&handler_op::invoke), handler_(std::forward<H>(h)) {}

    static void invoke(io_operation* base, const std::error_code& ec, std::size_t bytes) noexcept {
        auto* self = static_cast<handler_op*>(base);
        thread_pool* pool = self->pool();
        if constexpr (std::is_nothrow_move_constructible_v<Handler>) {
            Handler h(std::move(self->handler_));
            discard(self);
            run(pool, h, ec, bytes);
        } else {
            run(pool, self->handler_, ec, bytes);
            discard(self);
        }
    }

    // A handler's exception goes to the pool's exception handler, never further: completion
    // functions are noexcept and the worker must live on.
    static void run(thread_pool* pool, Handler& h, const std::error_code& ec,
                    std::size_t bytes) noexcept {
        try {
            call_handler(h, ec, bytes);
        } catch (...) {
            pool->report_exception(std::current_exception());
        }
    }

    Handler handler_;
};

// Starts a handler operation with `start(op)` (which returns the error of an operation that
// could not even be delivered); on such an error the operation is discarded and the error
// thrown, as documented on each handler-based call.
template <class Base, class Handler, class Start>
void start_handler_op(Handler&& handler, const char* what, Start&& start) {
    using op_type = handler_op<Base, std::decay_t<Handler>>;
    op_type* op = op_type::create(std::forward<Handler>(handler));
    if (std::error_code ec = start(*op)) {
        op_type::discard(op);
        throw std::system_error(ec, what);
    }
}

} // namespace iocp::detail::win32
