@testable import DroverCluster
import DroverKernel
import DroverPlugins
import DroverTesting
import Foundation
import Logging
import Synchronization
import Testing

/// The node's one monotonic clock (``NodeClock``, issue 36 item 1), moved by the test: the
/// cut-off judgement that lets a partitioned node's guards end its sessions, tested without a
/// network namespace or a wait (the same rule with real processes and a real partition is
/// `PartitionTests`).
@Suite struct NodeClockTests {
    final class ManualClock: Sendable {
        private let current = Mutex(ContinuousClock.now)
        var now: ContinuousClock.Instant { current.withLock { $0 } }
        func advance(_ seconds: Double) { current.withLock { $0 = $0.advanced(by: .milliseconds(Int(seconds * 1000))) } }
    }

    func runtime(_ clock: ManualClock) throws -> (NodeRuntime, ConfigDirectory) {
        let config = try ConfigDirectory(address: "127.0.0.1", rserver: "auth-none=1\n")
        _ = try config.write("load-balancer", TestCluster.scaledLoadBalancer)
        let logger = Logger(label: "node-clock-test")
        let setup = try NodeSetup(configDirectory: config.path, catalog: .builtin, createKeyIfMissing: false, logger: logger)
        let address = try #require(NodeAddressResolver.resolve(wwwHostName: nil, wwwAddress: "127.0.0.1", wwwPort: config.port))
        return (try NodeRuntime(setup: setup, store: InMemoryRegistryStore(), address: address, logger: logger, clock: NodeClock { clock.now }), config)
    }

    @Test func aNodeThatReachesNeitherTheRegistryNorAPeerIsCutOffAfterItsBound() throws {
        let clock = ManualClock()
        let (runtime, config) = try runtime(clock)
        _ = config
        let bound = NodeRuntime.cutOffBound(heartbeatInterval: runtime.loadBalancer.heartbeatInterval)
        #expect(!runtime.isCutOff && runtime.mayTellGuardsAlive())
        clock.advance(bound - 0.1)
        #expect(!runtime.isCutOff, "cut off before its bound")
        clock.advance(0.2)
        #expect(runtime.isCutOff && !runtime.mayTellGuardsAlive(), "neither answered for \(bound) s")
        // One answer is enough: a peer that can take the sessions, or the registry.
        runtime.peerAnswered()
        #expect(!runtime.isCutOff && runtime.mayTellGuardsAlive())
        clock.advance(bound + 0.1)
        #expect(runtime.isCutOff)
        runtime.registryAnswered()
        #expect(!runtime.isCutOff && runtime.registrySilence == 0)
        clock.advance(2.5)
        #expect(runtime.registrySilence == 2.5)
    }

    /// The route cache reads the node's clock: a route is trusted for its time to live, then
    /// asked of the registry again.
    @Test func theRouteCacheForgetsOnTheNodesClock() async throws {
        let clock = ManualClock()
        let (runtime, config) = try runtime(clock)
        _ = config
        let sessions = SessionManager(runtime: runtime)
        sessions.routes.remember("s1", .remote(host: "127.0.0.2", port: 8787, name: nil), username: "u")
        #expect(sessions.cachedRouteAndActivity("s1", username: "u") != nil)
        clock.advance(sessions.routes.timeToLive / .seconds(1) + 0.1)
        #expect(sessions.cachedRouteAndActivity("s1", username: "u") == nil, "trusted past its time to live")
    }
}
