import CShims
import DroverKernel
import DroverSessionProtocol
import Foundation

/// Where and how droverd reaches one session of this node (README, "Session kinds").
public struct SessionEndpoint: Sendable, Equatable, CustomStringConvertible {
    public enum Address: Sendable, Equatable {
        /// The socket the guard bound in droverd's own folder (`inherited`, `systemd-socket`):
        /// nobody else can reach or replace it, so it needs no check.
        case guardSocket(String)
        /// The socket the program bound in the session's folder (`unix-socket`).
        case userSocket(String)
        /// The loopback port the program listens on (`tcp-port`).
        case loopbackPort(Int)
    }

    /// The secret droverd adds to every request, as a header, for a program that checks one.
    public struct Secret: Sendable, Equatable, CustomStringConvertible {
        public var header: String
        public var value: String

        /// Never the value.
        public var description: String { "\(header): [secret]" }
    }

    public var address: Address
    /// The session's user: a listener must be theirs, and a user socket is connected to with
    /// their rights.
    public var uid: UInt32
    public var gid: UInt32
    /// The session's cgroup folder (its `cgroup.procs` lists the session's processes); nil when
    /// the session is held together by its process group alone.
    public var cgroup: String?
    /// `/s/<id>`, when the kind wants it taken off the paths it is sent.
    public var strippedPrefix: String?
    public var secret: Secret?

    public init(address: Address, uid: UInt32, gid: UInt32, cgroup: String?, strippedPrefix: String? = nil, secret: Secret? = nil) {
        self.address = address
        self.uid = uid
        self.gid = gid
        self.cgroup = cgroup
        self.strippedPrefix = strippedPrefix
        self.secret = secret
    }

    /// The guard's socket of a `session-command` session.
    public static func guardSocket(_ path: String) -> SessionEndpoint {
        SessionEndpoint(address: .guardSocket(path), uid: 0, gid: 0, cgroup: nil)
    }

    /// Never the secret.
    public var description: String {
        switch address {
        case .guardSocket(let path), .userSocket(let path): "unix:\(path)"
        case .loopbackPort(let port): "127.0.0.1:\(port)"
        }
    }
}

/// What the node the client reached does to a session's requests, by its kind.
public struct SessionDelivery: Sendable, Equatable {
    /// `/s/<id>`, taken off the request's path (`base-path=strip`).
    public var strippedPrefix: String?
    /// Added to every request; a client's header of that name is dropped.
    public var secret: SessionEndpoint.Secret?

    public init(strippedPrefix: String? = nil, secret: SessionEndpoint.Secret? = nil) {
        self.strippedPrefix = strippedPrefix
        self.secret = secret
    }

    /// The headers to add.
    public var headers: [(String, String)] { secret.map { [($0.header, $0.value)] } ?? [] }
}

/// Why droverd would not talk to what listens at a session's endpoint.
public struct SessionEndpointRefusal: Error, Sendable, CustomStringConvertible, Equatable {
    /// True when something answered that is not the session's (a planted socket, a squatted
    /// port): worth a warning. False when nothing could be connected (not up yet, ended).
    public var isForeign: Bool
    public var reason: String
    /// The connect's error, when it failed: ECONNREFUSED or ENOENT say no listener is there (the
    /// session stopped listening, as it does when it is suspended).
    public var errorNumber: Int32?

    public var description: String { reason }
}

/// Connects to a session's endpoint and checks, before a byte is sent, that the listener is the
/// session's own (README, "Session kinds": what each endpoint type protects).
///
/// - `unix-socket`: the connect runs with the session user's file-system rights (this thread
///   only), so a link the user planted at the socket's path reaches only what the user could
///   reach; then the listener's credentials (`SO_PEERCRED`) must be the session's uid and a
///   process of the session's cgroup.
/// - `tcp-port`: the connection's server end (looked up through sock_diag) must belong to the session's uid,
///   and the socket that holds it — or, before the program accepted it, every listener on the
///   port — to a process of the session's cgroup.
public struct SessionConnector: Sendable {
    /// The checks; production runs all of them. Tests turn one off through
    /// ``init(skipping:)`` to show that the attack it stops then succeeds.
    struct Checks: OptionSet, Sendable {
        let rawValue: Int
        /// Connect to a user socket with the user's rights, not droverd's.
        static let userRights = Checks(rawValue: 1)
        /// The listener's uid is the session's.
        static let listenerUser = Checks(rawValue: 2)
        /// The listener is a process of the session's cgroup.
        static let listenerCgroup = Checks(rawValue: 4)
        static let all: Checks = [.userRights, .listenerUser, .listenerCgroup]
    }

