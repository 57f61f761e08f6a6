import Foundation

/// TCP sockets on IPv4 addresses, for the test kit's raw clients and the tests that need a
/// port of their own: the one place that fills a `sockaddr_in`.
public enum IPv4Socket {
    /// A new TCP socket bound to `host:port` (port 0: one the kernel picks); the caller closes
    /// it.
    public static func bound(_ host: String, port: Int = 0) throws -> (fd: Int32, port: Int) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestFailure("socket: \(String(cString: strerror(errno)))") }
        let result = withAddress(host, port: port) { bind(fd, $0, $1) }
        guard result == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw TestFailure("bind \(host):\(port): \(reason)")
        }
        var address = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        return (fd, Int(UInt16(bigEndian: address.sin_port)))
    }

    /// Connects `fd` to `host:port`; 0, or -1 with `errno` set.
    public static func connect(_ fd: Int32, to host: String, port: Int) -> Int32 {
        withAddress(host, port: port) { Foundation.connect(fd, $0, $1) }
    }

    private static func withAddress(_ host: String, port: Int, _ body: (UnsafePointer<sockaddr>, socklen_t) -> Int32) -> Int32 {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        guard inet_pton(AF_INET, host, &address.sin_addr) == 1 else {
            errno = EINVAL
            return -1
        }
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
    }
}
