import Foundation
import Synchronization

/// Finds TCP ports nobody listens on.
public enum FreePort {
    /// A free port for `host`, below the kernel's ephemeral range
    /// (`/proc/sys/net/ipv4/ip_local_port_range`): a port the kernel hands out for port 0 may be
    /// taken again, between the check and the server's bind, as the source port of any of the
    /// many outgoing connections the tests make (nodes calling each other and PostgreSQL), and
    /// the server then fails with "Address already in use". Ports below that range are never
    /// handed out that way; a random one of them is free unless another test picked the same.
    /// No port is handed out twice in one test run: a node stopped and started again keeps its
    /// port, and another test must not take it while the node is down.
    public static func find(host: String = "127.0.0.1") throws -> Int {
        let range = (try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8))?
            .split(whereSeparator: \.isWhitespace).compactMap { Int($0) } ?? []
        let ephemeralStart = range.first ?? 32768
        if ephemeralStart > 12_000 {
            for _ in 0..<200 {
                let candidate = Int.random(in: 10_000..<ephemeralStart)
                guard given.withLock({ $0.insert(candidate).inserted }) else { continue }
                if let (fd, port) = try? IPv4Socket.bound(host, port: candidate) {
                    close(fd)
                    return port
                }
            }
        }
        let (fd, port) = try IPv4Socket.bound(host)
        close(fd)
        return port
    }

    /// Every port handed out below the ephemeral range so far.
    private static let given = Mutex<Set<Int>>([])
}
