#pragma once
/// @file
/// `iocp::endpoint`: an IPv4 or IPv6 address and a port, as a socket address.
///
/// @code
/// auto local = iocp::endpoint::loopback(iocp::address_family::ipv4, 8080);
/// auto peer = iocp::endpoint::parse("::1", 8080);              // throws on a bad address
/// std::printf("%s\n", peer.to_string().c_str());              // "[::1]:8080"
/// @endcode
///
/// Available wherever `IOCP_HAS_IO` is 1 (the Win32 backend and Linux); sockaddr_in/in6 from
/// <netinet/in.h> on Linux, from Winsock on Windows.

#include "config.hpp"

#if IOCP_HAS_IO

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <system_error>

#include "detail/io/net.hpp"
#include "error.hpp"

namespace iocp {

/// The IP version of an endpoint or socket.
enum class address_family {
    ipv4, ///< AF_INET
    ipv6, ///< AF_INET6
};

/// An IPv4 or IPv6 socket address (address, port, and for IPv6 the scope id).
///
/// A regular value type: copyable, comparable, no resources. Thread safety: as an `int`.
class endpoint {
public:
    /// An unspecified endpoint (family AF_UNSPEC, port 0): what a failed query returns.
    endpoint() noexcept { std::memset(&addr_, 0, sizeof addr_); }

    /// Copies a socket address of family AF_INET or AF_INET6; anything else (or a length too
    /// short for its family) gives the unspecified endpoint.
    endpoint(const sockaddr* address, std::size_t length) noexcept : endpoint() {
        if (address == nullptr)
            return;
        if (address->sa_family == AF_INET && length >= sizeof(sockaddr_in))
            std::memcpy(&addr_.v4, address, sizeof(sockaddr_in));
        else if (address->sa_family == AF_INET6 && length >= sizeof(sockaddr_in6))
            std::memcpy(&addr_.v6, address, sizeof(sockaddr_in6));
    }

    /// The loopback address of `family` (127.0.0.1 or ::1) with `port`.
    static endpoint loopback(address_family family, std::uint16_t port) noexcept {
        endpoint e = any(family, port);
        if (family == address_family::ipv4)
            e.addr_.v4.sin_addr.s_addr = ::htonl(INADDR_LOOPBACK);
        else
            e.addr_.v6.sin6_addr.s6_addr[15] = 1;
        return e;
    }

    /// The wildcard address of `family` (0.0.0.0 or ::) with `port`: listen on every
    /// interface, or (port 0) let the system pick a local address.
    static endpoint any(address_family family, std::uint16_t port) noexcept {
        endpoint e;
        if (family == address_family::ipv4) {
            e.addr_.v4.sin_family = AF_INET;
            e.addr_.v4.sin_port = ::htons(port);
        } else {
            e.addr_.v6.sin6_family = AF_INET6;
            e.addr_.v6.sin6_port = ::htons(port);
        }
        return e;
    }

    /// Parses a numeric IPv4 ("127.0.0.1") or IPv6 ("::1", no brackets) address. An IPv6
    /// address may end in a numeric scope id ("fe80::1%2", RFC 4007's zone index: the
    /// interface's number, as `if_nametoindex` gives it; interface names are not looked up).
    /// Errors: `std::errc::invalid_argument` if `address` is neither (or has a scope id that is
    /// not a decimal number below 2^32, or one on an IPv4 address).
    static endpoint parse(std::string_view address, std::uint16_t port,
                          std::error_code& ec) noexcept {
        endpoint e;
        // The scope id: the endpoint holds one and operator== compares it, so it must have a
        // text form (address() and to_string() print it); inet_pton refuses the '%'.
        std::uint32_t scope = 0;
        const std::size_t percent = address.find('%');
        if (percent != std::string_view::npos) {
            if (!parse_scope_id(address.substr(percent + 1), scope)) {
                ec = std::make_error_code(std::errc::invalid_argument);
                return e;
            }
            address = address.substr(0, percent);
        }
        char text[INET6_ADDRSTRLEN + 1] = {};
        // An embedded NUL would end the text inet_pton reads early: "127.0.0.1\0junk" is not
        // an address, whatever its first part parses as.
        if (address.size() >= sizeof text || address.find('\0') != std::string_view::npos) {
            ec = std::make_error_code(std::errc::invalid_argument);
            return e;
        }
        std::memcpy(text, address.data(), address.size());
        // inet_pton needs Winsock started: hold a reference for the call only.
        if (std::error_code wsa = detail::io::net_acquire()) {
            ec = wsa;
            return e;
        }
        const int v4 = ::inet_pton(AF_INET, text, &e.addr_.v4.sin_addr);
        const int v6 = v4 == 1 ? 0 : ::inet_pton(AF_INET6, text, &e.addr_.v6.sin6_addr);
        detail::io::net_release();
        if (v4 == 1 && percent == std::string_view::npos) {
            e.addr_.v4.sin_family = AF_INET;
            e.addr_.v4.sin_port = ::htons(port);
        } else if (v6 == 1) {
            e.addr_.v6.sin6_family = AF_INET6;
            e.addr_.v6.sin6_port = ::htons(port);
            e.addr_.v6.sin6_scope_id = scope;
        } else {
            ec = std::make_error_code(std::errc::invalid_argument);
            return {};
        }
        ec.clear();
        return e;
    }
    /// As above. @throws std::system_error
    static endpoint parse(std::string_view address, std::uint16_t port) {
        std::error_code ec;
        endpoint e = parse(address, port, ec);
        detail::throw_if(ec, "iocp::endpoint::parse: not a numeric IPv4 or IPv6 address");
        return e;
    }

