#include "iocp/error.hpp"

#include <gtest/gtest.h>

#include <cerrno>

TEST(error_test, own_codes_have_readable_messages_and_compare_equal) {
    for (auto e : {iocp::errc::operation_aborted, iocp::errc::eof, iocp::errc::timed_out,
                   iocp::errc::closed, iocp::errc::connection_reset, iocp::errc::connection_refused,
                   iocp::errc::invalid_handle, iocp::errc::connection_aborted}) {
        std::error_code ec = iocp::make_error_code(e);
        EXPECT_EQ(ec, e);
        EXPECT_STREQ(ec.category().name(), "iocp");
        EXPECT_FALSE(ec.message().empty());
        EXPECT_EQ(ec.message().find("unknown"), std::string::npos) << ec.message();
    }
    EXPECT_EQ(iocp::make_error_code(iocp::errc::eof).message(), "end of file");
    EXPECT_NE(iocp::make_error_code(iocp::errc::eof), iocp::errc::closed);
}

TEST(error_test, native_codes_compare_equal_to_portable_conditions) {
#if IOCP_WINDOWS
    auto sys = [](int v) { return std::error_code(v, std::system_category()); };
    EXPECT_EQ(sys(995), iocp::errc::operation_aborted); // ERROR_OPERATION_ABORTED
    EXPECT_EQ(sys(676), iocp::errc::operation_aborted); // ERROR_HANDLES_CLOSED (Wine)
    EXPECT_EQ(sys(38), iocp::errc::eof);                // ERROR_HANDLE_EOF
    EXPECT_EQ(sys(258), iocp::errc::timed_out);         // WAIT_TIMEOUT
    EXPECT_EQ(sys(735), iocp::errc::closed);            // ERROR_ABANDONED_WAIT_0
    EXPECT_EQ(sys(64), iocp::errc::connection_reset);   // ERROR_NETNAME_DELETED
    EXPECT_EQ(sys(10054), iocp::errc::connection_reset);
    EXPECT_EQ(sys(10061), iocp::errc::connection_refused);
    EXPECT_EQ(sys(1225), iocp::errc::connection_refused);
    EXPECT_EQ(sys(6), iocp::errc::invalid_handle);
    EXPECT_NE(sys(995), iocp::errc::eof);
    EXPECT_NE(sys(0), iocp::errc::operation_aborted);
#else
    auto sys = [](int v) { return std::error_code(v, std::system_category()); };
    EXPECT_EQ(sys(ECANCELED), iocp::errc::operation_aborted);
    EXPECT_EQ(sys(ETIMEDOUT), iocp::errc::timed_out);
    EXPECT_EQ(sys(ECONNRESET), iocp::errc::connection_reset);
    EXPECT_EQ(sys(ECONNREFUSED), iocp::errc::connection_refused);
    EXPECT_EQ(sys(EBADF), iocp::errc::invalid_handle);
    EXPECT_NE(sys(EBADF), iocp::errc::eof);
#endif
    EXPECT_EQ(std::make_error_code(std::errc::operation_canceled), iocp::errc::operation_aborted);
    EXPECT_NE(std::make_error_code(std::errc::invalid_argument), iocp::errc::closed);
}

TEST(error_test, throw_if_throws_system_error_with_the_code) {
    EXPECT_NO_THROW(iocp::detail::throw_if({}, "nothing"));
    try {
        iocp::detail::throw_if(iocp::make_error_code(iocp::errc::closed), "iocp::port::post");
        FAIL() << "no exception";
    } catch (const std::system_error& e) {
        EXPECT_EQ(e.code(), iocp::errc::closed);
        EXPECT_NE(std::string(e.what()).find("iocp::port::post"), std::string::npos);
    }
}

// The one error table (detail/win32/error_table.hpp) is plain numbers: its verdicts are checked
// on every platform, one code class at a time.
#include "iocp/detail/win32/error_table.hpp"

TEST(error_test, table_classifies_each_code_class) {
    using iocp::detail::win32::classify_error;
    using kind = iocp::detail::win32::error_kind;
    for (int code : {995, 676, 1235, 10103})
        EXPECT_EQ(classify_error(code).kind, kind::aborted) << code;
    EXPECT_EQ(classify_error(64).kind, kind::closed_or_reset);
    for (int code : {10054, 10052, 232, 233}) // 232, 233: a pipe's other end went away
        EXPECT_EQ(classify_error(code).kind, kind::connection_reset) << code;
    for (int code : {1236, 10053})
        EXPECT_EQ(classify_error(code).kind, kind::connection_aborted) << code;
    for (int code : {38, 109})
        EXPECT_EQ(classify_error(code).kind, kind::eof) << code;
    for (int code : {1225, 10061})
        EXPECT_EQ(classify_error(code).kind, kind::refused) << code;
    for (int code : {258, 1460, 121, 10060})
        EXPECT_EQ(classify_error(code).kind, kind::timed_out) << code;
    EXPECT_EQ(classify_error(735).kind, kind::port_closed);
    for (int code : {6, 10038})
        EXPECT_EQ(classify_error(code).kind, kind::invalid_handle) << code;
    for (int code : {0, 5, 87, 59, 10057, 1450})
        EXPECT_EQ(classify_error(code).kind, kind::unclassified) << code;
}

