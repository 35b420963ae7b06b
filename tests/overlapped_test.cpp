#include "iocp/overlapped.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <new>
#include <type_traits>

#include "iocp/operation.hpp"
#include "iocp/port.hpp"

using namespace std::chrono_literals;

namespace {

// Classic per-I/O data: an OVERLAPPED member among others, not first.
struct per_io {
    int op_type = 0;
    char buffer[64] = {};
    iocp::overlapped ov{};
    int sequence = 0;
};

// An operation-derived struct, the library's own style.
struct counting_op : iocp::operation {
    explicit counting_op(int* completed, int* destroyed)
        : operation(&counting_op::on_complete), completed_(completed), destroyed_(destroyed) {}

    static void on_complete(void* owner, iocp::operation* base,
                            const iocp::completion& result) noexcept {
        auto* self = static_cast<counting_op*>(base);
        if (owner != nullptr) {
            ++*self->completed_;
            self->last_bytes = result.bytes;
            self->last_error = result.error;
        } else {
            ++*self->destroyed_;
        }
    }

    int* completed_;
    int* destroyed_;
    std::size_t last_bytes = 0;
    std::error_code last_error;
};

} // namespace

TEST(overlapped_test, offset_helpers_round_trip_64_bits) {
    iocp::overlapped ov{};
    iocp::set_offset(ov, 0x1234'5678'9abc'def0ull);
    EXPECT_EQ(ov.Offset, 0x9abc'def0u);
    EXPECT_EQ(ov.OffsetHigh, 0x1234'5678u);
    EXPECT_EQ(iocp::get_offset(ov), 0x1234'5678'9abc'def0ull);
}

TEST(overlapped_test, containing_record_recovers_the_enclosing_struct) {
    per_io io;
    io.sequence = 17;
    iocp::overlapped* p = &io.ov;
    per_io* back = iocp::containing_record<&per_io::ov>(p);
    EXPECT_EQ(back, &io);
    EXPECT_EQ(back->sequence, 17);
    EXPECT_EQ(iocp::containing_record<&per_io::ov>(nullptr), nullptr);
}

TEST(overlapped_test, containing_record_after_a_round_trip_through_the_port) {
    iocp::port<per_io> port;
    per_io io;
    io.op_type = 3;
    port.post(&io.ov, &io, 12);
    auto got = port.get(0ms);
    ASSERT_TRUE(got);
    per_io* back = iocp::containing_record<&per_io::ov>(got->ov);
    EXPECT_EQ(back, &io);
    EXPECT_EQ(back->op_type, 3);
    EXPECT_EQ(got->key, &io);
}

TEST(overlapped_test, operation_is_recovered_from_a_dequeued_overlapped_and_completes) {
    int completed = 0;
    int destroyed = 0;
    counting_op op(&completed, &destroyed);
    iocp::port<> port;
    port.post(&op, nullptr, 99);
    auto got = port.get(0ms);
    ASSERT_TRUE(got);
    iocp::operation* recovered = iocp::operation::from(got->ov);
    EXPECT_EQ(recovered, &op);
    int owner = 0;
    recovered->complete(&owner, iocp::completion{got->error, got->bytes, got->key});
    EXPECT_EQ(completed, 1);
    EXPECT_EQ(destroyed, 0);
    EXPECT_EQ(op.last_bytes, 99u);
    EXPECT_FALSE(op.last_error);
    EXPECT_EQ(iocp::operation::from(nullptr), nullptr);
}

TEST(overlapped_test, operation_destroy_mode_does_not_run_the_handler) {
    int completed = 0;
    int destroyed = 0;
    counting_op op(&completed, &destroyed);
    op.destroy();
    EXPECT_EQ(completed, 0);
    EXPECT_EQ(destroyed, 1);
}

TEST(overlapped_test, reset_overlapped_clears_status_and_offset) {
    int completed = 0;
    int destroyed = 0;
    counting_op op(&completed, &destroyed);
    op.Internal = 5;
    iocp::set_offset(op, 77);
    op.reset_overlapped();
    EXPECT_EQ(op.Internal, 0u);
    EXPECT_EQ(iocp::get_offset(op), 0u);
}

// --- code written the Win32 way (issue 8 item 7) --------------------------------------------

namespace {

// The classic OVERLAPPEDPLUS: the OVERLAPPED first, then the per-I/O fields, reset with memset
// before each reuse.
struct overlapped_plus {
    iocp::overlapped ol;
    int op_code;
    char buffer[32];
    std::size_t bytes;
};

struct per_handle {
    int socket_id = 0;
};

} // namespace

TEST(overlapped_test, overlapped_is_trivial_and_memset_zeroes_it_as_on_windows) {
    static_assert(std::is_trivial_v<iocp::overlapped>);
    static_assert(std::is_trivially_copyable_v<overlapped_plus>);
    overlapped_plus plus;
    std::memset(&plus, 0x5A, sizeof plus);
    // The classic line: warning-free on every backend because the type is trivial (on POSIX it
    // once drew -Wclass-memaccess, an error under -Werror).
    std::memset(&plus.ol, 0, sizeof(iocp::overlapped));
    EXPECT_EQ(plus.ol.Internal, 0u);
    EXPECT_EQ(plus.ol.InternalHigh, 0u);
    EXPECT_EQ(iocp::get_offset(plus.ol), 0u);
    EXPECT_EQ(plus.ol.hEvent, nullptr);
    iocp::overlapped value_initialised{};
    EXPECT_EQ(std::memcmp(&plus.ol, &value_initialised, sizeof(iocp::overlapped)), 0);
}

TEST(overlapped_test, classic_overlapped_plus_reused_after_memset_round_trips) {
    iocp::port<per_handle> port;
    per_handle handle{9};
    overlapped_plus plus;
    for (int op = 0; op < 3; ++op) {
        std::memset(&plus.ol, 0, sizeof(iocp::overlapped));
        plus.op_code = op;
        plus.bytes = 10u + static_cast<std::size_t>(op);
        port.post(&plus.ol, &handle, plus.bytes);
        auto got = port.get(iocp::infinite);
        ASSERT_TRUE(got);
        overlapped_plus* back = iocp::containing_record<&overlapped_plus::ol>(got->ov);
        ASSERT_EQ(back, &plus);
        EXPECT_EQ(back->op_code, op);
        EXPECT_EQ(got->bytes, back->bytes);
        EXPECT_EQ(got->key, &handle);
        EXPECT_EQ(got->key->socket_id, 9);
        EXPECT_FALSE(got->error);
    }
}

TEST(overlapped_test, operation_zeroes_its_overlapped_fields_although_overlapped_is_trivial) {
    int completed = 0;
    int destroyed = 0;
    alignas(counting_op) unsigned char storage[sizeof(counting_op)];
    std::memset(storage, 0xA5, sizeof storage); // what an uninitialised OVERLAPPED may hold
    auto* op = ::new (storage) counting_op(&completed, &destroyed);
    EXPECT_EQ(op->Internal, 0u);
    EXPECT_EQ(op->InternalHigh, 0u);
    EXPECT_EQ(iocp::get_offset(*op), 0u);
    EXPECT_EQ(op->hEvent, nullptr);
    op->~counting_op();
}
