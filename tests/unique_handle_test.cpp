#include "iocp/unique_handle.hpp"

#include <gtest/gtest.h>

#include <utility>

#include "iocp/error.hpp"
#include "support/platform.hpp"

#if !IOCP_WINDOWS
#include <fcntl.h>
#include <unistd.h>
#endif

namespace {

using native = iocp::unique_handle::native_type;

// Two fresh handles (a pipe's ends) owned by the caller.
std::pair<native, native> make_pipe() {
#if IOCP_WINDOWS
    HANDLE r = nullptr;
    HANDLE w = nullptr;
    EXPECT_TRUE(::CreatePipe(&r, &w, nullptr, 0));
    return {r, w};
#else
    int fds[2] = {-1, -1};
    EXPECT_EQ(::pipe(fds), 0);
    return {fds[0], fds[1]};
#endif
}

bool is_open(native h) {
#if IOCP_WINDOWS
    DWORD flags = 0;
    return ::GetHandleInformation(h, &flags) != FALSE;
#else
    return ::fcntl(h, F_GETFD) != -1;
#endif
}

void close_raw(native h) {
#if IOCP_WINDOWS
    ::CloseHandle(h);
#else
    ::close(h);
#endif
}

} // namespace

TEST(unique_handle_test, default_constructed_is_empty) {
    iocp::unique_handle h;
    EXPECT_FALSE(h);
    std::error_code ec;
    h.close(ec); // closing an empty handle is fine
    EXPECT_FALSE(ec);
}

TEST(unique_handle_test, destructor_closes) {
    auto [r, w] = make_pipe();
    {
        iocp::unique_handle a(r);
        iocp::unique_handle b(w);
        EXPECT_TRUE(a);
        EXPECT_TRUE(is_open(r));
    }
    EXPECT_FALSE(is_open(r));
    EXPECT_FALSE(is_open(w));
}

TEST(unique_handle_test, move_constructor_transfers_ownership) {
    auto [r, w] = make_pipe();
    iocp::unique_handle wh(w);
    iocp::unique_handle a(r);
    iocp::unique_handle b(std::move(a));
    EXPECT_FALSE(a); // NOLINT(bugprone-use-after-move)
    EXPECT_TRUE(b);
    EXPECT_EQ(b.get(), r);
    EXPECT_TRUE(is_open(r));
}

TEST(unique_handle_test, move_assignment_closes_the_old_handle) {
    auto [r, w] = make_pipe();
    iocp::unique_handle a(r);
    iocp::unique_handle b(w);
    a = std::move(b);
    EXPECT_FALSE(is_open(r)) << "the handle a held before must be closed";
    EXPECT_EQ(a.get(), w);
    EXPECT_TRUE(is_open(w));
    EXPECT_FALSE(b); // NOLINT(bugprone-use-after-move)
}

TEST(unique_handle_test, release_gives_up_ownership_and_reset_closes) {
    auto [r, w] = make_pipe();
    iocp::unique_handle a(r);
    native raw = a.release();
    EXPECT_FALSE(a);
    EXPECT_TRUE(is_open(raw));
    a.reset(raw);
    EXPECT_TRUE(a);
    a.reset(w);
    EXPECT_FALSE(is_open(r));
    a.reset();
    EXPECT_FALSE(is_open(w));
}

TEST(unique_handle_test, close_reports_the_os_error_and_empties_the_object) {
    auto [r, w] = make_pipe();
    iocp::unique_handle keep(w);
    close_raw(r); // closed behind the wrapper's back: the wrapper's close must fail
    iocp::unique_handle stale(r);
    std::error_code ec;
    stale.close(ec);
    EXPECT_EQ(ec, iocp::errc::invalid_handle) << ec.message();
    EXPECT_FALSE(stale);

    close_raw(keep.release());
    iocp::unique_handle stale2(w);
    EXPECT_THROW(stale2.close(), std::system_error);
    EXPECT_FALSE(stale2);
}
