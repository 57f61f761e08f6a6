import DroverCluster
import DroverKernel
import DroverPlugins
import DroverTesting
import Foundation
import Synchronization
import Testing

/// What every balancer strategy must do, through the placement engine and a registry.
@Suite struct BalancerConformanceTests {
    /// README promises that every strategy of the catalog runs through the suite in
    /// `DroverTesting`: the arguments come from the catalog, and each name needs a case that
    /// says how to configure it.
    @Test func everyCatalogStrategyIsCovered() {
        for factory in PluginCatalog.builtin.balancerStrategies {
            #expect(StrategyCase.ofCatalog.contains { $0.strategyName == factory.name }, "add a StrategyCase for '\(factory.name)'")
        }
    }

    @Test(arguments: StrategyCase.ofCatalog, BalancerConformance.Check.allCases)
    func conforms(strategyCase: StrategyCase, check: BalancerConformance.Check) async throws {
        let scripts = TemporaryDirectory()
        try await BalancerConformance.run(check) { try strategyCase.make(scripts) }
    }

    @Test func anUnreachableNodeIsExcludedWithItsAge() async throws {
        let clock = InProcessNode.TestClock()
        let store = InMemoryRegistryStore(clock: { clock.now })
        for n in 1...2 {
            _ = try await store.registerNode(NodeRegistration(host: "h\(n)", ipv4: nil, port: 1, status: .online, cpus: 1, version: "t",
                                                              configHash: "h", launcherFingerprint: nil))
        }
        clock.advance(20)
        _ = try await store.heartbeat(node: 2, load: .zero)
        let engine = PlacementEngine(store: store, strategy: try makeStrategy(""), heartbeatInterval: 5, diagnostics: .off)
        let survey = try await engine.survey()
        #expect(survey.candidates.map(\.node.id) == [2])
        #expect(survey.excluded.first?.reason == "Unreachable (last seen 20 s ago)")
    }

    /// While a cluster is upgraded, new sessions go to the nodes of the newest cluster protocol
    /// (whatever the balancer), so sessions drift towards them; the older nodes take sessions
    /// only when every new one is full, and `drover place` says why they are passed over.
    @Test(arguments: ["sessions", "system-load", "user-hash", "random-two"])
    func newSessionsGoToTheNodesOfTheNewestProtocolUntilTheyAreFull(balancer: String) async throws {
        let store = InMemoryRegistryStore()
        for (n, protocolVersion) in [(1, 1), (2, 2), (3, 1), (4, 2)] {
            _ = try await store.registerNode(NodeRegistration(host: "h\(n)", ipv4: "10.0.0.\(n)", port: 1, status: .online, cpus: 1,
                                                              version: protocolVersion == 2 ? "next" : "this", configHash: "h", launcherFingerprint: nil,
                                                              protocolVersion: protocolVersion))
        }
        let engine = PlacementEngine(store: store, strategy: try makeStrategy("balancer=\(balancer)\n"), heartbeatInterval: 5, diagnostics: .off,
                                     maxSessionsPerNode: 3)
        let survey = try await engine.survey()
        #expect(survey.candidates.map(\.node.id) == [2, 4])
        #expect(survey.excluded.map(\.node.id) == [1, 3])
        #expect(survey.excluded.first?.reason == "of an older release (Drover this, cluster protocol 1) while nodes of protocol 2 take new sessions; "
                + "it takes them when those are full")
        var placed: [Int64] = []
        for n in 0..<8 { placed.append(try await engine.placeNew(BalancerConformance.newSessionRecord(user: "user\(n)")).0.ownership.node!) }
        #expect(placed.prefix(6).allSatisfy { $0 == 2 || $0 == 4 }, "\(placed)")
        #expect(placed.suffix(2).allSatisfy { $0 == 1 || $0 == 3 }, "the new nodes were full: \(placed)")
    }

    @Test func everyRealPlacementIsExplainedInTheDiagnostics() async throws {
        let sink = InMemoryDiagnosticsSink()
        let store = try await BalancerConformance.registryWithNodes(3)
        _ = try await store.setNodeStatus(.offlineMode, node: 3)
        let engine = PlacementEngine(store: store, strategy: try makeStrategy(""), heartbeatInterval: 5, diagnostics: Diagnostics(sink: sink))
        let (stored, _) = try await engine.placeNew(BalancerConformance.newSessionRecord(user: "alice"))
        let event = try #require(sink.events.first)
        #expect(event.name == "placement")
        #expect(event.fields.map(\.key) == ["session", "user", "kind", "balancer", "chosen", "scores", "excluded", "ms"])
        #expect(event.fields[0].value == stored.id && event.fields[1].value == "alice" && event.fields[2].value == "default" && event.fields[3].value == "sessions")
        #expect(event.fields[5].value == "1: 0 sessions, load 0.0; 2: 0 sessions, load 0.0")
        #expect(event.fields[6].value == "3: in offline mode")
        let took = try #require(Double(event.fields[7].value), "placement time in ms: \(event.fields[7].value)")
        #expect(took > 0 && took < 10_000)
    }
}
