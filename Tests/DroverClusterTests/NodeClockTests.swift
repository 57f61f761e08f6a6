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
    func runtime(_ clock: ManualClock, store: any RegistryStore = InMemoryRegistryStore(), address: String = "127.0.0.1",
                 loadBalancer: String = TestCluster.scaledLoadBalancer) throws -> (NodeRuntime, ConfigDirectory) {
        let config = try ConfigDirectory(address: address, rserver: "auth-none=1\n")
        _ = try config.write("load-balancer", loadBalancer)
        let logger = Logger(label: "node-clock-test")
        let setup = try NodeSetup(configDirectory: config.path, catalog: .builtin, createKeyIfMissing: false, logger: logger)
        let node = try #require(NodeAddressResolver.resolve(wwwHostName: nil, wwwAddress: address, wwwPort: config.port))
        return (try NodeRuntime(setup: setup, store: store, address: node, logger: logger, clock: clock.nodeClock), config)
    }

    /// The node's loops run start to start on its clock: a slow run shortens the wait after it,
    /// a changed interval (a reload) applies from the next wait, and cancelling ends the wait.
    @Test(.timeLimit(.minutes(1))) func aLoopRunsStartToStartOnTheNodesClock() async throws {
        let clock = ManualClock()
        let start = clock.now
        let runs = Mutex<[ContinuousClock.Instant]>([])
        let interval = Mutex(2.0)
        let loop = Task {
            await repeatUntilShutdown(on: clock.nodeClock, every: { interval.withLock { $0 } }) {
                let count = runs.withLock { $0.append(clock.now); return $0.count }
                if count == 2 { clock.advance(1.5) }  // a run that takes 1.5 s
            }
        }
        defer { loop.cancel() }
        #expect(try await clock.nextSleep() == start + .seconds(2))
        #expect(runs.withLock { $0.isEmpty }, "ran before its interval")
        clock.advance(2)
        #expect(try await clock.nextSleep() == start + .seconds(4))
        clock.advance(2)
        // The second run started at 4 and took until 5.5: the next starts at 6, not at 7.5.
        #expect(try await clock.nextSleep() == start + .seconds(6))
        interval.withLock { $0 = 5 }
        clock.advance(0.5)
        #expect(try await clock.nextSleep() == start + .seconds(11))
        #expect(runs.withLock { $0 } == [start + .seconds(2), start + .seconds(4), start + .seconds(6)])
        loop.cancel()
        await loop.value
        #expect(clock.sleeping == 0)
    }

    /// Membership's heartbeat and failure detection pace themselves on the node's clock, at the
    /// operator's default `heartbeat-interval` (5 s, unscaled: nothing waits for it). The node
    /// beats once an interval, and a peer that fell silent is marked `Unreachable` at the first
    /// check after its row is `heartbeat-interval + 1` seconds old, not before.
    @Test(.timeLimit(.minutes(1))) func membershipBeatsAndFindsASilentPeerOnTheNodesClock() async throws {
        let registryClock = InProcessNode.TestClock()
        let store = InProcessNode.sharedRegistry(clock: registryClock)
        let clock = ManualClock()
        let (node, config) = try runtime(clock, store: store, address: "127.0.0.1", loadBalancer: "")
        // The peer joins and never beats; nothing listens at its address, so probing it fails.
        let (peer, peerConfig) = try runtime(ManualClock(), store: store, address: "127.0.0.2", loadBalancer: "")
        _ = (config, peerConfig)
        let membership = ClusterMembership(runtime: node)
        let peerRow = try await ClusterMembership(runtime: peer).join()
        let row = try await membership.join()
        let interval = Double(node.loadBalancer.heartbeatInterval)
        #expect(interval == 5)
        let services = Task {
            await withTaskGroup(of: Void.self) { group in
                group.addTask { try? await HeartbeatService(membership: membership).run() }
                group.addTask { try? await FailureDetectorService(membership: membership).run() }
            }
        }
        defer { services.cancel() }
        // Three loops: the beat (every 5 s), failure detection and the cut-off check (every 2.5 s).
        for _ in 0..<3 { _ = try await clock.nextSleep() }
        func unreachable(_ id: Int64) async throws -> Bool { try await store.nodes().first { $0.id == id }?.unreachableSince != nil }
        var elapsed = 0.0
        while elapsed < 10 {
            registryClock.advance(2.5)
            clock.advance(2.5)
            elapsed += 2.5
            let due = elapsed.truncatingRemainder(dividingBy: interval) == 0 ? 3 : 2
            for _ in 0..<due { _ = try await clock.nextSleep() }
            // The peer's row is `elapsed` seconds old; the rule is more than interval + 1.
            #expect(try await unreachable(peerRow.id) == (elapsed > interval + 1), "after \(elapsed) s")
            let own = try #require(try await store.nodes().first { $0.id == row.id })
            let lastBeat = (elapsed / interval).rounded(.down) * interval
            #expect(own.status == .online && registryClock.now.timeIntervalSince(own.lastSeen) == elapsed - lastBeat, "after \(elapsed) s")
        }
        services.cancel()
        await services.value
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
