public import Foundation
import Synchronization

/// Several real `droverd` processes, one per loopback address, sharing one registry (a SQLite
/// file or a PostgreSQL database), one secure cookie key and one shared-storage directory.
public final class TestCluster: Sendable {
    public enum Backend: Sendable, CustomStringConvertible {
        case sqlite
        case postgresql(PostgresTestServer)
        /// A database on a ``PostgresReplicaSet``'s primary, reached through every member's address.
        case replicaSet(PostgresReplicaSet)

        public var description: String {
            switch self {
            case .sqlite: "sqlite"
            case .postgresql: "postgresql"
            case .replicaSet: "postgresql with standbys"
            }
        }
    }

    public static let defaultKey = "cluster-test-key-0123456789abcdef"

    /// The operator's defaults (`heartbeat-interval=5`, `timeout=10`) scaled down by five,
    /// together with ``scaledFileLocks``: a test cluster keeps production's proportions, so
    /// a slow machine makes a healthy node look no more dead than it would in production.
    public static let scaledLoadBalancer = "heartbeat-interval=1\ntimeout=2\n"
    /// `refresh-rate=20`, `timeout-interval=30` scaled down by the same five.
    public static let scaledFileLocks = "refresh-rate=4\ntimeout-interval=6\n"

    public let shared: TemporaryDirectory
    public let nodes: [ConfigDirectory]
    public let databaseName: String?
    /// Where the test's own requests and `drover` commands come from: a ``NetworkLab`` host's
    /// namespace when the nodes are lab hosts, nil for the machine's own.
    public let clientNamespace: String?
    /// For each node, the command that runs its droverd (``NetworkLab/launcher(_:)``).
    private let launchers: [[String]]
    private let running = Mutex<[Int: RunningProcess]>([:])

    /// - Parameters:
    ///   - addresses: one 127.0.0.0/8 address per node.
    ///   - loadBalancer: the `load-balancer` text every node gets (keep the proportions of
    ///     ``scaledLoadBalancer`` when adding keys).
    ///   - fileLocks: the `file-locks` text every node gets.
    ///   - rserver: extra `rserver.conf` lines for every node.
    ///   - clientNamespace: for nodes that are ``NetworkLab`` hosts (`addresses` their lab
    ///     addresses): the lab host the test speaks from.
    ///   - launchers: for each node, a command that runs its droverd, such as its lab host's
    ///     ``NetworkLab/launcher(_:)``; empty: run droverd itself.
    public init(addresses: [String], backend: Backend, loadBalancer: String = TestCluster.scaledLoadBalancer,
                fileLocks: String = TestCluster.scaledFileLocks, rserver: String = "", key: String = TestCluster.defaultKey,
                clientNamespace: String? = nil, launchers: [[String]] = []) async throws {
        let shared = TemporaryDirectory(prefix: "drover-shared")
        self.shared = shared
        self.clientNamespace = clientNamespace
        self.launchers = launchers
        let database: String
        switch backend {
        case .sqlite:
            databaseName = nil
            database = "provider=sqlite\ndirectory=\(shared.path)\nconnection-timeout-seconds=20\n"
        case .postgresql(let server):
            let name = try await server.createDatabase(prefix: "drover_cluster")
            databaseName = name
            database = server.databaseConf(name)
        case .replicaSet(let set):
            let name = try await set.members[0].createDatabase(prefix: "drover_cluster")
            databaseName = name
            database = set.databaseConf(name)
        }
        var made: [ConfigDirectory] = []
        for address in addresses {
            // A lab host's address is not on this machine's own network: any port is free there.
            let node = try ConfigDirectory(address: address, port: clientNamespace == nil ? nil : FreePort.find(), key: key)
            try node.write("rserver.conf", """
                www-address=\(address)
                www-port=\(node.port)
                server-data-dir=data
                server-shared-storage-path=\(shared.path)
                \(rserver)
                """)
            try node.write("load-balancer", loadBalancer)
            try node.write("file-locks", fileLocks)
            try node.write("database.conf", database)
            made.append(node)
        }
        nodes = made
    }

    /// Starts node `index` and waits until it answers its health check.
    /// - Parameter launcher: a command that runs droverd, which must end by exec'ing it (the
    ///   process is droverd's to signal); nil: the node's launcher given at init, if any.
    @discardableResult
    public func start(_ index: Int, environment: [String: String] = [:], launcher: [String]? = nil) async throws -> RunningProcess {
        let node = nodes[index]
        let command = (launcher ?? (index < launchers.count ? launchers[index] : [])) + [Executable.path("droverd"), "--config-dir", node.path]
        let process = try RunningProcess(command[0], Array(command.dropFirst()), environment: environment)
        running.withLock { $0[index] = process }
        try await process.waitUntil(timeout: 60, "node \(index) health check") {
            (try? await RawHTTPClient.request(host: node.address, port: node.port, path: "/health-check",
                                              networkNamespace: clientNamespace).status) == 200
        }
        return process
    }

    public func process(_ index: Int) -> RunningProcess? { running.withLock { $0[index] } }

    /// Sends `signal` to node `index` and waits for it to exit; returns its exit status.
    @discardableResult
    public func stop(_ index: Int, signal: Int32 = SIGTERM) async throws -> Int32 {
        guard let process = running.withLock({ $0.removeValue(forKey: index) }) else { return -1 }
        process.signal(signal)
        return try await process.wait(timeout: 60)
    }

    /// Runs `drover` against node `index`'s configuration.
    public func drover(_ index: Int, _ arguments: [String], stdin: String? = nil) async throws -> Executable.Result {
        let command = (clientNamespace.map { ["/usr/bin/nsenter", "--net=" + $0, "--"] } ?? []) + [Executable.path("drover")]
        return try await Executable.run(command[0], Array(command.dropFirst()) + arguments + ["--config-dir", nodes[index].path],
                                        stdin: stdin, timeout: 120)
    }

    /// `drover list-nodes --json` through node `index`, as (host, status) pairs in id order.
    public func statuses(via index: Int = 0) async throws -> [(id: Int64, host: String, status: String)] {
        let result = try await drover(index, ["list-nodes", "--json"])
        guard result.status == 0, let listing = try? JSONDecoder().decode(NodeListing.self, from: Data(result.stdout.utf8)) else {
            throw TestFailure("list-nodes failed: \(result.stderr)\(result.stdout)")
        }
        return listing.nodes.map { ($0.id, $0.host, $0.status) }
    }

    /// What ``statuses(via:)`` reads of `drover list-nodes --json` (README, "list-nodes").
    private struct NodeListing: Decodable {
        struct Node: Decodable {
            var id: Int64
            var host: String
            var status: String
        }
        var nodes: [Node]
    }

    /// The status `list-nodes` shows for the node at `address`.
    public func status(of address: String, via index: Int = 0) async throws -> String? {
        try await statuses(via: index).first { $0.host == address }?.status
    }

    /// Polls until `check` holds, or throws after `timeout` seconds (``eventually(_:timeout:every:stop:_:)``).
    public func eventually(_ what: String, timeout: TimeInterval = 20, _ check: () async throws -> Bool) async throws {
        try await DroverTesting.eventually(what, timeout: timeout, check)
    }

    deinit {
        for process in running.withLock({ Array($0.values) }) {
            process.signal(SIGKILL)
        }
    }
}
