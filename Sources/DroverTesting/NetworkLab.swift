import CShims
import Foundation

/// Hosts on a private network of their own, for partition tests: every host is a network
/// namespace (`drvlab-<pid>.<lab>-<host>`) with one veth link to a bridge in a switch namespace
/// (`drvlab-<pid>.<lab>-sw`), addresses `10.231.0.<n>/24`. No host, and no packet, is in the
/// machine's own namespace, so nothing a test does reaches any other network. ``cut(_:)`` takes a
/// host's switch port down (every packet to and from it is lost) and ``heal(_:)`` brings it back.
///
/// Labs are apart from each other (each has its own switch), so several tests may have one at
/// once. Needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and `ip`; the namespaces of a lab whose test
/// process is gone (killed before it cleaned up) are removed when a lab is made.
public final class NetworkLab: Sendable {
    public static let prefix = "drvlab-"

    public let hosts: [String]
    /// This lab's part of every namespace name: the test process's pid, which tells a stale lab
    /// from a live one, and a random part, so a late clean-up of another lab cannot touch this one.
    private let tag = "\(getpid()).\(String(UInt32.random(in: 0x1000...0xffff), radix: 16))"
    private var switchName: String { Self.prefix + tag + "-sw" }

    /// Whether partition tests run: always in CI (where a machine that cannot make namespaces
    /// fails them), elsewhere when running as root with `ip` and `nsenter`.
    public static var shouldRun: Bool {
        ProcessInfo.processInfo.environment["CI"] == "true"
            || (geteuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip")
                && FileManager.default.isExecutableFile(atPath: "/usr/bin/nsenter"))
    }

    /// Makes a namespace for each of `hosts` (short names: `db`, `n1` …), linked to the switch.
    public init(hosts: [String]) async throws {
        guard geteuid() == 0 else {
            throw TestFailure("partition tests make network namespaces and need root; run the suite as root (CI does)")
        }
        self.hosts = hosts
        try await Self.removeStale()
        try await Self.ip(["netns", "add", switchName])
        try await Self.ip(["-n", switchName, "link", "add", "br0", "type", "bridge"])
        try await Self.ip(["-n", switchName, "link", "set", "br0", "up"])
        for (index, host) in hosts.enumerated() {
            let namespace = namespaceName(host)
            try await Self.ip(["netns", "add", namespace])
            try await Self.ip(["link", "add", "eth0", "netns", namespace, "type", "veth", "peer", "name", Self.port(host), "netns", switchName])
            try await Self.ip(["-n", namespace, "addr", "add", "\(Self.address(index))/24", "dev", "eth0"])
            try await Self.ip(["-n", namespace, "link", "set", "lo", "up"])
            try await Self.ip(["-n", namespace, "link", "set", "eth0", "up"])
            try await Self.ip(["-n", switchName, "link", "set", Self.port(host), "master", "br0", "up"])
        }
    }

    /// The address of `host` on the lab's network.
    public func address(_ host: String) -> String {
        guard let index = hosts.firstIndex(of: host) else { preconditionFailure("no host \(host) in the lab") }
        return Self.address(index)
    }

    /// The namespace file of `host`, for ``RawHTTPClient/request(_:host:port:path:headers:body:localAddress:timeout:networkNamespace:)``
    /// and `nsenter --net=`.
    public func namespace(_ host: String) -> String { "/run/netns/" + namespaceName(host) }

    private func namespaceName(_ host: String) -> String { Self.prefix + tag + "-" + host }

    /// The command prefix that runs a program as `host`.
    public func launcher(_ host: String) -> [String] { ["/usr/bin/nsenter", "--net=" + namespace(host), "--"] }

    /// Cuts `host` off: its switch port goes down, so no packet reaches it or leaves it.
    public func cut(_ host: String) async throws {
        try await Self.ip(["-n", switchName, "link", "set", Self.port(host), "down"])
    }

    /// Links `host` to the switch again.
    public func heal(_ host: String) async throws {
        try await Self.ip(["-n", switchName, "link", "set", Self.port(host), "up"])
    }

    /// Runs `body` on the calling thread inside the network namespace at `path` (nil: where the
    /// thread is), then moves the thread back into the process's own namespace, whatever `body`
    /// did, before anything else runs on it. A thread inherits its creator's namespace: a thread
    /// still in a lab host that resumed the task waiting for it could start a new worker thread
    /// of the concurrency runtime there, and every test whose code later ran on that worker
    /// connected from inside the lab (two proof runs failed so: droverd and the shared
    /// PostgreSQL listening on 127.0.0.1, and the test process refused there).
    public static func within<T>(_ path: String?, _ body: () throws -> T) throws -> T {
        guard let path else { return try body() }
        let entered = drover_enter_network_namespace(path)
        guard entered == 0 else { throw TestFailure("cannot enter the network namespace \(path): \(String(cString: strerror(-entered)))") }
        defer {
            // `/proc/self` is the process's main thread, which never enters a lab.
            let back = drover_enter_network_namespace("/proc/self/ns/net")
            if back != 0 { fatalError("cannot move a thread back into the test process's network namespace: \(String(cString: strerror(-back)))") }
        }
        return try body()
    }

    private static func address(_ index: Int) -> String { "10.231.0.\(index + 10)" }
    private static func port(_ host: String) -> String { "p-" + host }

    /// Deletes every namespace of a lab whose test process is gone (a name of the older form,
    /// without a pid, is always stale).
    private static func removeStale() async throws {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: "/run/netns")) ?? []
        for name in names where name.hasPrefix(prefix) {
            let owner = name.dropFirst(prefix.count).prefix { $0 != "." && $0 != "-" }
            if let pid = pid_t(owner), name.dropFirst(prefix.count + owner.count).first == ".", kill(pid, 0) == 0 || errno == EPERM {
                continue
            }
            // The previous lab's own clean-up may be deleting it at this moment.
            let result = try await Executable.run("/usr/sbin/ip", ["netns", "delete", name])
            guard result.status == 0 || !FileManager.default.fileExists(atPath: "/run/netns/" + name) else {
                throw TestFailure("cannot remove the stale namespace \(name): \(result.stderr.trimmingCharacters(in: .whitespacesAndNewlines))")
            }
        }
    }

    private static func ip(_ arguments: [String]) async throws {
        let result = try await Executable.run("/usr/sbin/ip", arguments)
        guard result.status == 0 else {
            throw TestFailure("ip \(arguments.joined(separator: " ")) failed: \(result.stderr.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
    }

    /// Deletes the namespaces (their links go with them) in a process of its own.
    deinit {
        let names = [switchName] + hosts.map(namespaceName)
        Executable.launchDetached("/bin/sh", ["-c", names.map { "/usr/sbin/ip netns delete \($0) 2>/dev/null" }.joined(separator: "; ")])
    }
}
