import CShims
import DroverKernel
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

    /// A connected, blocking socket to the session, verified; the caller owns it.
    public func connect(_ endpoint: SessionEndpoint) throws(SessionEndpointRefusal) -> Int32 {
        switch endpoint.address {
        case .guardSocket(let path):
            let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { throw Self.failed("socket", errno) }
            guard UnixSocketAddress.with(path, { Foundation.connect(fd, $0, $1) }) == 0 else {
                let error = errno
                close(fd)
                throw Self.failed("connect to \(path)", error)
            }
            return fd
        case .userSocket(let path):
            let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { throw Self.failed("socket", errno) }
            let result: Int32
            if checks.contains(.userRights) {
                result = drover_connect_unix_as(fd, path, endpoint.uid, endpoint.gid)
            } else {
                result = UnixSocketAddress.with(path, { Foundation.connect(fd, $0, $1) }) == 0 ? 0 : -errno
            }
            guard result == 0 else {
                close(fd)
                throw Self.failed("connect to \(path) as uid \(endpoint.uid)", -result)
            }
            do {
                try verifyUnixPeer(fd, endpoint, path: path)
            } catch {
                close(fd)
                throw error
            }
            return fd
        case .loopbackPort(let port):
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { throw Self.failed("socket", errno) }
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = in_port_t(UInt16(port).bigEndian)
            address.sin_addr.s_addr = in_addr_t(UInt32(0x7f00_0001).bigEndian)
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Foundation.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard connected == 0 else {
                let error = errno
                close(fd)
                throw Self.failed("connect to 127.0.0.1:\(port)", error)
            }
            var one: Int32 = 1
            setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            do {
                try verifyTCPPeer(fd, endpoint, port: port)
            } catch {
                close(fd)
                throw error
            }
            return fd
        }
    }

    static func failed(_ what: String, _ error: Int32) -> SessionEndpointRefusal {
        SessionEndpointRefusal(isForeign: false, reason: "\(what): \(String(cString: strerror(error)))")
    }

    private func verifyUnixPeer(_ fd: Int32, _ endpoint: SessionEndpoint, path: String) throws(SessionEndpointRefusal) {
        var credentials = drover_peer_credentials()
        guard drover_get_peer_credentials(fd, &credentials) == 0 else {
            throw Self.failed("SO_PEERCRED", errno)
        }
        if checks.contains(.listenerUser), credentials.uid != endpoint.uid {
            throw SessionEndpointRefusal(isForeign: true, reason: "the socket at \(path) is held by uid \(credentials.uid), not the session's user (uid \(endpoint.uid)): refused")
        }
        if checks.contains(.listenerCgroup), let cgroup = endpoint.cgroup, !Self.members(of: cgroup).contains(credentials.pid) {
            throw SessionEndpointRefusal(isForeign: true, reason: "the socket at \(path) is held by process \(credentials.pid), which is not one of the session's: refused")
        }
    }

    private func verifyTCPPeer(_ fd: Int32, _ endpoint: SessionEndpoint, port: Int) throws(SessionEndpointRefusal) {
        var local = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let named = withUnsafeMutablePointer(to: &local) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard named == 0 else { throw Self.failed("getsockname", errno) }
        let ourPort = UInt16(bigEndian: local.sin_port)
        // The server end of this very connection, looked up exactly (sock_diag): its uid is its
        // listener's, fixed when the connection was made, so a listener that went away
        // meanwhile cannot hide whose it was.
        var uid: UInt32 = 0
        var inode: UInt64 = 0
        var state: UInt8 = 0
        let found = drover_tcp_socket(UInt16(port), ourPort, &uid, &inode, &state)
        guard found == 0, state != UInt8(TCPTable.listen) else {
            throw SessionEndpointRefusal(isForeign: false, reason: "127.0.0.1:\(port): the connection's other end cannot be looked up (\(found == 0 ? "a listener answered" : String(cString: strerror(-found)))); refused")
        }
        if checks.contains(.listenerUser), uid != endpoint.uid {
            throw SessionEndpointRefusal(isForeign: true, reason: "127.0.0.1:\(port) is held by uid \(uid), not the session's user (uid \(endpoint.uid)): refused")
        }
        guard checks.contains(.listenerCgroup), let cgroup = endpoint.cgroup else { return }
        // Accepted: the socket that holds it. Not yet: every listener it may wait in.
        var inodes = [inode]
        if inode == 0 {
            var listeners = [UInt64](repeating: 0, count: 64)
            let count = drover_tcp_listeners(UInt16(port), &listeners, Int32(listeners.count))
            inodes = count > 0 ? Array(listeners.prefix(Int(count))) : []
        }
        let held = Self.socketInodes(of: Self.members(of: cgroup))
        if inodes.isEmpty || !inodes.allSatisfy(held.contains) {
            throw SessionEndpointRefusal(isForeign: true, reason: "127.0.0.1:\(port) is listened on by a process that is not one of the session's: refused")
        }
    }

    /// The processes of a cgroup.
    static func members(of cgroup: String) -> [pid_t] {
        ((try? String(contentsOfFile: cgroup + "/cgroup.procs", encoding: .utf8)) ?? "").split(separator: "\n").compactMap { pid_t($0) }
    }

    /// The inodes of the sockets the processes hold.
    static func socketInodes(of pids: [pid_t]) -> Set<UInt64> {
        var inodes = Set<UInt64>()
        var buffer = [CChar](repeating: 0, count: 64)
        for pid in pids {
            let folder = "/proc/\(pid)/fd"
            guard let entries = try? FileManager.default.contentsOfDirectory(atPath: folder) else { continue }
            for entry in entries {
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
