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
    return try PluginCatalog.builtin.makeBalancer(config, context: context)
}

func candidateNode(_ id: Int64, load: Double = 0, host: String? = nil) -> NodeRecord {
    NodeRecord(id: id, host: host ?? "node\(id)", ipv4: "127.0.0.\(id)", port: 8787, status: .online, lastSeen: Date(),
               load: LoadAverage(one: load, five: load, fifteen: load), cpus: 2, startedAt: Date(), version: "t",
               configHash: "h", launcherFingerprint: nil)
}

/// The built-in strategies a conformance suite runs against (custom with a script that picks
/// the last node it is offered).
enum StrategyCase: String, CaseIterable, CustomTestStringConvertible, Sendable {
    case sessions, systemLoad = "system-load", userHash = "user-hash", boundedUserHash = "user-hash (1.25)", custom, randomTwo = "random-two"

    var testDescription: String { rawValue }

    /// The cases of the catalog's strategies, in the catalog's order: the suite's arguments.
    static var ofCatalog: [StrategyCase] {
        PluginCatalog.builtin.balancerStrategies.flatMap { factory in allCases.filter { $0.strategyName == factory.name } }
    }

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
