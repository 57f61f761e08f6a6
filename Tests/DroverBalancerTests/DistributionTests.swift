import DroverCluster
import DroverKernel
import DroverTesting
import Foundation
import Testing

@Suite struct DistributionTests {
    @Test func sessionsSpreadsNineHundredNinetyNinePlacementsEvenly() async throws {
        let store = try await BalancerConformance.registryWithNodes(3)
        let engine = PlacementEngine(store: store, strategy: try makeStrategy("balancer=sessions\n"), heartbeatInterval: 5, diagnostics: .off)
        for n in 0..<999 { _ = try await engine.placeNew(BalancerConformance.newSessionRecord(user: "user\(n)")) }
        let counts = try await store.activeSessionCounts()
        #expect(counts.values.max()! - counts.values.min()! <= 1, "\(counts)")
        #expect(counts.values.reduce(0, +) == 999)
    }

    @Test func concurrentPlacementsInOneProcessDoNotHerd() async throws {
        let store = try await BalancerConformance.registryWithNodes(3)
        let engine = PlacementEngine(store: store, strategy: try makeStrategy(""), heartbeatInterval: 5, diagnostics: .off)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for n in 0..<300 { group.addTask { _ = try await engine.placeNew(BalancerConformance.newSessionRecord(user: "user\(n)")) } }
            try await group.waitForAll()
        }
        let counts = try await store.activeSessionCounts()
        #expect(counts == [1: 100, 2: 100, 3: 100])
    }

    func assignments(_ users: Int, nodes: [Int64]) throws -> [Int64] {
        let candidates = nodes.map { PlacementCandidate(node: candidateNode($0, host: "10.0.0.\($0)"), activeSessions: 0) }
        let strategy = try makeStrategy("balancer=user-hash\n")
        return try (0..<users).map { try strategy.choose(PlacementRequest(username: "user\($0)"), among: candidates, prepared: .none).chosen }
    }

    @Test func userHashIsStableAndMovesOnlyWhatMustMove() async throws {
        let three = try assignments(10_000, nodes: [1, 2, 3])
        #expect(try assignments(10_000, nodes: [1, 2, 3]) == three, "the same users land on the same nodes")
        let shares = Dictionary(grouping: three, by: { $0 }).mapValues(\.count)
        #expect(shares.values.allSatisfy { $0 > 2_900 && $0 < 3_800 }, "roughly even: \(shares)")

        let four = try assignments(10_000, nodes: [1, 2, 3, 4])
        let moved = zip(three, four).filter { $0 != $1 }
        #expect(Double(moved.count) / 10_000 <= 0.25 + 0.05, "\(moved.count) users moved")
        #expect(moved.allSatisfy { $0.1 == 4 }, "users only move to the new node")

        let withoutTwo = try assignments(10_000, nodes: [1, 3])
        for (before, after) in zip(three, withoutTwo) {
            if before != 2 { #expect(before == after) }
        }
        #expect(zip(three, withoutTwo).filter { $0 != $1 }.count == three.filter { $0 == 2 }.count, "only node 2's users move")
    }

    @Test func userHashWithABalanceFactorSendsAUserPastAnOverloadedFirstChoice() async throws {
        let strategy = try makeStrategy("balancer=user-hash\nuser-hash-balance-factor=1.25\n")
        let nodes = [1, 2, 3].map { candidateNode(Int64($0), host: "10.0.0.\($0)") }
        let user = "alice"
        let idle = try strategy.choose(PlacementRequest(username: user), among: nodes.map { PlacementCandidate(node: $0, activeSessions: 4) }, prepared: .none)
        let first = idle.chosen
        #expect(idle.note == nil)
        let loaded = nodes.map { PlacementCandidate(node: $0, activeSessions: $0.id == first ? 10 : 4) }
        let decision = try strategy.choose(PlacementRequest(username: user), among: loaded, prepared: .none)
        #expect(decision.chosen != first)
        #expect(decision.note?.contains("over 1.25 x the average") == true)
        #expect(throws: ConfigurationError.self) { try makeStrategy("balancer=user-hash\nuser-hash-balance-factor=0.5\n") }
        #expect(throws: ConfigurationError.self) { try makeStrategy("balancer=user-hash\nuser-hash-balance-factor=lots\n") }
    }

    @Test func systemLoadPicksTheLowestFiveMinuteLoad() async throws {
        let strategy = try makeStrategy("balancer=system-load\n")
        let decision = try strategy.choose(PlacementRequest(username: "u"), among: [
            PlacementCandidate(node: candidateNode(1, load: 0.9), activeSessions: 0),
            PlacementCandidate(node: candidateNode(2, load: 0.1), activeSessions: 9),
            PlacementCandidate(node: candidateNode(3, load: 0.5), activeSessions: 0),
        ], prepared: .none)
        #expect(decision.chosen == 2)
    }

    @Test func randomTwoStaysNearlyEven() async throws {
        let store = try await BalancerConformance.registryWithNodes(3)
        let engine = PlacementEngine(store: store, strategy: try makeStrategy("balancer=random-two\n"), heartbeatInterval: 5, diagnostics: .off)
        for n in 0..<300 { _ = try await engine.placeNew(BalancerConformance.newSessionRecord(user: "user\(n)")) }
        let counts = try await store.activeSessionCounts()
        #expect(counts.values.max()! - counts.values.min()! <= 10, "\(counts)")
    }
}