    let checks: Checks

    public init() {
        checks = .all
    }

    /// For tests only (`@testable`): a connector without some of its checks.
    init(skipping skipped: Checks) {
        checks = Checks.all.subtracting(skipped)
    }

    /// A connected socket to the session, verified; the caller owns it.
    /// - Parameter timeout: seconds the connect may wait for a listener whose queue is full
    ///   (`SO_SNDTIMEO`); 0: none at all — the socket is made non-blocking, and a full queue is a
    ///   refusal at once. A session's program can make its queue stay full; nothing that waits
    ///   on it may hold a thread others need (an event loop above all).
    public func connect(_ endpoint: SessionEndpoint, timeout: Double) throws(SessionEndpointRefusal) -> Int32 {
        let family = if case .loopbackPort = endpoint.address { AF_INET } else { AF_UNIX }
        let fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw Self.failed("socket", errno) }
        if timeout <= 0 {
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        } else {
            var bound = timeval(tv_sec: Int(timeout), tv_usec: Int((timeout - timeout.rounded(.down)) * 1_000_000))
            setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &bound, socklen_t(MemoryLayout<timeval>.size))
        }
        do throws(SessionEndpointRefusal) {
            switch endpoint.address {
            case .guardSocket(let path):
                guard UnixSocketAddress.with(path, { Foundation.connect(fd, $0, $1) }) == 0 else { throw Self.failed("connect to \(path)", errno) }
            case .userSocket(let path):
                let result: Int32
                if checks.contains(.userRights) {
                    result = drover_connect_unix_as(fd, path, endpoint.uid, endpoint.gid)
                } else {
                    result = UnixSocketAddress.with(path, { Foundation.connect(fd, $0, $1) }) == 0 ? 0 : -errno
                }
                guard result == 0 else { throw Self.failed("connect to \(path) as uid \(endpoint.uid)", -result) }
                try verifyUnixPeer(fd, endpoint, path: path)
            case .loopbackPort(let port):
                guard timeout > 0 else { throw SessionEndpointRefusal(isForeign: false, reason: "a port is connected to without blocking by NIO, then verified") }
                var address = sockaddr_in()
                address.sin_family = sa_family_t(AF_INET)
                address.sin_port = in_port_t(UInt16(port).bigEndian)
                address.sin_addr.s_addr = in_addr_t(UInt32(0x7f00_0001).bigEndian)
                let connected = withUnsafePointer(to: &address) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Foundation.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
                }
                guard connected == 0 else { throw Self.failed("connect to 127.0.0.1:\(port)", errno) }
                var local = sockaddr_in()
                var length = socklen_t(MemoryLayout<sockaddr_in>.size)
                let named = withUnsafeMutablePointer(to: &local) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
                }
                guard named == 0 else { throw Self.failed("getsockname", errno) }
                try verifyTCP(endpoint, localPort: UInt16(bigEndian: local.sin_port))
            }
        } catch {
            close(fd)
            throw error
        }
        return fd
    }

    static func failed(_ what: String, _ error: Int32) -> SessionEndpointRefusal {
        SessionEndpointRefusal(isForeign: false, reason: "\(what): \(String(cString: strerror(error)))", errorNumber: error)
    }

    private func verifyUnixPeer(_ fd: Int32, _ endpoint: SessionEndpoint, path: String) throws(SessionEndpointRefusal) {
        var credentials = drover_peer_credentials()
        guard drover_get_peer_credentials(fd, &credentials) == 0 else {
            throw Self.failed("SO_PEERCRED", errno)
        }
        if checks.contains(.listenerUser), credentials.uid != endpoint.uid {
            throw SessionEndpointRefusal(isForeign: true, reason: "the socket at \(path) is held by uid \(credentials.uid), not the session's user (uid \(endpoint.uid)): refused")
        }
        if checks.contains(.listenerCgroup), let cgroup = endpoint.cgroup, !CgroupHost.members(of: cgroup).contains(credentials.pid) {
            throw SessionEndpointRefusal(isForeign: true, reason: "the socket at \(path) is held by process \(credentials.pid), which is not one of the session's: refused")
        }
    }

    /// Checks a connection made to the session's port, from its local port `localPort`, before a
    /// byte is sent on it. The connection's server end is looked up exactly (sock_diag). Once the
    /// program accepted it, it is a socket with a file: its owner must be the session's user and
    /// a process of the session's cgroup must hold it. Before that, it waits in the queue of a
    /// listener that receives 127.0.0.1:port — every such listener must be the session's (the
    /// owner of a socket without a file reads as root on many kernels, so the waiting socket's
    /// own uid proves nothing).
    /// Reads /proc for the cgroup's processes: run it off the event loops.
    public func verifyTCP(_ endpoint: SessionEndpoint, localPort: UInt16) throws(SessionEndpointRefusal) {
        guard case .loopbackPort(let port) = endpoint.address else { return }
        var uid: UInt32 = 0
        var inode: UInt64 = 0
        var state: UInt8 = 0
        let found = drover_tcp_socket(UInt16(port), localPort, &uid, &inode, &state)
        guard found == 0, state != UInt8(TCPTable.listen) else {
            throw SessionEndpointRefusal(isForeign: false, reason: "127.0.0.1:\(port): the connection's other end cannot be looked up (\(found == 0 ? "a listener answered" : String(cString: strerror(-found)))); refused")
        }
        var owners: [(uid: UInt32, inode: UInt64)] = [(uid, inode)]
        if inode == 0 {
            var inodes = [UInt64](repeating: 0, count: 64)
            var uids = [UInt32](repeating: 0, count: 64)
            let count = Int(drover_tcp_listeners(UInt16(port), &inodes, &uids, Int32(inodes.count)))
            guard count > 0 else {
                throw SessionEndpointRefusal(isForeign: false, reason: "127.0.0.1:\(port): no listener holds the connection any more; refused")
            }
            owners = (0..<count).map { (uids[$0], inodes[$0]) }
        }
        if checks.contains(.listenerUser), let stranger = owners.first(where: { $0.uid != endpoint.uid }) {
            throw SessionEndpointRefusal(isForeign: true, reason: "127.0.0.1:\(port) is held by uid \(stranger.uid), not the session's user (uid \(endpoint.uid)): refused")
        }
        guard checks.contains(.listenerCgroup), let cgroup = endpoint.cgroup else { return }
        let held = Self.socketInodes(of: CgroupHost.members(of: cgroup))
        if !owners.allSatisfy({ held.contains($0.inode) }) {
            throw SessionEndpointRefusal(isForeign: true, reason: "127.0.0.1:\(port) is listened on by a process that is not one of the session's: refused")
        }
    }

    /// The inodes of the sockets the processes hold (the first 4,096 processes and 65,536
    /// descriptors: the work a session's processes can make a check do is bounded).
    static func socketInodes(of pids: [pid_t]) -> Set<UInt64> {
        var inodes = Set<UInt64>()
        var buffer = [CChar](repeating: 0, count: 64)
        var budget = 65_536
        for pid in pids.prefix(4096) where budget > 0 {
            let folder = "/proc/\(pid)/fd"
            guard let entries = try? FileManager.default.contentsOfDirectory(atPath: folder) else { continue }
            for entry in entries.prefix(budget) {
                budget -= 1
                let count = readlink(folder + "/" + entry, &buffer, buffer.count - 1)
                guard count > 9 else { continue }
                let target = String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
                if target.hasPrefix("socket:["), let inode = UInt64(target.dropFirst(8).dropLast()) { inodes.insert(inode) }
            }
        }
        return inodes
    }
}

/// TCP states as the kernel numbers them.
enum TCPTable {
    static let listen = 10
}
