#pragma once
// Counting what the pool does with work items: a ledger of how many ran and how many were
// destroyed without running, and a callable that reports to one. Every item must end in exactly
// one of the two (the shutdown tests of every pool test program check it).

#include <atomic>
#include <utility>

namespace iocp_test {

struct ledger {
    std::atomic<int> ran{0};
    std::atomic<int> abandoned{0};
    int settled() const { return ran.load() + abandoned.load(); }
};

// A callable that reports to a ledger: run once, or abandoned once (destroyed unrun).
class tracked {
public:
    explicit tracked(ledger& l) : ledger_(&l) {}
    tracked(tracked&& other) noexcept : ledger_(std::exchange(other.ledger_, nullptr)) {}
    tracked& operator=(tracked&&) = delete;
    ~tracked() {
        if (ledger_ != nullptr)
            ++ledger_->abandoned;
    }
    void operator()() { ++std::exchange(ledger_, nullptr)->ran; }

private:
    ledger* ledger_;
};

} // namespace iocp_test
