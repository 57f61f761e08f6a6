import DroverCluster
import DroverKernel
import DroverPlugins
import DroverTesting
import Foundation
import Logging
import Testing

func makeStrategy(_ loadBalancer: String, configDirectory: String = "/tmp") throws -> any BalancerStrategy {
    let config = try LoadBalancerConfiguration(parsing: loadBalancer, path: "load-balancer", baseDirectory: configDirectory,
                                               pluginKeys: PluginCatalog.builtin.loadBalancerPluginKeys)
    let context = PluginContext(configDirectory: configDirectory, dataDirectory: configDirectory, secureCookieKey: nil, logger: Logger(label: "t"))
    return try PluginCatalog.builtin.balancerStrategy(for: config).make(config: config, context: context)
}

func candidateNode(_ id: Int64, load: Double = 0, host: String? = nil) -> NodeRecord {
    NodeRecord(id: id, host: host ?? "node\(id)", ipv4: "127.0.0.\(id)", port: 8787, status: .online, lastSeen: Date(),
               load: LoadAverage(one: load, five: load, fifteen: load), cpus: 2, startedAt: Date(), version: "t",
               configHash: "h", launcherFingerprint: nil)
}

func newRecord(_ user: String) -> SessionRecord {
    let now = Date()
    return SessionRecord(id: Crypto.randomBytes(16).hexString, username: user, ownership: SessionOwnership(node: nil, state: .starting),
                         createdAt: now, lastActive: now, label: nil)
}

/// An in-memory registry with `count` fresh, online nodes (ids 1...count).
func registryWithNodes(_ count: Int) async throws -> InMemoryRegistryStore {
    let store = InMemoryRegistryStore()
    for n in 1...count {
        _ = try await store.registerNode(NodeRegistration(host: "127.0.0.\(n)", ipv4: "127.0.0.\(n)", port: 8787, status: .online,
                                                          cpus: 2, version: "t", configHash: "h", launcherFingerprint: nil))
    }
    return store
}

/// The built-in strategies a conformance suite runs against (custom with a script that picks
/// the last node it is offered).
enum StrategyCase: String, CaseIterable, CustomTestStringConvertible, Sendable {
    case sessions, systemLoad = "system-load", userHash = "user-hash", boundedUserHash = "user-hash (1.25)", custom, randomTwo = "random-two"

    var testDescription: String { rawValue }

    /// The `balancer=` value it selects.
    var strategyName: String { self == .boundedUserHash ? "user-hash" : rawValue }

    func make(_ scripts: TemporaryDirectory) throws -> any BalancerStrategy {
        switch self {
        case .sessions: return try makeStrategy("balancer=sessions\n")
        case .systemLoad: return try makeStrategy("balancer=system-load\n")
        case .userHash: return try makeStrategy("balancer=user-hash\n")
        case .boundedUserHash: return try makeStrategy("balancer=user-hash\nuser-hash-balance-factor=1.25\n")
        case .randomTwo: return try makeStrategy("balancer=random-two\n")
        case .custom:
            try scripts.write("pick-last", "#!/bin/sh\necho \"$DROVER_NODES\" | tr ',' '\\n' | tail -n 1\n", mode: 0o755)
            return try makeStrategy("balancer=custom\ncustom-balancer-script=pick-last\n", configDirectory: scripts.path)
        }
    }
}
