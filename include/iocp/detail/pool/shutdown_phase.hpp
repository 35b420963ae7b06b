#pragma once
// The pool's shutdown as one state machine: a phase that only moves forward, and how the
// shutdown was asked for (join: queued work runs; stop: it is abandoned), in one atomic word.
// Every thread that must react to shutdown (producers, workers, the I/O layer, the completion
// path) reads this word; only the one shutdown call (under the pool's shutdown mutex) writes it.
//
//   running ──join()──▶ draining ──┐
//      │                           ├──▶ cancelling_io ──▶ exiting ──▶ closed ──▶ joined
//      └───stop()──▶ abandoning ───┘
//
// - running:       everything is accepted.
// - draining:      join(): only the pool's workers may post; queued work runs.
// - abandoning:    stop(): nothing is accepted; workers abandon what they pop (from here on).
// - cancelling_io: pending I/O is cancelled; new operations are refused (the I/O layer
//                  completes them with errc::closed) and new I/O objects cancelled at once.
// - exiting:       the sentinels are posted; a worker that sees this phase leaves.
// - closed:        no worker will dequeue again: posted completions are refused.
// - joined:        the workers are joined and the port drained; shutdown is done.

#include <atomic>
#include <cstdint>

namespace iocp::detail {

class shutdown_phase {
public:
    enum class phase : std::uint8_t {
        running,
        draining,
        abandoning,
        cancelling_io,
        exiting,
        closed,
        joined,
    };

    // The current phase. seq_cst: several phases are one side of a Dekker pair (see the pool:
    // operation_started against cancelling_io, post_completion against closed).
    phase current() const noexcept { return phase_of(word_.load(std::memory_order_seq_cst)); }

    // True once stop() began: workers abandon the items they pop instead of running them.
    // Acquire pairs with the release in advance(): what stop() did before is visible.
    bool abandoning() const noexcept {
        return (word_.load(std::memory_order_acquire) & abandon_bit) != 0;
    }

    bool at_least(phase p) const noexcept { return current() >= p; }

    // Moves to `to` if it is later than the current phase; true if it moved. `abandon` (stop)
    // is recorded with the first move out of running and kept from then on. Only the
    // shutdown call writes, but a CAS keeps the word's two halves consistent whoever reads.
    bool advance(phase to, bool abandon = false) noexcept {
        std::uint8_t word = word_.load(std::memory_order_relaxed);
        for (;;) {
            if (phase_of(word) >= to)
                return false;
            auto next =
                static_cast<std::uint8_t>((word & abandon_bit) | static_cast<std::uint8_t>(to));
            if (abandon)
                next |= abandon_bit;
            if (word_.compare_exchange_weak(word, next, std::memory_order_seq_cst,
                                            std::memory_order_relaxed))
                return true;
        }
    }

private:
    static constexpr std::uint8_t abandon_bit = 0x80;
    static constexpr std::uint8_t phase_mask = 0x7f;

    static phase phase_of(std::uint8_t word) noexcept {
        return static_cast<phase>(word & phase_mask);
    }

    std::atomic<std::uint8_t> word_{0};
};

} // namespace iocp::detail
