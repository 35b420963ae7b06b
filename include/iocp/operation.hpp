#pragma once
/// @file
/// `iocp::operation`: the per-I/O record. It derives from `overlapped`, so the `OVERLAPPED*`
/// a port hands back is turned into the operation by a cast, and it completes through a plain
/// `noexcept` function pointer (no virtual table, no allocation).

#include <cstddef>
#include <system_error>

#include "overlapped.hpp"

namespace iocp {

/// What a completion packet says about its operation.
struct completion {
    std::error_code error; ///< empty on success; the I/O's own error otherwise
    std::size_t bytes = 0; ///< bytes transferred
    void* key = nullptr;   ///< the completion key of the handle (or of the post)
};

/// Base of every asynchronous operation.
///
/// Completion contract: `complete(owner, result)` is called exactly once for every started
/// operation — with the result — or `destroy()` is called instead when the owner abandons
/// it (shutdown). Both go through the same function pointer; `owner == nullptr` means
/// "destroy: free yourself without running the handler". The function typically ends by
/// deleting or recycling the operation, so the caller must not touch it afterwards.
///
/// @code
/// struct my_op : iocp::operation {
///     my_op() : operation(&my_op::on_complete) {}
///     static void on_complete(void* owner, iocp::operation* base,
///                             const iocp::completion& c) noexcept {
///         auto* self = static_cast<my_op*>(base);
///         if (owner) { /* use c.error, c.bytes */ }
///         delete self;
///     }
/// };
/// @endcode
class operation : public overlapped {
public:
    /// The completion function. `owner` is the pool (or whatever dequeued the packet), or
    /// nullptr in destroy mode; `self` is the operation.
    using complete_fn = void (*)(void* owner, operation* self, const completion& result) noexcept;

    /// Runs the completion. `owner` must not be nullptr (use `destroy()` for that).
    void complete(void* owner, const completion& result) noexcept { fn_(owner, this, result); }

    /// Abandons the operation: the completion function frees it without running the handler.
    void destroy() noexcept { fn_(nullptr, this, completion{}); }

    /// The operation that contains `ov` (nullptr for nullptr). `ov` must be the `overlapped`
    /// base of an operation, as every packet the library posts or starts is.
    static operation* from(overlapped* ov) noexcept { return static_cast<operation*>(ov); }

    /// Clears the `overlapped` fields (status, bytes, offset, event) before the operation is
    /// started again; the offset must be set after this.
    void reset_overlapped() noexcept { static_cast<overlapped&>(*this) = overlapped{}; }

    /// Intrusive link for queues of operations (no allocation to queue one).
    operation* next_ = nullptr;

    // Copying an operation that may be in flight makes no sense; derived types decide on moves.
    operation(const operation&) = delete;
    operation& operator=(const operation&) = delete;

protected:
    /// Derived types pass their completion function.
    explicit operation(complete_fn fn) noexcept : overlapped{}, fn_(fn) {}

    // Not virtual: operations are destroyed by their own completion function, which knows the
    // complete type.
    ~operation() = default;

private:
    complete_fn fn_;
};

} // namespace iocp
