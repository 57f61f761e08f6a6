public import DroverCluster
import DroverKernel
import DroverPlugins
import DroverServer
public import Foundation
import Logging
import ServiceLifecycle
import Synchronization

/// One node's HTTP server running in this process on an in-memory registry with a clock the
/// test sets: the health check, the status endpoint, the signed internal API, the user API and
/// the proxy's decisions, reached over real HTTP on loopback but without `droverd` processes.
/// What needs separate processes (sessions, crashes, partitions) stays with ``TestCluster``.
public final class InProcessNode: Sendable {
    public let config: ConfigDirectory
    public let store: InMemoryRegistryStore
    public let membership: ClusterMembership
    public let sessions: SessionManager
    /// The registry's clock: `now` is what `last_seen` and the status endpoint read.
    public let clock: TestClock
    private let group: ServiceGroup
    private let running: Task<Void, any Error>

    public var address: String { config.address }
    public var port: Int { config.port }
    public var runtime: NodeRuntime { membership.runtime }

    /// A clock that moves only when the test moves it.
    public final class TestClock: Sendable {
        private let current: Mutex<Date>
        public init(_ start: Date = Date(timeIntervalSince1970: 1_800_000_000)) { current = Mutex(start) }
        public var now: Date { current.withLock { $0 } }
        public func advance(_ seconds: TimeInterval) { current.withLock { $0 = $0.addingTimeInterval(seconds) } }
    }

    /// A registry several in-process nodes share, as the nodes of a cluster share a database.
    public static func sharedRegistry(clock: TestClock) -> InMemoryRegistryStore {
        InMemoryRegistryStore(clock: { clock.now })
    }

    /// Starts a node that has joined its (in-memory) cluster and serves.
    /// - Parameters:
    ///   - address: the 127.0.0.0/8 address it serves on.
    ///   - rserver: extra `rserver.conf` lines (say `auth-none=1`).
    ///   - loadBalancer: the `load-balancer` text; nil runs without one.
    ///   - key: the secure cookie key text.
    ///   - registry: a registry shared with other nodes (``sharedRegistry(clock:)``, made with
    ///     the same `clock`); nil: one of its own.
    /// - Throws: what joining throws (``MembershipError`` when the cluster refuses it).
    public init(address: String = "127.0.0.1", rserver: String = "", loadBalancer: String? = TestCluster.scaledLoadBalancer,
                key: String = TestCluster.defaultKey, clock: TestClock = TestClock(), registry: InMemoryRegistryStore? = nil) async throws {
        config = try ConfigDirectory(address: address, key: key, rserver: rserver)
        if let loadBalancer { try config.write("load-balancer", loadBalancer) }
        self.clock = clock
        store = registry ?? Self.sharedRegistry(clock: clock)
        let logger = Logger(label: "in-process-node")
        let setup = try NodeSetup(configDirectory: config.path, catalog: .builtin, createKeyIfMissing: false, logger: logger)
        let server = setup.configuration.server
        guard let address = NodeAddressResolver.resolve(wwwHostName: nil, wwwAddress: server.wwwAddress, wwwPort: server.wwwPort) else {
            throw TestFailure("cannot resolve \(server.wwwAddress)")
        }
        membership = ClusterMembership(runtime: try NodeRuntime(setup: setup, store: store, address: address, logger: logger))
        sessions = SessionManager(runtime: membership.runtime)
        // Joined before the port is bound, so a node the cluster refuses leaves nothing open.
        _ = try await membership.join()
        let http = try await HTTPServer.node(membership: membership, sessions: sessions, logger: logger)
        group = ServiceGroup(configuration: .init(services: [.init(service: http)], logger: logger))
        // The port is bound already: a request made before the server reads waits in the
        // backlog, so nothing needs to poll for the node to be up.
        running = Task { [group] in try await group.run() }
    }

    /// Sends one request to the node.
    public func request(_ method: String, _ path: String, headers: [(String, String)] = [], body: String = "",
                        from localAddress: String? = nil) async throws -> RawHTTPClient.Response {
        try await RawHTTPClient.request(method, host: address, port: port, path: path, headers: headers, body: body, localAddress: localAddress)
    }

    /// Sends one `GET` to the node.
    public func request(_ path: String, headers: [(String, String)] = [], from localAddress: String? = nil) async throws -> RawHTTPClient.Response {
        try await request("GET", path, headers: headers, from: localAddress)
    }

    /// The headers of a signed internal call, as a peer with `key` would send them at `now`.
    /// - Parameter destination: the `host:port` signed for; nil: this node's.
    public func signedHeaders(_ method: String, _ path: String, body: String = "", key: String = TestCluster.defaultKey,
                              now: Date = Date(), destination: String? = nil) -> [(String, String)] {
        InternalRequestSignature.headers(method: method, path: path, body: Array(body.utf8), destination: destination ?? "\(address):\(port)",
                                         key: SecureCookieKey(bytes: Array(key.utf8)), now: now)
    }

    /// Stops serving and waits until the server is closed.
    public func stop() async {
        await group.triggerGracefulShutdown()
        _ = try? await running.value
    }
}