    /// IPv4 or IPv6. (The unspecified endpoint reports ipv4.)
    address_family family() const noexcept {
        return addr_.base.sa_family == AF_INET6 ? address_family::ipv6 : address_family::ipv4;
    }

    /// True for AF_INET or AF_INET6, false for the unspecified endpoint.
    bool is_specified() const noexcept {
        return addr_.base.sa_family == AF_INET || addr_.base.sa_family == AF_INET6;
    }

    /// The port, in host byte order.
    std::uint16_t port() const noexcept {
        return ::ntohs(addr_.base.sa_family == AF_INET6 ? addr_.v6.sin6_port : addr_.v4.sin_port);
    }

    /// Sets the port (host byte order).
    void set_port(std::uint16_t port) noexcept {
        if (addr_.base.sa_family == AF_INET6)
            addr_.v6.sin6_port = ::htons(port);
        else
            addr_.v4.sin_port = ::htons(port);
    }

    /// The address in numeric form ("127.0.0.1", "::1"), an IPv6 scope id other than 0
    /// after a '%' ("fe80::1%2", as `parse` reads it); empty when unspecified.
    std::string address() const {
        char text[INET6_ADDRSTRLEN + 1] = {};
        const void* raw = addr_.base.sa_family == AF_INET6
                              ? static_cast<const void*>(&addr_.v6.sin6_addr)
                              : static_cast<const void*>(&addr_.v4.sin_addr);
        if (!is_specified() || ::inet_ntop(addr_.base.sa_family, raw, text, sizeof text) == nullptr)
            return {};
        std::string out = text;
        if (addr_.base.sa_family == AF_INET6 && addr_.v6.sin6_scope_id != 0) {
            out += '%';
            out += std::to_string(addr_.v6.sin6_scope_id);
        }
        return out;
    }

    /// "address:port", with the IPv6 address (and its scope id) in brackets ("[::1]:80",
    /// "[fe80::1%2]:80").
    std::string to_string() const {
        // Appended piece by piece: GCC 12 warns (-Wrestrict, wrongly) on "[" + s + "]:".
        std::string out;
        const bool v6 = addr_.base.sa_family == AF_INET6;
        if (v6)
            out += '[';
        out += address();
        out += v6 ? "]:" : ":";
        out += std::to_string(port());
        return out;
    }

    /// The socket address, for the Winsock calls.
    const sockaddr* data() const noexcept { return &addr_.base; }
    /// The socket address, for the Winsock calls that fill it in.
    sockaddr* data() noexcept { return &addr_.base; }

    /// The length of the socket address of this family.
    int size() const noexcept {
        return addr_.base.sa_family == AF_INET6 ? static_cast<int>(sizeof(sockaddr_in6))
                                                : static_cast<int>(sizeof(sockaddr_in));
    }

    /// The largest socket address an endpoint holds (for `getsockname` and the like).
    static constexpr int capacity() noexcept { return static_cast<int>(sizeof(sockaddr_in6)); }

    /// Same family, address, port (and IPv6 scope id).
    friend bool operator==(const endpoint& a, const endpoint& b) noexcept {
        if (a.addr_.base.sa_family != b.addr_.base.sa_family)
            return false;
        if (a.addr_.base.sa_family == AF_INET6)
            return a.addr_.v6.sin6_port == b.addr_.v6.sin6_port &&
                   a.addr_.v6.sin6_scope_id == b.addr_.v6.sin6_scope_id &&
                   std::memcmp(&a.addr_.v6.sin6_addr, &b.addr_.v6.sin6_addr, sizeof(in6_addr)) == 0;
        if (a.addr_.base.sa_family == AF_INET)
            return a.addr_.v4.sin_port == b.addr_.v4.sin_port &&
                   a.addr_.v4.sin_addr.s_addr == b.addr_.v4.sin_addr.s_addr;
        return true;
    }

private:
    // A scope id's text: 1 to 10 decimal digits, below 2^32.
    static bool parse_scope_id(std::string_view digits, std::uint32_t& out) noexcept {
        if (digits.empty() || digits.size() > 10)
            return false;
        std::uint64_t v = 0;
        for (const char c : digits) {
            if (c < '0' || c > '9')
                return false;
            v = v * 10 + static_cast<std::uint64_t>(c - '0');
        }
        if (v > 0xFFFFFFFFu)
            return false;
        out = static_cast<std::uint32_t>(v);
        return true;
    }

    union storage {
        sockaddr base;
        sockaddr_in v4;
        sockaddr_in6 v6;
    } addr_;
};

/// The Winsock address family (AF_INET, AF_INET6) of `f`.
constexpr int native_family(address_family f) noexcept {
    return f == address_family::ipv6 ? AF_INET6 : AF_INET;
}

} // namespace iocp

#endif // IOCP_HAS_IO
