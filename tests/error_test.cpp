#include "iocp/error.hpp"

#include <gtest/gtest.h>

#include <cerrno>

TEST(error_test, own_codes_have_readable_messages_and_compare_equal) {
    for (auto e : {iocp::errc::operation_aborted, iocp::errc::eof, iocp::errc::timed_out,
                   iocp::errc::closed, iocp::errc::connection_reset, iocp::errc::connection_refused,
                   iocp::errc::invalid_handle}) {
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
