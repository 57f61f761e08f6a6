public import DroverKernel
import Foundation
public import Logging
import Synchronization

/// The running node's shared state: what start-up established, and what a reload or the offline
/// flag changes while it runs. Every part of the node reads it; only ``ClusterMembership``
/// changes it.
public final class NodeRuntime: Sendable {
    public let configuration: DroverConfiguration
    public let key: SecureCookieKey
    public let store: any RegistryStore
    public let catalog: PluginCatalog
    public let address: NodeAddress
    /// The protocol this node speaks, part of the cluster's definition.
    public let clusterProtocol: ClusterProtocol
    public let logger: Logger
    /// Refuses replayed node-to-node requests.
    public let replayGuard = ReplayGuard()

    struct State {
        var loadBalancer: LoadBalancerConfiguration
        var diagnostics: Diagnostics
        var balancer: any BalancerStrategy
        var client: NodeClient
        var offlineMode: Bool
        var nodeID: Int64?
        var view: [NodeRecord] = []
        var viewRefreshedAt = Date.distantPast
    }

    private let state: Mutex<State>

    public init(setup: NodeSetup, store: any RegistryStore, address: NodeAddress, logger: Logger) throws {
        configuration = setup.configuration
        key = setup.key
        self.store = store
        catalog = setup.catalog
        self.address = address
        self.logger = logger
        let lb = setup.configuration.effectiveLoadBalancer
        clusterProtocol = ClusterProtocol(sslEnabled: setup.configuration.server.sslEnabled, verifySSLCerts: lb.verifySSLCerts)
        let balancer = try setup.catalog.balancerStrategy(for: lb).make(config: lb, context: Self.context(setup.configuration, setup.key, logger))
        state = Mutex(State(loadBalancer: lb, diagnostics: setup.diagnostics, balancer: balancer,
                            client: try NodeClient(key: setup.key, protocol: clusterProtocol, timeoutSeconds: lb.timeout),
                            offlineMode: FileManager.default.fileExists(atPath: setup.configuration.offlineFlagFile)))
    }

    static func context(_ configuration: DroverConfiguration, _ key: SecureCookieKey, _ logger: Logger) -> PluginContext {
        PluginContext(configDirectory: configuration.directory, dataDirectory: configuration.server.dataDirectory,
                      secureCookieKey: key, logger: logger)
    }

    public var loadBalancer: LoadBalancerConfiguration { state.withLock { $0.loadBalancer } }
    public var diagnostics: Diagnostics { state.withLock { $0.diagnostics } }
    public var balancer: any BalancerStrategy { state.withLock { $0.balancer } }
    public var client: NodeClient { state.withLock { $0.client } }
    public var offlineMode: Bool { state.withLock { $0.offlineMode } }
    /// This node's row id, once it has joined.
    public var nodeID: Int64? { state.withLock { $0.nodeID } }
    /// The node rows as last read from the registry.
    public var view: [NodeRecord] { state.withLock { $0.view } }
    var viewAge: TimeInterval { state.withLock { Date().timeIntervalSince($0.viewRefreshedAt) } }

    func update(_ body: (inout State) -> Void) {
        state.withLock { body(&$0) }
    }
}
