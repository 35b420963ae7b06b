#pragma once
// The one table that decides what a Win32 or Winsock error code means to the library (libuv's
// uv_translate_sys_error is the model): which portable condition it is (error.hpp compares
// system codes against iocp::errc with it), how an I/O object reports it (translate_io_error),
// and whether an accept that failed with it lost only that one connection (the acceptor then
// skips it and accepts the next). Nothing else in the library lists error codes.
//
// Plain numbers, so that error.hpp needs no <windows.h> (and the table's unit tests run on every
// platform); io_state.hpp checks them against the SDK's names with static_asserts.

namespace iocp::detail::win32 {

// What a code means, independent of who asks.
enum class error_kind : unsigned char {
    unclassified,       // no portable meaning: reported as the system gave it
    aborted,            // this process cancelled the I/O or closed its handle
    closed_or_reset,    // ERROR_NETNAME_DELETED: our close with the I/O pending, or a peer reset
    connection_reset,   // the peer reset the connection
    connection_aborted, // the local stack gave the connection up (or we closed it)
    eof,                // end of file, or the writing end of a pipe went away
    refused,            // nobody listens at the address connected to
    timed_out,          // a wait or a connection attempt ran out of time
    port_closed,        // the completion port was closed under a waiter
    invalid_handle,     // the handle (or socket) is not open
    message_size,       // a message larger than the buffer (received) or the protocol allows (sent)
};

// The verdict on one code.
struct error_info {
    error_kind kind = error_kind::unclassified;
    // An accept that failed with this code lost one incoming connection (reset, aborted or
    // broken before we took it) while the listening socket is fine: skip it, accept the next.
    bool per_connection = false;
};

// The table. Every code the library gives a meaning is here and nowhere else.
constexpr error_info classify_error(int code) noexcept {
    switch (code) {
    // Our own cancellation or close.
    case 995:   // ERROR_OPERATION_ABORTED: CancelIoEx, closesocket/CloseHandle on Windows
    case 676:   // ERROR_HANDLES_CLOSED: closesocket with I/O pending, under Wine
    case 1235:  // ERROR_REQUEST_ABORTED
    case 10103: // WSAECANCELLED
        return {error_kind::aborted, false};
    // Ambiguous: tell them apart by whether we closed the handle (io_state::closed_by_us).
    case 64: // ERROR_NETNAME_DELETED
        return {error_kind::closed_or_reset, true};
    case 10054: // WSAECONNRESET
    case 10052: // WSAENETRESET: keep-alive found the connection dead
    // Named pipes: a write after the reader closed its end (EPIPE's counterpart), and an
    // instance whose client is gone.
    case 232: // ERROR_NO_DATA: "the pipe is being closed"
    case 233: // ERROR_PIPE_NOT_CONNECTED: "no process is on the other end of the pipe"
        return {error_kind::connection_reset, true};
    case 1236:  // ERROR_CONNECTION_ABORTED
    case 10053: // WSAECONNABORTED
        return {error_kind::connection_aborted, true};
    case 59: // ERROR_UNEXP_NET_ERR: what Wine's AcceptEx reports for a client reset before
             // the accept; no portable meaning, but it concerns that connection only
        return {error_kind::unclassified, true};
    case 38:  // ERROR_HANDLE_EOF
    case 109: // ERROR_BROKEN_PIPE: the other end of a pipe closed (a read: end of the stream)
        return {error_kind::eof, false};
    case 1225:  // ERROR_CONNECTION_REFUSED
    case 10061: // WSAECONNREFUSED
        return {error_kind::refused, false};
    case 258:   // WAIT_TIMEOUT
    case 1460:  // ERROR_TIMEOUT
    case 121:   // ERROR_SEM_TIMEOUT: a connection attempt that timed out, as an overlapped
                // socket reports it
    case 10060: // WSAETIMEDOUT
        return {error_kind::timed_out, false};
    case 735: // ERROR_ABANDONED_WAIT_0
        return {error_kind::port_closed, false};
    case 6:     // ERROR_INVALID_HANDLE
    case 10038: // WSAENOTSOCK
        return {error_kind::invalid_handle, false};
    case 10040: // WSAEMSGSIZE: a datagram longer than the receive buffers (the bytes that fit
                // were delivered, the rest discarded: WSARecvFrom), or too long to send
    case 234:   // ERROR_MORE_DATA: the same truncated receive as an overlapped completion reports
                // it (STATUS_BUFFER_OVERFLOW); on a message-mode pipe the rest stays readable
        return {error_kind::message_size, false};
    default: return {};
    }
}

// Whether an accept that failed with `code` lost only that one connection.
constexpr bool is_per_connection_error(int code) noexcept {
    return classify_error(code).per_connection;
}

} // namespace iocp::detail::win32
