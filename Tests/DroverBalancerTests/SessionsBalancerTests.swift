import DroverKernel
import DroverPlugins
import DroverTesting
import Foundation
import Logging
import Testing

@Suite struct SessionsBalancerTests {
    func node(_ id: Int64, load: Double = 0) -> NodeRecord {
        NodeRecord(id: id, host: "n\(id)", ipv4: "127.0.0.\(id)", port: 8787, status: .online, lastSeen: Date(),
                   load: LoadAverage(one: load, five: load, fifteen: load), cpus: 2, startedAt: Date(), version: "t",
                   configHash: "h", launcherFingerprint: nil)
    }

    func strategy() throws -> any BalancerStrategy {
        let context = PluginContext(configDirectory: "/", dataDirectory: "/", secureCookieKey: nil, logger: Logger(label: "t"))
        return try PluginCatalog.builtin.balancerStrategy(for: LoadBalancerConfiguration()).make(config: LoadBalancerConfiguration(), context: context)
    }

    @Test func picksFewestSessionsThenLowerLoadThenLowerID() async throws {
        let s = try strategy()
        let fewest = try await s.place(PlacementRequest(username: "u"), among: [
            PlacementCandidate(node: node(1), activeSessions: 3),
            PlacementCandidate(node: node(2, load: 0.9), activeSessions: 1),
            PlacementCandidate(node: node(3), activeSessions: 2),
        ])
        #expect(fewest.chosen == 2)
        #expect(fewest.scores.map(\.value) == [3, 1, 2])
        let byLoad = try await s.place(PlacementRequest(username: "u"), among: [
            PlacementCandidate(node: node(1, load: 0.5), activeSessions: 1),
            PlacementCandidate(node: node(2, load: 0.2), activeSessions: 1),
        ])
        #expect(byLoad.chosen == 2)
        let byID = try await s.place(PlacementRequest(username: "u"), among: [
            PlacementCandidate(node: node(7), activeSessions: 0),
            PlacementCandidate(node: node(4), activeSessions: 0),
        ])
        #expect(byID.chosen == 4)
    }

    @Test func noCandidatesIsAnError() async throws {
        let s = try strategy()
        await #expect(throws: PlacementError.noCandidates) { try await s.place(PlacementRequest(username: "u"), among: []) }
    }
}
