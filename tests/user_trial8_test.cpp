// An eighth set of programs a user might write, this time as a "the docs are true" audit of the
// I/O part: every scenario takes one sentence a user would rely on, from README.md's files and
// sockets sections or from a public header's doc comment, that no other test checked, and
// checks it as written (error codes for bad input, what close/cancel/open do to pending
// operations, what endpoints parse, buffer and datagram limits, file modes). Each handler is
// counted: it must run exactly once.
//
// Scenarios and the sentences they check:
//  1. file.hpp, start_read_at: "a read of 0 bytes is never eof: it completes with 0 bytes",
//     also at the end of the file and past it (where a non-empty read is eof).
//  2. file.hpp, file_mode: "create: create the file if it does not exist", "truncate: empty
//     the file if it exists"; file(): "@throws std::system_error naming the path:
//     ERROR_FILE_NOT_FOUND ... (== std::errc::no_such_file_or_directory)".
//  3. file.hpp, close(): "The file keeps its pool and can be opened again."
//  4. README, "Which backend does the I/O": "The descriptors are close-on-exec." (Linux): a
//     file, a socket opened by connect, an acceptor, an accepted socket, a datagram socket.
//  5. socket.hpp, recv: "A receive into 0 bytes completes at once with 0 bytes (... it is not
//     eof)" after the peer closed; start_recv: "errc::invalid_handle if the socket is not open",
//     also for a receive into 0 bytes.
//  6. socket.hpp, close(): "The socket keeps its pool and can be opened again"; connect: "A
//     closed socket is opened for `peer`'s family" (IPv6 after IPv4).
//  7. socket.hpp, connect: "an unbound one bound to the wildcard address first" (a bound one
//     keeps its address); remote_endpoint: "the system's (WSAENOTCONN when not connected)".
//  8. socket.hpp, open(): "A socket that was open is closed first", and closing "cancels its
//     pending operations ... each completes exactly once ... with errc::operation_aborted".
//  9. acceptor.hpp, open(): "An acceptor that was open is closed first" (its pending accept
//     aborted once), and it listens on the new address.
// 10. acceptor.hpp, cancel(): "Cancels pending accepts (they complete with
//     errc::operation_aborted); the acceptor keeps listening."
// 11. acceptor.hpp, open(): "std::errc::invalid_argument without a pool or for an unspecified
//     endpoint"; local_endpoint()/cancel(): "errc::invalid_handle when closed"; start_accept:
//     "@returns ... std::errc::invalid_argument (no pool)", op not completed.
// 12. acceptor.hpp, accept_operation::take_socket: "Later calls (and calls after a failure)
//     return a closed socket"; local_endpoint(): "the local address of the connection".
// 13. datagram_socket.hpp, bind()/connect(): "std::errc::invalid_argument for an unspecified
//     endpoint"; bind: "Errors: the system's (WSAEADDRINUSE / EADDRINUSE...)".
// 14. datagram_socket.hpp, connect(): "Opens a closed socket for `peer`'s family"; send_to:
//     "opening a closed socket for its family; an unbound socket gets an ephemeral port".
// 15. datagram_socket.hpp, start_send: "On a socket that is not connected: the system's error
//     in the completion (WSAENOTCONN, EDESTADDRREQ)".
// 16. datagram_socket.hpp, connect(): "Connecting again changes the peer." (and the kernel
//     then delivers only the new peer's datagrams).
// 17. datagram_socket.hpp, recv_from_operation::sender(): "after any other error, the
//     unspecified endpoint", for an operation reused after a successful receive.
// 18. datagram_socket.hpp, max_datagram_size: "65527 for IPv6": that many bytes go through
//     ::1 whole, one more is refused with std::errc::message_size.
// 19. endpoint.hpp, endpoint: "An IPv4 or IPv6 socket address (address, port, and for IPv6 the
//     scope id)"; parse: "Parses a numeric IPv4 ... or IPv6 ... address"; operator== compares
//     the scope id, so the text forms must show it (a link-local "fe80::1%2").
// 20. io_operation.hpp, pool(): "nullptr before its first start"; contract: "a start that
//     returns an error started nothing and calls nothing".
// 21. socket.hpp, start_send_all: "the descriptors are copied into `op`": the caller's array
//     may be reused at once.
// 22. socket.hpp, connect: "Errors in the handler: ... the system's", bind: "Errors: the
//     system's"; README: "the same API and the same rules on every backend". An unspecified
//     endpoint (what a failed query returns) is refused by datagram_socket's bind/connect/
//     send_to and acceptor::open with std::errc::invalid_argument; a TCP socket's connect and
//     bind must refuse it too, not "connect" to it (Linux reads AF_UNSPEC in connect(2) as
//     "dissolve the association" and returns 0).
// 23. datagram_socket.hpp, start_send: "the limit is that of the socket's family": 65507
//     bytes go through a connected IPv4 socket, 65508 are refused with message_size.
// 24. socket.hpp, set_linger: "Errors: errc::invalid_handle when closed"; the option setters of
//     a closed socket (set_no_delay, ...) fail the same way; skip_completion_port_on_success:
//     "errc::invalid_handle when closed".
// 25. buffer.hpp, buffer(Range): "The bytes of a contiguous range of trivially copyable
//     elements": size in bytes, const ranges give a const_buffer; buffer_size: "Total size".
// 26. file.hpp, file_mode: "truncate: empty the file if it exists", README: "the same API and
//     the same rules on every backend". Linux's open(2) emptied a file opened for reading only
//     (O_RDONLY | O_TRUNC, "unspecified" in POSIX), and so did Wine 8's CreateFileW (measured:
//     TRUNCATE_EXISTING with GENERIC_READ), while Microsoft's CreateFileW documentation requires
//     GENERIC_WRITE for it: a mode that destroys a file its caller asked only to read. Now
//     refused on every backend with std::errc::invalid_argument.
// 27. acceptor.hpp / datagram_socket.hpp / file.hpp move constructors: "Takes over `other`'s
//     socket, pool and pending accepts" (operations): a pending accept or receive moved with
//     its object completes through the new one, and an operation started on the moved-from
//     object completes once with errc::invalid_handle (the start_* contract: "errc::
//     invalid_handle if the socket is not open").
// 28. endpoint.hpp, parse: "Parses a numeric IPv4 ("127.0.0.1") ... address" (dotted decimal,
//     inet_pton's form), the same text on every system: the older inet_aton forms, whose
//     numbers are octal with a leading 0 or hex with 0x ("010.0.0.1" is 8.0.0.1 there, 10.0.0.1
//     to a reader), or with fewer parts ("127.1"), are refused rather than read one way on one
//     system and another way, or not at all, on the other.
// 29. file.hpp, assign(): "On failure `handle` is closed." (Linux: a socket given to a file
//     is refused with ESPIPE, and its descriptor closed: the peer's send then fails.)
// 30. file.hpp, open(): "Sharing: others may read, write and delete the file meanwhile."
// 31. datagram_socket.hpp, cancel(): "The socket stays open; a datagram that arrives after the
//     cancel waits for the next receive" (started after the datagram arrived).

#include "iocp/config.hpp"

#include <gtest/gtest.h>

#if IOCP_HAS_IO

#include <algorithm>
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <memory>
#include <span>
#include <string>
#include <system_error>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "iocp/acceptor.hpp"
#include "iocp/buffer.hpp"
#include "iocp/datagram_socket.hpp"
#include "iocp/endpoint.hpp"
#include "iocp/error.hpp"
#include "iocp/file.hpp"
#include "iocp/io_operation.hpp"
#include "iocp/socket.hpp"
#include "iocp/thread_pool.hpp"
#include "support/completion.hpp"
#include "support/platform.hpp"
#include "support/socket_pair.hpp"
#include "support/temp_path.hpp"
#include "support/waiting.hpp"

#if !IOCP_WINDOWS
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>
#endif