TEST(error_test, table_says_which_accept_failures_lost_one_connection) {
    using iocp::detail::win32::is_per_connection_error;
    // A client that reset or aborted before the accept, and what Wine reports for it (59).
    for (int code : {64, 10054, 10052, 1236, 10053, 59})
        EXPECT_TRUE(is_per_connection_error(code)) << code;
    // Our own cancel or close, a listener problem, running out of sockets: not skipped.
    for (int code : {995, 676, 10103, 6, 10038, 10022, 10024, 10055, 87, 0})
        EXPECT_FALSE(is_per_connection_error(code)) << code;
}

#if IOCP_WINDOWS
TEST(error_test, portable_conditions_follow_the_table) {
    auto sys = [](int v) { return std::error_code(v, std::system_category()); };
    // A connection aborted by the stack is not our own abort (error.hpp and the I/O layer once
    // disagreed on 1236 and 10053).
    for (int code : {1236, 10053}) {
        EXPECT_EQ(sys(code), iocp::errc::connection_aborted) << code;
        EXPECT_NE(sys(code), iocp::errc::operation_aborted) << code;
    }
    EXPECT_EQ(sys(1235), iocp::errc::operation_aborted);
    EXPECT_EQ(sys(10103), iocp::errc::operation_aborted);
    EXPECT_EQ(sys(10052), iocp::errc::connection_reset);
    EXPECT_EQ(sys(109), iocp::errc::eof);
    EXPECT_EQ(sys(232), iocp::errc::connection_reset); // ERROR_NO_DATA: a write, reader gone
    EXPECT_EQ(sys(10060), iocp::errc::timed_out);
    EXPECT_EQ(sys(10038), iocp::errc::invalid_handle);
    EXPECT_NE(sys(59), iocp::errc::connection_reset);
    EXPECT_EQ(iocp::make_error_code(iocp::errc::connection_aborted).message(),
              "connection aborted by the local network stack");
}
#else
TEST(error_test, portable_conditions_follow_errno) {
    auto sys = [](int v) { return std::error_code(v, std::system_category()); };
    EXPECT_EQ(sys(ECONNABORTED), iocp::errc::connection_aborted);
    EXPECT_NE(sys(ECONNABORTED), iocp::errc::operation_aborted);
}
#endif

#if !IOCP_WINDOWS
#include "iocp/detail/io/linux/errno_table.hpp"

TEST(error_test, linux_io_errors_normalise_by_who_closed_the_handle) {
    using iocp::detail::io::lnx::translate_errno;
    auto sys = [](int v) { return std::error_code(v, std::system_category()); };
    for (int code : {ECONNRESET, EPIPE, ECONNABORTED, EBADF, ENOTSOCK})
        EXPECT_EQ(translate_errno(sys(code), true), iocp::errc::operation_aborted) << code;
    EXPECT_EQ(translate_errno(sys(ECONNRESET), false),
              iocp::make_error_code(iocp::errc::connection_reset));
    EXPECT_EQ(translate_errno(sys(EBADF), false),
              iocp::make_error_code(iocp::errc::invalid_handle));
    EXPECT_EQ(translate_errno(sys(ECANCELED), false),
              iocp::make_error_code(iocp::errc::operation_aborted));
    // The library's own codes pass through whoever closed the handle.
    EXPECT_EQ(translate_errno(iocp::make_error_code(iocp::errc::invalid_handle), true),
              iocp::make_error_code(iocp::errc::invalid_handle));
}
#endif

#if IOCP_HAS_IOCP
#include "iocp/detail/io/io_state.hpp"

TEST(error_test, io_objects_normalise_through_the_same_table) {
    const auto translate_io_error = &iocp::detail::io::win32::translate;
    auto sys = [](int v) { return std::error_code(v, std::system_category()); };
    // Who closed the handle decides ERROR_NETNAME_DELETED and the resets and aborts.
    // A handle we closed under a pending operation (ERROR_INVALID_HANDLE, WSAENOTSOCK) too.
    for (int code : {64, 10054, 10052, 1236, 10053, 6, 10038})
        EXPECT_EQ(translate_io_error(sys(code), true), iocp::errc::operation_aborted) << code;
    EXPECT_EQ(translate_io_error(sys(64), false),
              iocp::make_error_code(iocp::errc::connection_reset));
    EXPECT_EQ(translate_io_error(sys(10054), false),
              iocp::make_error_code(iocp::errc::connection_reset));
    EXPECT_EQ(translate_io_error(sys(1236), false), sys(1236));
    EXPECT_EQ(translate_io_error(sys(676), false),
              iocp::make_error_code(iocp::errc::operation_aborted));
    EXPECT_EQ(translate_io_error(sys(38), false), iocp::make_error_code(iocp::errc::eof));
    EXPECT_EQ(translate_io_error(sys(1225), false),
              iocp::make_error_code(iocp::errc::connection_refused));
    EXPECT_EQ(translate_io_error(sys(6), false), iocp::make_error_code(iocp::errc::invalid_handle));
    EXPECT_EQ(translate_io_error(sys(59), false), sys(59));
    // Whatever the I/O layer reports compares equal to the condition error.hpp gives the code.
    for (int code : {995, 676, 64, 10054, 1236, 10053, 38, 109, 1225, 10061, 6, 10038}) {
        for (auto cond : {iocp::errc::operation_aborted, iocp::errc::connection_reset,
                          iocp::errc::connection_aborted, iocp::errc::eof,
                          iocp::errc::connection_refused, iocp::errc::invalid_handle}) {
            if (sys(code) == cond) {
                EXPECT_EQ(translate_io_error(sys(code), false), cond) << code;
            }
        }
    }
}
#endif