namespace {

using iocp::address_family;
using iocp_test::await;
using iocp_test::wait_until;

using iocp_test::completion;
using iocp_test::outcome;

// An accept's result.
struct accepted {
    std::error_code ec;
    iocp::socket conn;
};

std::filesystem::path temp_path(const char* name) {
    return iocp_test::temp_path("user_trial8", name);
}

// The test's pool, on the heap: libstdc++'s std::mutex has a trivial destructor, so
// ThreadSanitizer never sees a pool's mutexes die, and a pool on the stack of the next test,
// at an address that overlaps the last one's, joins their lock orders into a cycle that no pool
// has (a false "lock-order-inversion" among shutdown, timer and hook mutexes of three pools).
// Freed heap memory has its mutexes forgotten.
std::unique_ptr<iocp::thread_pool> make_pool() { return std::make_unique<iocp::thread_pool>(2); }

// Removes the file when the test ends.
struct temp_file {
    explicit temp_file(const char* name) : path(temp_path(name)) {
        std::error_code ec;
        std::filesystem::remove(path, ec);
    }
    temp_file(const temp_file&) = delete;
    temp_file& operator=(const temp_file&) = delete;
    ~temp_file() {
        std::error_code ec;
        std::filesystem::remove(path, ec);
    }
    std::filesystem::path path;
};

outcome read_at(iocp::file& f, std::uint64_t offset, void* data, std::size_t n) {
    completion c;
    f.read_at(offset, iocp::buffer(data, n), c.handler());
    outcome o = c.get("a file read");
    EXPECT_EQ(c.calls(), 1);
    return o;
}

outcome write_at(iocp::file& f, std::uint64_t offset, const void* data, std::size_t n) {
    completion c;
    f.write_at(offset, iocp::buffer(data, n), c.handler());
    outcome o = c.get("a file write");
    EXPECT_EQ(c.calls(), 1);
    return o;
}

// Whether `ec` is `condition`: on Win32 the library passes Winsock's own code through (the
// documented "system's" error), which MinGW's system_category does not map to the conditions.
bool is(const std::error_code& ec, std::errc condition, int winsock_value) {
    if (ec == condition)
        return true;
    return IOCP_WINDOWS && ec.category() == std::system_category() && ec.value() == winsock_value;
}

// A user operation (an io_operation, recv_from_operation or send_all_operation) that counts its
// completions and keeps the last result.
template <class Operation>
struct counted : Operation {
    counted() : Operation(&counted::done) {}
    static void done(iocp::io_operation* base, const std::error_code& ec,
                     std::size_t bytes) noexcept {
        auto* self = static_cast<counted*>(base);
        self->last = ec;
        self->bytes = bytes;
        self->completions.fetch_add(1);
    }
    std::error_code last;
    std::size_t bytes = 0;
    std::atomic<int> completions{0};
};
using counted_op = counted<iocp::io_operation>;

// --- files ---------------------------------------------------------------------------------

// 1. file.hpp: "a read of 0 bytes is never eof: it completes with 0 bytes".
TEST(user_trial8, a_0_byte_file_read_at_or_past_the_end_is_0_bytes_not_eof) {
    auto owned_pool = make_pool();
    iocp::thread_pool& pool = *owned_pool;
    temp_file tmp("zero_read.bin");
    iocp::file f(pool, tmp.path, iocp::file_mode::read_write | iocp::file_mode::create);
    ASSERT_FALSE(write_at(f, 0, "0123456789", 10).ec);
    char buf[4] = {};
    for (const std::uint64_t offset :
         {std::uint64_t{0}, std::uint64_t{5}, std::uint64_t{10}, std::uint64_t{1} << 20}) {
        const outcome o = read_at(f, offset, buf, 0);
        EXPECT_FALSE(o.ec) << "offset " << offset << ": " << o.ec.message();
        EXPECT_EQ(o.bytes, 0u) << "offset " << offset;
        // The same offset with a buffer: eof at and past the end, as documented.
        const outcome full = read_at(f, offset, buf, sizeof buf);
        if (offset >= 10)
            EXPECT_EQ(full.ec, iocp::errc::eof) << "offset " << offset;
        else
            EXPECT_FALSE(full.ec) << "offset " << offset;
    }
    // The same through the start function and a user operation.
    counted_op op;
    ASSERT_FALSE(iocp::start_read_at(f, op, 1u << 20, iocp::buffer(buf, 0)));
    wait_until([&] { return op.completions.load() == 1; }, "the 0-byte start_read_at");
    EXPECT_FALSE(op.last) << op.last.message();
    EXPECT_EQ(op.bytes, 0u);
    pool.join();
    EXPECT_EQ(op.completions.load(), 1);
}

// 2. file.hpp file_mode: create keeps an existing file's bytes, truncate empties it; a missing
// file without create is no_such_file_or_directory, and the exception names the path.
TEST(user_trial8, file_modes_create_truncate_and_a_missing_file_do_what_they_say) {
    auto owned_pool = make_pool();
    iocp::thread_pool& pool = *owned_pool;
    temp_file tmp("modes.bin");
    {
        // No create: a missing file is refused, naming the path.
        try {
            iocp::file f(pool, tmp.path, iocp::file_mode::write);
            ADD_FAILURE() << "opened a missing file without create";
        } catch (const std::system_error& e) {
            EXPECT_EQ(e.code(), std::errc::no_such_file_or_directory) << e.code().message();
            EXPECT_NE(std::string(e.what()).find(tmp.path.filename().string()), std::string::npos)
                << e.what();
        }
        EXPECT_FALSE(std::filesystem::exists(tmp.path));
    }
    {
        iocp::file f(pool, tmp.path, iocp::file_mode::write | iocp::file_mode::create);
        ASSERT_FALSE(write_at(f, 0, "abcdef", 6).ec);
    }
    {
        // create on an existing file: opens it as it is.
        iocp::file f(pool, tmp.path, iocp::file_mode::read_write | iocp::file_mode::create);
        EXPECT_EQ(f.size(), 6u);
        char buf[6] = {};
        const outcome o = read_at(f, 0, buf, sizeof buf);
        EXPECT_FALSE(o.ec);
        EXPECT_EQ(std::string(buf, o.bytes), "abcdef");
    }
    {
        // read alone on an existing file: opens, keeps the bytes.
        iocp::file f(pool, tmp.path, iocp::file_mode::read);
        EXPECT_EQ(f.size(), 6u);
    }
    {
        // truncate (without create) on an existing file: emptied.
        iocp::file f(pool, tmp.path, iocp::file_mode::write | iocp::file_mode::truncate);
        EXPECT_EQ(f.size(), 0u);
    }
    EXPECT_EQ(std::filesystem::file_size(tmp.path), 0u);
}

// 3. file.hpp close(): "The file keeps its pool and can be opened again."
TEST(user_trial8, a_closed_file_keeps_its_pool_and_opens_again) {
    auto owned_pool = make_pool();
    iocp::thread_pool& pool = *owned_pool;
    temp_file a("reopen_a.bin");
    temp_file b("reopen_b.bin");
    iocp::file f(pool, a.path, iocp::file_mode::read_write | iocp::file_mode::create);
    ASSERT_FALSE(write_at(f, 0, "first", 5).ec);
    f.close();
    EXPECT_FALSE(f.is_open());
    EXPECT_EQ(f.pool(), &pool);
    char buf[8] = {};
    EXPECT_EQ(read_at(f, 0, buf, sizeof buf).ec, iocp::errc::invalid_handle);
    f.open(b.path, iocp::file_mode::read_write | iocp::file_mode::create);
    ASSERT_TRUE(f.is_open());
    ASSERT_FALSE(write_at(f, 0, "second", 6).ec);
    const outcome o = read_at(f, 0, buf, sizeof buf);
    EXPECT_FALSE(o.ec);
    EXPECT_EQ(std::string(buf, o.bytes), "second");
    // Opening an open file closes it first and takes the new one.
    f.open(a.path, iocp::file_mode::read);
    const outcome first = read_at(f, 0, buf, sizeof buf);
    EXPECT_EQ(std::string(buf, first.bytes), "first");
}

// 4. README: "The descriptors are close-on-exec."
TEST(user_trial8, every_descriptor_the_library_opens_is_close_on_exec) {
#if IOCP_WINDOWS
    GTEST_SKIP() << "FD_CLOEXEC is a Linux descriptor flag";
#else
    auto cloexec = [](int fd) {
        const int flags = ::fcntl(fd, F_GETFD);
        return flags >= 0 && (flags & FD_CLOEXEC) != 0;
    };
    auto owned_pool = make_pool();
    iocp::thread_pool& pool = *owned_pool;
    temp_file tmp("cloexec.bin");
    iocp::file f(pool, tmp.path, iocp::file_mode::write | iocp::file_mode::create);
    EXPECT_TRUE(cloexec(f.native_handle()));

    iocp::acceptor listener(pool, iocp::endpoint::loopback(address_family::ipv4, 0));
    EXPECT_TRUE(cloexec(static_cast<int>(listener.native_handle())));
    std::promise<accepted> got;
    listener.accept([&](std::error_code ec, iocp::socket s) { got.set_value({ec, std::move(s)}); });
    iocp::socket client(pool); // opened by connect
    completion connected;
    client.connect(listener.local_endpoint(), connected.handler());
    ASSERT_FALSE(connected.get("the connect").ec);
    EXPECT_TRUE(cloexec(static_cast<int>(client.native_handle())));
    accepted a = await(got.get_future(), "the accept");
    ASSERT_FALSE(a.ec) << a.ec.message();
    EXPECT_TRUE(cloexec(static_cast<int>(a.conn.native_handle()))) << iocp::io_backend_name();

    iocp::socket opened(pool, address_family::ipv6);
    EXPECT_TRUE(cloexec(static_cast<int>(opened.native_handle())));
    iocp::datagram_socket udp(pool, iocp::endpoint::loopback(address_family::ipv4, 0));
    EXPECT_TRUE(cloexec(static_cast<int>(udp.native_handle())));
#endif
}

// --- TCP sockets ---------------------------------------------------------------------------

// 5. socket.hpp recv: a receive into 0 bytes "completes at once with 0 bytes (... it is not
// eof)", also once the peer has closed; on a socket that is not open it is invalid_handle.
TEST(user_trial8, a_0_byte_receive_is_0_bytes_after_the_peer_closed_and_invalid_handle_closed) {
    auto owned_pool = make_pool();
    iocp::thread_pool& pool = *owned_pool;
    auto p = iocp_test::make_socket_pair(pool);
    p.server.close();
    // The peer's close has arrived once a real receive sees eof.
    char buf[4];
    completion eof;
    p.client.recv(iocp::buffer(buf), eof.handler());
    EXPECT_EQ(eof.get("the receive at eof").ec, iocp::errc::eof);
    completion zero;
    p.client.recv(iocp::buffer(buf, 0), zero.handler());
    const outcome z = zero.get("the 0-byte receive");
    EXPECT_FALSE(z.ec) << z.ec.message();
    EXPECT_EQ(z.bytes, 0u);

    // Not open: invalid_handle, not "0 bytes, done".
    iocp::socket closed(pool);
    completion on_closed;
    closed.recv(iocp::buffer(buf, 0), on_closed.handler());
    EXPECT_EQ(on_closed.get("the 0-byte receive on a closed socket").ec,
              iocp::errc::invalid_handle);
    counted_op op;
    ASSERT_FALSE(iocp::start_recv(closed, op, iocp::buffer(buf, 0)));
    wait_until([&] { return op.completions.load() == 1; }, "start_recv on a closed socket");
    EXPECT_EQ(op.last, iocp::errc::invalid_handle);
    pool.join();
    EXPECT_EQ(op.completions.load(), 1);
    EXPECT_EQ(zero.calls() + eof.calls() + on_closed.calls(), 3);
}

// 6. socket.hpp close(): "The socket keeps its pool and can be opened again"; connect: "A closed
// socket is opened for `peer`'s family first".
TEST(user_trial8, a_closed_socket_keeps_its_pool_and_connects_again_in_the_other_family) {
    auto owned_pool = make_pool();
    iocp::thread_pool& pool = *owned_pool;
    iocp::acceptor v4(pool, iocp::endpoint::loopback(address_family::ipv4, 0));
    iocp::acceptor v6(pool, iocp::endpoint::loopback(address_family::ipv6, 0));
    std::promise<accepted> a4;
    std::promise<accepted> a6;
    v4.accept([&](std::error_code ec, iocp::socket s) { a4.set_value({ec, std::move(s)}); });
    v6.accept([&](std::error_code ec, iocp::socket s) { a6.set_value({ec, std::move(s)}); });

    iocp::socket s(pool);
    completion c1;
    s.connect(v4.local_endpoint(), c1.handler());
    ASSERT_FALSE(c1.get("the IPv4 connect").ec);
    EXPECT_EQ(s.local_endpoint().family(), address_family::ipv4);
    accepted first = await(a4.get_future(), "the IPv4 accept");
    ASSERT_FALSE(first.ec);

    s.close();
    EXPECT_FALSE(s.is_open());
    EXPECT_EQ(s.pool(), &pool);
    completion c2;
    s.connect(v6.local_endpoint(), c2.handler());
    const outcome second = c2.get("the IPv6 connect");
    ASSERT_FALSE(second.ec) << second.ec.message();
    EXPECT_EQ(s.local_endpoint().family(), address_family::ipv6);
    EXPECT_EQ(s.remote_endpoint(), v6.local_endpoint());
    accepted other = await(a6.get_future(), "the IPv6 accept");
    ASSERT_FALSE(other.ec);
    // The new connection carries bytes.
    completion sent;
    s.send_all(iocp::buffer("hi", 2), sent.handler());
    char buf[2] = {};
    completion got;
    other.conn.recv(iocp::buffer(buf), got.handler());
    EXPECT_EQ(sent.get("the send").bytes, 2u);
    const outcome r = got.get("the receive");
    EXPECT_FALSE(r.ec);
    EXPECT_EQ(std::string(buf, r.bytes), std::string("hi", r.bytes));
}

// 7. socket.hpp connect: only "an unbound one" is bound to the wildcard address, so a socket the
// user bound keeps its address; remote_endpoint before the connect: ENOTCONN.
TEST(user_trial8, a_socket_bound_before_connect_keeps_its_address) {
    auto owned_pool = make_pool();
    iocp::thread_pool& pool = *owned_pool;
    iocp::acceptor listener(pool, iocp::endpoint::loopback(address_family::ipv4, 0));
    std::promise<accepted> got;
    listener.accept([&](std::error_code ec, iocp::socket s) { got.set_value({ec, std::move(s)}); });
    iocp::socket s(pool);
    s.bind(iocp::endpoint::loopback(address_family::ipv4, 0));
    const iocp::endpoint bound = s.local_endpoint();
    EXPECT_NE(bound.port(), 0);
    std::error_code ec;
    (void)s.remote_endpoint(ec);
    EXPECT_TRUE(is(ec, std::errc::not_connected, 10057)) << ec.message();
    completion c;
    s.connect(listener.local_endpoint(), c.handler());
    ASSERT_FALSE(c.get("the connect").ec);
    EXPECT_EQ(s.local_endpoint(), bound);
    accepted a = await(got.get_future(), "the accept");
    ASSERT_FALSE(a.ec);
    EXPECT_EQ(a.conn.remote_endpoint(), bound);
}

// 8. socket.hpp open(): "A socket that was open is closed first": its pending receive is aborted
// once, and the socket is a new, unconnected one.
TEST(user_trial8, opening_an_open_socket_aborts_its_pending_receive_once) {
    auto owned_pool = make_pool();
    iocp::thread_pool& pool = *owned_pool;
    auto p = iocp_test::make_socket_pair(pool);
    char buf[8];
    completion pending;
    p.client.recv(iocp::buffer(buf), pending.handler());
    p.client.open(address_family::ipv6);
    EXPECT_EQ(pending.get("the receive pending at open").ec, iocp::errc::operation_aborted);
    EXPECT_TRUE(p.client.is_open());
    std::error_code ec;
    (void)p.client.remote_endpoint(ec);
    EXPECT_TRUE(is(ec, std::errc::not_connected, 10057)) << ec.message();
    // The old connection is gone: the peer sees eof.
    completion peer;
    p.server.recv(iocp::buffer(buf), peer.handler());
    const outcome o = peer.get("the peer's receive");
    EXPECT_TRUE(o.ec == iocp::errc::eof || o.ec == iocp::errc::connection_reset) << o.ec.message();
    pool.join();
    EXPECT_EQ(pending.calls(), 1);
}

// 21. socket.hpp start_send_all: "the descriptors are copied into `op`".
TEST(user_trial8, start_send_all_copies_the_buffer_descriptors) {
    auto owned_pool = make_pool();
    iocp::thread_pool& pool = *owned_pool;
    auto p = iocp_test::make_socket_pair(pool);
    counted<iocp::send_all_operation> op;
    // A small send buffer and nobody reading yet: the sequence cannot go out in one send.
    p.client.set_send_buffer_size(4096);
    std::vector<char> a(std::size_t{256} * 1024, 'a');
    std::vector<char> b(std::size_t{256} * 1024, 'b');
    {
        std::array<iocp::const_buffer, 2> parts{iocp::buffer(a), iocp::buffer(b)};
        ASSERT_FALSE(iocp::start_send_all(p.client, op, parts));
        // The caller's descriptors change (and end) right after the start.
        parts.fill(iocp::const_buffer(nullptr, 0));
    }
    std::vector<char> in(a.size() + b.size());
    std::size_t got = 0;
    while (got < in.size()) {
        completion r;
        p.server.recv(iocp::buffer(in.data() + got, in.size() - got), r.handler());
        const outcome o = r.get("a receive");
        ASSERT_FALSE(o.ec) << o.ec.message();
        got += o.bytes;
    }
    wait_until([&] { return op.completions.load() == 1; }, "the send_all");
    EXPECT_FALSE(op.last);
    EXPECT_EQ(op.bytes, in.size());
    EXPECT_EQ(std::string(in.data(), a.size()), std::string(a.size(), 'a'));
    EXPECT_EQ(std::string(in.data() + a.size(), b.size()), std::string(b.size(), 'b'));
    pool.join();
    EXPECT_EQ(op.completions.load(), 1);
}

// --- acceptor ------------------------------------------------------------------------------

// 9. acceptor.hpp open(): "An acceptor that was open is closed first".
TEST(user_trial8, opening_an_open_acceptor_aborts_its_pending_accept_and_listens_anew) {
    auto owned_pool = make_pool();
    iocp::thread_pool& pool = *owned_pool;
    iocp::acceptor listener(pool, iocp::endpoint::loopback(address_family::ipv4, 0));
    const iocp::endpoint old_address = listener.local_endpoint();
    std::promise<accepted> old_accept;
    listener.accept([&](std::error_code ec, iocp::socket s) {
        old_accept.set_value({ec, std::move(s)});
    });
    listener.open(iocp::endpoint::loopback(address_family::ipv6, 0));
    accepted aborted = await(old_accept.get_future(), "the accept pending at open");
    EXPECT_EQ(aborted.ec, iocp::errc::operation_aborted) << aborted.ec.message();
    EXPECT_FALSE(aborted.conn.is_open());
    EXPECT_EQ(listener.local_endpoint().family(), address_family::ipv6);

    // The old address no longer listens; the new one does.
    iocp::socket refused(pool);
    completion r;
    refused.connect(old_address, r.handler());
    EXPECT_EQ(r.get("the connect to the old address").ec, iocp::errc::connection_refused);
    std::promise<accepted> fresh;
    listener.accept([&](std::error_code ec, iocp::socket s) {
        fresh.set_value({ec, std::move(s)});
    });
    iocp::socket client(pool);
    completion c;
    client.connect(listener.local_endpoint(), c.handler());
    EXPECT_FALSE(c.get("the connect to the new address").ec);
    EXPECT_FALSE(await(fresh.get_future(), "the new accept").ec);
}

// 10. acceptor.hpp cancel(): pending accepts abort; "the acceptor keeps listening".
TEST(user_trial8, a_cancelled_acceptor_keeps_listening) {
    auto owned_pool = make_pool();
    iocp::thread_pool& pool = *owned_pool;
    iocp::acceptor listener(pool, iocp::endpoint::loopback(address_family::ipv4, 0));
    std::promise<accepted> first;
    std::promise<accepted> second;
    std::atomic<int> calls{0};
    listener.accept([&](std::error_code ec, iocp::socket s) {
        ++calls;
        first.set_value({ec, std::move(s)});
    });
    listener.accept([&](std::error_code ec, iocp::socket s) {
        ++calls;
        second.set_value({ec, std::move(s)});
    });
    listener.cancel();
    EXPECT_EQ(await(first.get_future(), "the first accept").ec, iocp::errc::operation_aborted);
    EXPECT_EQ(await(second.get_future(), "the second accept").ec, iocp::errc::operation_aborted);
    EXPECT_TRUE(listener.is_open());
    // A client that connects now is accepted by the next accept.
    std::promise<accepted> next;
    listener.accept([&](std::error_code ec, iocp::socket s) {
        next.set_value({ec, std::move(s)});
    });
    iocp::socket client(pool);
    completion c;
    client.connect(listener.local_endpoint(), c.handler());
    EXPECT_FALSE(c.get("the connect").ec);
    accepted a = await(next.get_future(), "the accept after cancel");
    ASSERT_FALSE(a.ec) << a.ec.message();
    EXPECT_EQ(a.conn.remote_endpoint(), client.local_endpoint());
    pool.join();
    EXPECT_EQ(calls.load(), 2);
}

struct counted_accept : iocp::accept_operation {
    counted_accept() : accept_operation(&counted_accept::done) {}
    static void done(iocp::io_operation* base, const std::error_code& ec, std::size_t) noexcept {
        auto* self = static_cast<counted_accept*>(base);
        self->last = ec;
        self->completions.fetch_add(1);
    }
    std::error_code last;
    std::atomic<int> completions{0};
};

// 11. acceptor.hpp: bad input to open, closed-acceptor queries, start_accept without a pool.
TEST(user_trial8, acceptor_bad_input_gets_the_documented_codes) {
    auto owned_pool = make_pool();
    iocp::thread_pool& pool = *owned_pool;
    std::error_code ec;
    iocp::acceptor unspecified(pool);
    unspecified.open(iocp::endpoint(), SOMAXCONN, ec);
    EXPECT_EQ(ec, std::errc::invalid_argument) << ec.message();
    EXPECT_FALSE(unspecified.is_open());
    EXPECT_THROW(iocp::acceptor(pool, iocp::endpoint()), std::system_error);

    iocp::acceptor no_pool;
    no_pool.open(iocp::endpoint::loopback(address_family::ipv4, 0), SOMAXCONN, ec);
    EXPECT_EQ(ec, std::errc::invalid_argument) << ec.message();
    counted_accept op;
    EXPECT_EQ(iocp::start_accept(no_pool, op), std::errc::invalid_argument);
    std::atomic<int> ran{0};
    try {
        no_pool.accept([&](std::error_code, iocp::socket) { ++ran; });
        ADD_FAILURE() << "accept without a pool started";
    } catch (const std::system_error& e) {
        EXPECT_EQ(e.code(), std::errc::invalid_argument);
    }

    iocp::acceptor closed(pool);
    (void)closed.local_endpoint(ec);
    EXPECT_EQ(ec, iocp::errc::invalid_handle);
    closed.cancel(ec);
    EXPECT_EQ(ec, iocp::errc::invalid_handle);
    closed.close(ec);
    EXPECT_FALSE(ec) << "closing a closed acceptor does nothing";
    pool.join();
    EXPECT_EQ(op.completions.load(), 0);
    EXPECT_EQ(ran.load(), 0);
}

// 12. acceptor.hpp accept_operation: take_socket hands the connection over once; the endpoints.
TEST(user_trial8, an_accept_operation_hands_its_connection_over_once) {
    auto owned_pool = make_pool();
    iocp::thread_pool& pool = *owned_pool;
    iocp::acceptor listener(pool, iocp::endpoint::loopback(address_family::ipv4, 0));
    counted_accept op;
    EXPECT_FALSE(op.take_socket().is_open()) << "before any start";
    ASSERT_FALSE(iocp::start_accept(listener, op));
    iocp::socket client(pool);
    completion c;
    client.connect(listener.local_endpoint(), c.handler());
    ASSERT_FALSE(c.get("the connect").ec);
    wait_until([&] { return op.completions.load() == 1; }, "the accept");
    ASSERT_FALSE(op.last) << op.last.message();
    EXPECT_EQ(op.local_endpoint(), listener.local_endpoint());
    EXPECT_EQ(op.local_endpoint(), client.remote_endpoint());
    EXPECT_EQ(op.remote_endpoint(), client.local_endpoint());
    iocp::socket conn = op.take_socket();
    ASSERT_TRUE(conn.is_open());
    EXPECT_EQ(conn.pool(), &pool);
    EXPECT_FALSE(op.take_socket().is_open()) << "a second take";
    // After a failure: a closed socket.
    ASSERT_FALSE(iocp::start_accept(listener, op));
    listener.close();
    wait_until([&] { return op.completions.load() == 2; }, "the aborted accept");
    EXPECT_EQ(op.last, iocp::errc::operation_aborted);
    EXPECT_FALSE(op.take_socket().is_open());
    // The connection taken first works.
    completion sent;
    conn.send(iocp::buffer("x", 1), sent.handler());
    EXPECT_FALSE(sent.get("the send on the taken connection").ec);
    pool.join();
    EXPECT_EQ(op.completions.load(), 2);
}

// --- datagram sockets ----------------------------------------------------------------------

// 13. datagram_socket.hpp bind()/connect(): "std::errc::invalid_argument for an unspecified
// endpoint".
TEST(user_trial8, a_datagram_socket_refuses_to_bind_or_connect_to_an_unspecified_endpoint) {
    auto owned_pool = make_pool();
    iocp::thread_pool& pool = *owned_pool;
    std::error_code ec;
    iocp::datagram_socket closed(pool);
    closed.bind(iocp::endpoint(), ec);
    EXPECT_EQ(ec, std::errc::invalid_argument) << ec.message();
    closed.connect(iocp::endpoint(), ec);
    EXPECT_EQ(ec, std::errc::invalid_argument) << ec.message();
    iocp::datagram_socket open(pool, address_family::ipv4);
    open.bind(iocp::endpoint(), ec);
    EXPECT_EQ(ec, std::errc::invalid_argument) << ec.message();
    open.connect(iocp::endpoint(), ec);
    EXPECT_EQ(ec, std::errc::invalid_argument) << ec.message();
    EXPECT_THROW(open.connect(iocp::endpoint()), std::system_error);
    // bind: "Errors: the system's (WSAEADDRINUSE / EADDRINUSE...)": a port another datagram
    // socket holds is not shared.
    iocp::datagram_socket holder(pool, iocp::endpoint::loopback(address_family::ipv4, 0));
    iocp::datagram_socket second(pool);
    second.bind(holder.local_endpoint(), ec);
    EXPECT_TRUE(is(ec, std::errc::address_in_use, 10048)) << ec.message();
}

// 14. datagram_socket.hpp connect(): "Opens a closed socket for `peer`'s family"; send_to:
// "opening a closed socket for its family; an unbound socket gets an ephemeral port".
TEST(user_trial8, connect_and_send_to_open_a_closed_datagram_socket_for_the_family) {
    auto owned_pool = make_pool();
    iocp::thread_pool& pool = *owned_pool;
    iocp::datagram_socket server(pool, iocp::endpoint::loopback(address_family::ipv6, 0));
    iocp::datagram_socket connected(pool);
    connected.connect(server.local_endpoint());
    ASSERT_TRUE(connected.is_open());
    EXPECT_EQ(connected.local_endpoint().family(), address_family::ipv6);
    EXPECT_EQ(connected.remote_endpoint(), server.local_endpoint());

    iocp::datagram_socket sender(pool);
    completion sent;
    sender.send_to(iocp::buffer("abc", 3), server.local_endpoint(), sent.handler());
    ASSERT_TRUE(sender.is_open());
    const outcome s = sent.get("the send_to");
    EXPECT_FALSE(s.ec) << s.ec.message();
    EXPECT_EQ(s.bytes, 3u);
    const iocp::endpoint local = sender.local_endpoint();
    EXPECT_EQ(local.family(), address_family::ipv6);
    EXPECT_NE(local.port(), 0) << "an ephemeral port";

    char buf[8];
    std::promise<std::pair<outcome, iocp::endpoint>> got;
    server.recv_from(iocp::buffer(buf),
                     [&](std::error_code ec, std::size_t n, const iocp::endpoint& from) {
                         got.set_value({{ec, n}, from});
                     });
    auto [o, from] = await(got.get_future(), "the datagram");
    EXPECT_FALSE(o.ec);
    EXPECT_EQ(std::string(buf, o.bytes), "abc");
    EXPECT_EQ(from.port(), local.port());
}

// 15. datagram_socket.hpp start_send: "On a socket that is not connected: the system's error in
// the completion (WSAENOTCONN, EDESTADDRREQ)".
TEST(user_trial8, a_datagram_send_on_an_unconnected_socket_fails_in_its_completion) {
    auto owned_pool = make_pool();
    iocp::thread_pool& pool = *owned_pool;
    iocp::datagram_socket s(pool, iocp::endpoint::loopback(address_family::ipv4, 0));
    counted_op op;
    ASSERT_FALSE(iocp::start_send(s, op, iocp::buffer("x", 1)))
        << "the error belongs in the completion";
    wait_until([&] { return op.completions.load() == 1; }, "the unconnected send");
    // Linux: EDESTADDRREQ (ENOTCONN on older kernels); Windows: WSAENOTCONN (10057), the
    // documented error of WSASend; Wine 8 says WSAEINVAL (10022), measured.
    const bool wine_einval =
        iocp_test::running_under_wine() && is(op.last, std::errc::invalid_argument, 10022);
    EXPECT_TRUE(is(op.last, std::errc::destination_address_required, 10057) ||
                is(op.last, std::errc::not_connected, 10057) || wine_einval)
        << op.last.value() << " " << op.last.message();
    completion c;
    s.send(iocp::buffer("x", 1), c.handler());
    EXPECT_TRUE(c.get("the handler form").ec);
    pool.join();
    EXPECT_EQ(op.completions.load(), 1);
    EXPECT_EQ(c.calls(), 1);
}

// 16. datagram_socket.hpp connect(): "Connecting again changes the peer."
TEST(user_trial8, connecting_a_datagram_socket_again_changes_its_peer) {
    auto owned_pool = make_pool();
    iocp::thread_pool& pool = *owned_pool;
    iocp::datagram_socket first(pool, iocp::endpoint::loopback(address_family::ipv4, 0));
    iocp::datagram_socket second(pool, iocp::endpoint::loopback(address_family::ipv4, 0));
    iocp::datagram_socket s(pool, iocp::endpoint::loopback(address_family::ipv4, 0));
    s.connect(first.local_endpoint());
    EXPECT_EQ(s.remote_endpoint(), first.local_endpoint());
    s.connect(second.local_endpoint());
    EXPECT_EQ(s.remote_endpoint(), second.local_endpoint());

    // A send goes to the new peer.
    completion sent;
    s.send(iocp::buffer("to-2", 4), sent.handler());
    EXPECT_FALSE(sent.get("the send").ec);
    char buf[8];
    std::promise<std::pair<outcome, iocp::endpoint>> got;
    second.recv_from(iocp::buffer(buf),
                     [&](std::error_code ec, std::size_t n, const iocp::endpoint& from) {
                         got.set_value({{ec, n}, from});
                     });
    auto [o, from] = await(got.get_future(), "the datagram at the new peer");
    EXPECT_FALSE(o.ec);
    EXPECT_EQ(std::string(buf, o.bytes), "to-2");
    EXPECT_EQ(from, s.local_endpoint());

    // Only the new peer's datagrams arrive: the old peer's is dropped by the kernel, so the
    // receive gets the new peer's, sent after it.
    completion from_old;
    first.send_to(iocp::buffer("old", 3), s.local_endpoint(), from_old.handler());
    EXPECT_FALSE(from_old.get("the old peer's send").ec);
    completion from_new;
    second.send_to(iocp::buffer("new", 3), s.local_endpoint(), from_new.handler());
    EXPECT_FALSE(from_new.get("the new peer's send").ec);
    completion r;
    s.recv(iocp::buffer(buf), r.handler());
    const outcome in = r.get("the receive");
    EXPECT_FALSE(in.ec);
    EXPECT_EQ(std::string(buf, in.bytes), "new");
}

using counted_recv_from = counted<iocp::recv_from_operation>;

// 17. datagram_socket.hpp sender(): "after any other error, the unspecified endpoint".
TEST(user_trial8, a_reused_receive_operation_forgets_its_sender_after_an_error) {
    auto owned_pool = make_pool();
    iocp::thread_pool& pool = *owned_pool;
    iocp::datagram_socket server(pool, iocp::endpoint::loopback(address_family::ipv4, 0));
    iocp::datagram_socket client(pool, iocp::endpoint::loopback(address_family::ipv4, 0));
    counted_recv_from op;
    char buf[8];
    ASSERT_FALSE(iocp::start_recv_from(server, op, iocp::buffer(buf)));
    completion sent;
    client.send_to(iocp::buffer("hey", 3), server.local_endpoint(), sent.handler());
    EXPECT_FALSE(sent.get("the send").ec);
    wait_until([&] { return op.completions.load() == 1; }, "the first receive");
    ASSERT_FALSE(op.last);
    EXPECT_EQ(op.sender(), client.local_endpoint());
    // Again, and cancelled: the sender is the unspecified endpoint, not the last one.
    ASSERT_FALSE(iocp::start_recv_from(server, op, iocp::buffer(buf)));
    server.cancel();
    wait_until([&] { return op.completions.load() == 2; }, "the cancelled receive");
    EXPECT_EQ(op.last, iocp::errc::operation_aborted);
    EXPECT_FALSE(op.sender().is_specified()) << op.sender().to_string();
    pool.join();
    EXPECT_EQ(op.completions.load(), 2);
}

// 18. datagram_socket.hpp max_datagram_size: "65527 for IPv6".
TEST(user_trial8, the_largest_ipv6_datagram_goes_through_whole_and_one_more_byte_is_refused) {
    auto owned_pool = make_pool();
    iocp::thread_pool& pool = *owned_pool;
    ASSERT_EQ(iocp::max_datagram_size(address_family::ipv6), 65527u);
    iocp::datagram_socket server(pool, iocp::endpoint::loopback(address_family::ipv6, 0));
    server.set_receive_buffer_size(1 << 20);
    iocp::datagram_socket client(pool, address_family::ipv6);
    client.set_send_buffer_size(1 << 20);
    std::vector<char> out(65527);
    for (std::size_t i = 0; i < out.size(); ++i)
        out[i] = static_cast<char>(i * 7 + 1);
    std::vector<char> in(out.size() + 16);
    completion r;
    server.recv_from(iocp::buffer(in), r.handler());
    completion s;
    client.send_to(iocp::buffer(out), server.local_endpoint(), s.handler());
    const outcome so = s.get("the send");
    ASSERT_FALSE(so.ec) << so.ec.message();
    EXPECT_EQ(so.bytes, out.size());
    const outcome ro = r.get("the receive");
    ASSERT_FALSE(ro.ec) << ro.ec.message();
    ASSERT_EQ(ro.bytes, out.size());
    EXPECT_TRUE(std::equal(out.begin(), out.end(), in.begin()));

    std::vector<char> too_big(65528);
    counted_op op;
    EXPECT_EQ(iocp::start_send_to(client, op, iocp::buffer(too_big), server.local_endpoint()),
              std::errc::message_size);
    pool.join();
    EXPECT_EQ(op.completions.load(), 0);
}

// --- endpoints and operations --------------------------------------------------------------

// 19. endpoint.hpp: an endpoint holds "for IPv6 the scope id"; operator== compares it, so
// parse accepts a numeric one ("fe80::1%2") and the text forms show it.
TEST(user_trial8, ipv6_scope_ids_parse_print_and_compare) {
    using iocp::endpoint;
    const endpoint scoped = endpoint::parse("fe80::1%2", 80);
    ASSERT_EQ(scoped.family(), address_family::ipv6);
    const auto* raw = reinterpret_cast<const sockaddr_in6*>(scoped.data());
    EXPECT_EQ(raw->sin6_scope_id, 2u);
    EXPECT_EQ(scoped.address(), "fe80::1%2");
    EXPECT_EQ(scoped.to_string(), "[fe80::1%2]:80");
    EXPECT_EQ(endpoint::parse(scoped.address(), 80), scoped) << "the text form parses back";
    const endpoint unscoped = endpoint::parse("fe80::1", 80);
    EXPECT_NE(scoped, unscoped);
    EXPECT_NE(scoped.to_string(), unscoped.to_string()) << "unequal endpoints print the same";
    EXPECT_EQ(unscoped.to_string(), "[fe80::1]:80");
    EXPECT_EQ(endpoint::parse("fe80::1%4294967295", 1).to_string(), "[fe80::1%4294967295]:1");

    // What is refused: a scope on IPv4, an empty or non-numeric or too large one.
    for (const char* bad : {"127.0.0.1%1", "fe80::1%", "fe80::1%-1", "fe80::1%+1", "fe80::1%1x",
                            "fe80::1%4294967296", "fe80::1%1%2", "%1", "fe80::1% 1"}) {
        std::error_code ec;
        const endpoint got = endpoint::parse(bad, 1, ec);
        EXPECT_EQ(ec, std::errc::invalid_argument) << bad << " parsed as " << got.to_string();
        EXPECT_FALSE(got.is_specified()) << bad;
    }
}

// 20. io_operation.hpp pool(): "nullptr before its first start"; a refused start "started
// nothing and calls nothing".
TEST(user_trial8, an_operations_pool_is_null_until_started_and_a_refused_start_calls_nothing) {
    auto owned_pool = make_pool();
    iocp::thread_pool& pool = *owned_pool;
    counted_op op;
    EXPECT_EQ(op.pool(), nullptr);
    iocp::socket no_pool;
    char buf[4];
    EXPECT_EQ(iocp::start_recv(no_pool, op, iocp::buffer(buf)), std::errc::invalid_argument);
    std::array<iocp::mutable_buffer, iocp::max_buffers + 1> nine{};
    for (auto& b : nine)
        b = iocp::buffer(buf);
    iocp::socket closed(pool);
    EXPECT_EQ(iocp::start_recv(closed, op, std::span<const iocp::mutable_buffer>(nine)),
              std::errc::invalid_argument);
    EXPECT_EQ(iocp::start_recv(closed, op, std::span<const iocp::mutable_buffer>()),
              std::errc::invalid_argument);
    EXPECT_EQ(op.completions.load(), 0);
    // A started one (on a closed socket: it completes with invalid_handle) names its pool.
    ASSERT_FALSE(iocp::start_recv(closed, op, iocp::buffer(buf)));
    wait_until([&] { return op.completions.load() == 1; }, "the receive");
    EXPECT_EQ(op.pool(), &pool);
    EXPECT_EQ(op.last, iocp::errc::invalid_handle);
    pool.join();
    EXPECT_EQ(op.completions.load(), 1);
}

// 22. A TCP connect or bind to the unspecified endpoint is refused, as everywhere else.
TEST(user_trial8, a_tcp_connect_or_bind_to_an_unspecified_endpoint_is_invalid_argument) {
    auto owned_pool = make_pool();
    iocp::thread_pool& pool = *owned_pool;
    iocp::socket s(pool);
    counted_op op;
    EXPECT_EQ(iocp::start_connect(s, op, iocp::endpoint()), std::errc::invalid_argument);
    std::atomic<int> ran{0};
    std::error_code seen;
    try {
        s.connect(iocp::endpoint(), [&](std::error_code ec) {
            seen = ec;
            ++ran;
        });
        ADD_FAILURE() << "a connect to the unspecified endpoint started";
    } catch (const std::system_error& e) {
        EXPECT_EQ(e.code(), std::errc::invalid_argument) << e.code().message();
    }
    std::error_code ec;
    s.bind(iocp::endpoint(), ec);
    EXPECT_EQ(ec, std::errc::invalid_argument) << ec.message();
    iocp::socket open(pool, address_family::ipv4);
    open.bind(iocp::endpoint(), ec);
    EXPECT_EQ(ec, std::errc::invalid_argument) << ec.message();
    EXPECT_EQ(iocp::start_connect(open, op, iocp::endpoint()), std::errc::invalid_argument);
    pool.join();
    EXPECT_EQ(op.completions.load(), 0) << op.last.message();
    EXPECT_EQ(ran.load(), 0) << "the handler ran with: " << seen.message();
}

// 23. datagram_socket.hpp start_send: "the limit is that of the socket's family".
TEST(user_trial8, a_connected_datagram_socket_sends_up_to_its_familys_limit) {
    auto owned_pool = make_pool();
    iocp::thread_pool& pool = *owned_pool;
    iocp::datagram_socket server(pool, iocp::endpoint::loopback(address_family::ipv4, 0));
    server.set_receive_buffer_size(1 << 20);
    iocp::datagram_socket client(pool);
    client.connect(server.local_endpoint());
    client.set_send_buffer_size(1 << 20);
    std::vector<char> out(iocp::max_datagram_size(address_family::ipv4) + 1, 'u');
    counted_op op;
    EXPECT_EQ(iocp::start_send(client, op, iocp::buffer(out)), std::errc::message_size);
    completion refused;
    EXPECT_THROW(client.send(iocp::buffer(out), refused.handler()), std::system_error);
    out.pop_back();
    std::vector<char> in(out.size() + 1);
    completion r;
    server.recv(iocp::buffer(in), r.handler());
    completion sent;
    client.send(iocp::buffer(out), sent.handler());
    const outcome so = sent.get("the largest send");
    ASSERT_FALSE(so.ec) << so.ec.message();
    EXPECT_EQ(so.bytes, out.size());
    const outcome ro = r.get("the receive");
    EXPECT_FALSE(ro.ec) << ro.ec.message();
    EXPECT_EQ(ro.bytes, out.size());
    pool.join();
    EXPECT_EQ(op.completions.load(), 0);
    EXPECT_EQ(refused.calls(), 0);
}

// 24. The setters and skip_completion_port_on_success of a closed socket: invalid_handle.
TEST(user_trial8, options_of_a_closed_socket_are_invalid_handle) {
    auto owned_pool = make_pool();
    iocp::thread_pool& pool = *owned_pool;
    iocp::socket closed(pool);
    std::error_code ec;
    closed.set_linger(true, 0, ec);
    EXPECT_EQ(ec, iocp::errc::invalid_handle) << ec.message();
    closed.set_no_delay(true, ec);
    EXPECT_EQ(ec, iocp::errc::invalid_handle) << ec.message();
    closed.set_send_buffer_size(4096, ec);
    EXPECT_EQ(ec, iocp::errc::invalid_handle) << ec.message();
    closed.set_receive_buffer_size(4096, ec);
    EXPECT_EQ(ec, iocp::errc::invalid_handle) << ec.message();
    closed.skip_completion_port_on_success(ec);
    EXPECT_EQ(ec, iocp::errc::invalid_handle) << ec.message();
    (void)closed.local_endpoint(ec);
    EXPECT_EQ(ec, iocp::errc::invalid_handle) << ec.message();
    (void)closed.remote_endpoint(ec);
    EXPECT_EQ(ec, iocp::errc::invalid_handle) << ec.message();
    EXPECT_FALSE(closed.is_open()) << "no setter opens the socket";
    iocp::datagram_socket udp(pool);
    udp.set_receive_buffer_size(4096, ec);
    EXPECT_EQ(ec, iocp::errc::invalid_handle) << ec.message();
    udp.set_broadcast(true, ec);
    EXPECT_EQ(ec, iocp::errc::invalid_handle) << ec.message();
    (void)udp.remote_endpoint(ec);
    EXPECT_EQ(ec, iocp::errc::invalid_handle) << ec.message();
}

// 25. buffer.hpp: buffer(Range) covers the bytes of the range; buffer_size adds them up.
TEST(user_trial8, buffers_of_ranges_cover_their_bytes) {
    std::vector<std::uint32_t> words(5);
    const iocp::mutable_buffer w = iocp::buffer(words);
    EXPECT_EQ(w.data, words.data());
    EXPECT_EQ(w.size, 20u);
    const std::string text = "hello";
    const auto t = iocp::buffer(text);
    static_assert(std::is_same_v<decltype(t), const iocp::const_buffer>);
    EXPECT_EQ(t.size, 5u);
    std::array<char, 7> arr{};
    EXPECT_EQ(iocp::buffer(arr).size, 7u);
    const std::array<iocp::const_buffer, 3> parts{t, iocp::const_buffer(w), iocp::buffer(arr)};
    EXPECT_EQ(iocp::buffer_size(std::span<const iocp::const_buffer>(parts)), 32u);
    // A string literal through the pointer form: the bytes asked for, no terminator added.
    EXPECT_EQ(iocp::buffer("ping", 4).size, 4u);
}

// 26. truncate without write access: refused alike on every backend, the file untouched.
TEST(user_trial8, truncate_without_write_access_is_refused_and_empties_nothing) {
    auto owned_pool = make_pool();
    iocp::thread_pool& pool = *owned_pool;
    temp_file tmp("truncate_ro.bin");
    {
        iocp::file f(pool, tmp.path, iocp::file_mode::write | iocp::file_mode::create);
        ASSERT_FALSE(write_at(f, 0, "keep me", 7).ec);
    }
    for (const iocp::file_mode mode :
         {iocp::file_mode::read | iocp::file_mode::truncate,
          iocp::file_mode::read | iocp::file_mode::create | iocp::file_mode::truncate}) {
        iocp::file f(pool);
        std::error_code ec;
        f.open(tmp.path, mode, ec);
        EXPECT_EQ(ec, std::errc::invalid_argument)
            << "mode " << static_cast<int>(mode) << ": " << ec.message();
        EXPECT_FALSE(f.is_open());
        EXPECT_EQ(std::filesystem::file_size(tmp.path), 7u) << "mode " << static_cast<int>(mode);
    }
    // With write access it empties the file, as documented.
    iocp::file w(pool, tmp.path, iocp::file_mode::read_write | iocp::file_mode::truncate);
    EXPECT_EQ(w.size(), 0u);
}

// 27. Moved objects take their pending operations along; the moved-from ones are closed.
TEST(user_trial8, moved_objects_keep_their_pending_operations_and_moved_from_ones_are_closed) {
    auto owned_pool = make_pool();
    iocp::thread_pool& pool = *owned_pool;
    // An acceptor moved with an accept pending: the accept completes with the client.
    iocp::acceptor first(pool, iocp::endpoint::loopback(address_family::ipv4, 0));
    std::promise<accepted> got;
    first.accept([&](std::error_code ec, iocp::socket s) { got.set_value({ec, std::move(s)}); });
    iocp::acceptor second(std::move(first));
    EXPECT_FALSE(first.is_open()); // NOLINT(bugprone-use-after-move): what the test checks
    iocp::socket client(pool);
    completion c;
    client.connect(second.local_endpoint(), c.handler());
    EXPECT_FALSE(c.get("the connect").ec);
    accepted a = await(got.get_future(), "the accept moved along");
    ASSERT_FALSE(a.ec) << a.ec.message();
    counted_accept on_moved_from;
    // NOLINTNEXTLINE(bugprone-use-after-move): an operation on the moved-from object is the test
    ASSERT_FALSE(iocp::start_accept(first, on_moved_from));
    wait_until([&] { return on_moved_from.completions.load() == 1; }, "the moved-from accept");
    EXPECT_EQ(on_moved_from.last, iocp::errc::invalid_handle);

    // A datagram socket moved with a receive pending: the datagram reaches it.
    iocp::datagram_socket u1(pool, iocp::endpoint::loopback(address_family::ipv4, 0));
    char buf[8];
    completion r;
    u1.recv_from(iocp::buffer(buf), r.handler());
    iocp::datagram_socket u2(std::move(u1));
    completion sent;
    client.close();
    iocp::datagram_socket sender(pool, address_family::ipv4);
    sender.send_to(iocp::buffer("dg", 2), u2.local_endpoint(), sent.handler());
    EXPECT_FALSE(sent.get("the datagram's send").ec);
    const outcome in = r.get("the receive moved along");
    EXPECT_FALSE(in.ec) << in.ec.message();
    EXPECT_EQ(std::string(buf, in.bytes), "dg");
    completion on_moved_from_udp;
    // NOLINTNEXTLINE(bugprone-use-after-move): an operation on the moved-from object is the test
    u1.recv(iocp::buffer(buf), on_moved_from_udp.handler());
    EXPECT_EQ(on_moved_from_udp.get("the moved-from receive").ec, iocp::errc::invalid_handle);

    // A file: the moved-from one reads nothing.
    temp_file tmp("moved.bin");
    iocp::file f1(pool, tmp.path, iocp::file_mode::read_write | iocp::file_mode::create);
    iocp::file f2(std::move(f1));
    ASSERT_FALSE(write_at(f2, 0, "abc", 3).ec);
    // NOLINTNEXTLINE(bugprone-use-after-move): a read through the moved-from file is the test
    EXPECT_EQ(read_at(f1, 0, buf, 3).ec, iocp::errc::invalid_handle);
    pool.join();
    EXPECT_EQ(on_moved_from.completions.load(), 1);
    EXPECT_EQ(r.calls() + on_moved_from_udp.calls(), 2);
}

// 28. Only dotted-decimal IPv4 text, on every system.
TEST(user_trial8, ipv4_text_in_the_old_octal_hex_or_short_forms_is_refused) {
    for (const char* bad : {"010.0.0.1", "1.2.3.04", "0x7f.0.0.1", "0x7f000001", "127.1",
                            "2130706433", "00.0.0.0", "1.2.3.0x4"}) {
        std::error_code ec;
        const iocp::endpoint got = iocp::endpoint::parse(bad, 1, ec);
        EXPECT_EQ(ec, std::errc::invalid_argument) << bad << " parsed as " << got.to_string();
    }
    EXPECT_EQ(iocp::endpoint::parse("10.0.0.1", 1).address(), "10.0.0.1");
    EXPECT_EQ(iocp::endpoint::parse("0.0.0.0", 1).address(), "0.0.0.0");
    EXPECT_EQ(iocp::endpoint::parse("255.255.255.255", 1).address(), "255.255.255.255");
}

// 29. A refused assign closes the handle it was given.
TEST(user_trial8, a_refused_assign_closes_the_handle_it_was_given) {
#if IOCP_WINDOWS
    GTEST_SKIP() << "the refusals of assign (EISDIR, ESPIPE) are Linux's";
#else
    auto owned_pool = make_pool();
    iocp::thread_pool& pool = *owned_pool;
    int sv[2] = {-1, -1};
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    iocp::file f(pool);
    std::error_code ec;
    f.assign(iocp::unique_handle(sv[0]), ec);
    EXPECT_EQ(ec, std::errc::invalid_seek) << ec.message();
    EXPECT_FALSE(f.is_open());
    // Had sv[0] stayed open, this send would succeed: its peer is closed, so it fails.
    const char byte = 'x';
    const ssize_t sent = ::send(sv[1], &byte, 1, MSG_NOSIGNAL);
    const int err = errno;
    EXPECT_EQ(sent, -1) << "the refused descriptor is still open";
    if (sent == -1) {
        EXPECT_TRUE(err == EPIPE || err == ECONNRESET) << err;
    }
    ::close(sv[1]);
#endif
}

// 30. Others may read, write and delete a file an iocp::file has open.
TEST(user_trial8, others_may_read_write_and_delete_an_open_file) {
    auto owned_pool = make_pool();
    iocp::thread_pool& pool = *owned_pool;
    temp_file tmp("shared.bin");
    iocp::file f(pool, tmp.path, iocp::file_mode::read_write | iocp::file_mode::create);
    ASSERT_FALSE(write_at(f, 0, "ours", 4).ec);
    {
        std::ifstream in(tmp.path, std::ios::binary);
        ASSERT_TRUE(in.is_open()) << "another reader";
        std::string text(4, '\0');
        in.read(text.data(), 4);
        EXPECT_EQ(text, "ours");
    }
    {
        std::fstream out(tmp.path, std::ios::binary | std::ios::in | std::ios::out);
        ASSERT_TRUE(out.is_open()) << "another writer";
        out.seekp(4);
        out.write("+more", 5);
    }
    char buf[16] = {};
    outcome o = read_at(f, 0, buf, sizeof buf);
    EXPECT_FALSE(o.ec);
    EXPECT_EQ(std::string(buf, o.bytes), "ours+more");
    std::error_code ec;
    EXPECT_TRUE(std::filesystem::remove(tmp.path, ec)) << "another deleter: " << ec.message();
    // The open file still reads and writes.
    EXPECT_FALSE(write_at(f, 0, "OURS", 4).ec);
    o = read_at(f, 0, buf, sizeof buf);
    EXPECT_FALSE(o.ec) << o.ec.message();
    EXPECT_EQ(std::string(buf, o.bytes), "OURS+more");
}

// 31. A datagram that arrives after a cancel waits for the next receive.
TEST(user_trial8, a_datagram_arriving_after_a_cancel_waits_for_the_next_receive) {
    auto owned_pool = make_pool();
    iocp::thread_pool& pool = *owned_pool;
    iocp::datagram_socket server(pool, iocp::endpoint::loopback(address_family::ipv4, 0));
    iocp::datagram_socket client(pool, address_family::ipv4);
    char buf[16] = {};
    completion a;
    completion b;
    server.recv_from(iocp::buffer(buf), a.handler());
    server.recv_from(iocp::buffer(buf), b.handler());
    server.cancel();
    EXPECT_EQ(a.get("the first cancelled receive").ec, iocp::errc::operation_aborted);
    EXPECT_EQ(b.get("the second cancelled receive").ec, iocp::errc::operation_aborted);
    for (const char* text : {"one", "two"}) {
        completion sent;
        client.send_to(iocp::buffer(text, 3), server.local_endpoint(), sent.handler());
        EXPECT_FALSE(sent.get("a send").ec);
    }
    for (const char* text : {"one", "two"}) {
        completion r;
        server.recv_from(iocp::buffer(buf), r.handler());
        const outcome o = r.get("a receive after the cancel");
        EXPECT_FALSE(o.ec) << o.ec.message();
        EXPECT_EQ(std::string(buf, o.bytes), text);
    }
    pool.join();
    EXPECT_EQ(a.calls() + b.calls(), 2);
}

// 32. socket.hpp shutdown(): "On Linux, a receive pending when the receiving side is shut down
// completes with errc::eof"; the sending side goes on working.
TEST(user_trial8, shutting_down_the_receiving_side_ends_a_pending_receive_with_eof_on_linux) {
#if IOCP_WINDOWS
    GTEST_SKIP() << "Windows does not document what a pending receive does after "
                    "shutdown(SD_RECEIVE); the doc promises eof on Linux only";
#else
    auto owned_pool = make_pool();
    iocp::thread_pool& pool = *owned_pool;
    auto p = iocp_test::make_socket_pair(pool);
    char buf[8] = {};
    completion pending;
    p.client.recv(iocp::buffer(buf), pending.handler());
    p.client.shutdown(iocp::shutdown_type::receive);
    EXPECT_EQ(pending.get("the receive pending at shutdown").ec, iocp::errc::eof);
    completion sent;
    p.client.send(iocp::buffer("still", 5), sent.handler());
    EXPECT_FALSE(sent.get("a send after shutting down the receiving side").ec);
    completion got;
    p.server.recv(iocp::buffer(buf), got.handler());
    const outcome o = got.get("the peer's receive");
    EXPECT_FALSE(o.ec) << o.ec.message();
    EXPECT_EQ(std::string(buf, o.bytes), "still");
    pool.join();
    EXPECT_EQ(pending.calls() + sent.calls() + got.calls(), 3);
#endif
}

} // namespace

#endif // IOCP_HAS_IO
