import DroverKernel
import DroverTesting
import Foundation
import Synchronization
import Testing

/// `drover drain` (issue 18, item 3) and `GET /ready`, against two real nodes.
@Suite(.serialized) struct DrainTests {
    func ready(_ node: ConfigDirectory) async throws -> Int {
        try await RawHTTPClient.request(host: node.address, port: node.port, path: "/ready").status
    }

    /// Two running nodes serving the demo session with `auth-none`: node 0 is the one the
    /// tests drain, node 1 the one kept, each with its id.
    struct TwoNodes {
        let cluster: TestCluster
        let drained: ConfigDirectory, kept: ConfigDirectory
        let drainedID: Int64, keptID: Int64
    }

    func twoNodes() async throws -> TwoNodes {
        let cluster = try await TestCluster(addresses: ["127.0.0.1", "127.0.0.2"], backend: .sqlite,
                                            rserver: "session-command=\(demoCommand)\nauth-none=1\n")
        for index in 0..<2 { try await cluster.start(index) }
        let ids = try await cluster.statuses().reduce(into: [String: Int64]()) { $0[$1.host] = $1.id }
        let (drained, kept) = (cluster.nodes[0], cluster.nodes[1])
        return TwoNodes(cluster: cluster, drained: drained, kept: kept,
                        drainedID: try #require(ids[drained.address]), keptID: try #require(ids[kept.address]))
    }

    @Test func aDrainMovesEverySessionRunningWithItsStateAndReadySaysTheNodeIsOut() async throws {
        let nodes = try await twoNodes()
        let (cluster, drained, kept, drainedID) = (nodes.cluster, nodes.drained, nodes.kept, nodes.drainedID)
        // Six sessions, spread over both nodes, each counted once.
        for _ in 0..<6 {
            let created = try await RawHTTPClient.request("POST", host: kept.address, port: kept.port, path: "/api/sessions")
            let id = try #require(json(created)["id"] as? String, "\(created.status) \(created.body)")
            #expect(count(try await RawHTTPClient.request("POST", host: kept.address, port: kept.port, path: "/s/\(id)/count")) == 1)
        }
        let onDrained = try await listedSessions(kept).filter { $0.value.node == drainedID }.map(\.key)
        #expect(onDrained.count >= 2, "the balancer put sessions on both nodes")
        #expect(try await ready(drained) == 200)

        let result = try await cluster.drover(0, ["drain"])
        #expect(result.status == 0, "\(result.stdout)\n\(result.stderr)")
        #expect(result.stdout.contains("Moved \(onDrained.count) of \(onDrained.count) session(s)"), "\(result.stdout)")
        // Out of rotation for an external balancer, yet alive.
        #expect(try await ready(drained) == 503)
        #expect(try await RawHTTPClient.request(host: drained.address, port: drained.port, path: "/health-check").status == 200)
        // Each moved session runs on the other node, with its state: the next count is 2.
        let after = try await listedSessions(kept)
        for id in onDrained {
            #expect(after[id]?.state == "running" && after[id]?.node == nodes.keptID, "\(id): \(String(describing: after[id]))")
            #expect(count(try await RawHTTPClient.request("POST", host: kept.address, port: kept.port, path: "/s/\(id)/count")) == 2)
        }
        try await Task.sleep(for: .seconds(1.2))
        let audit = try await cluster.drover(0, ["audit"])
        for id in onDrained { #expect(audit.stdout.contains("session-move  \(id)"), "\(audit.stdout)") }
        #expect(try await cluster.drover(0, ["online"]).status == 0)
        try await cluster.eventually("node 0 ready again") { try await ready(drained) == 200 }

        // With nowhere to go, a drain fails saying why, and the session is kept (suspended).
        #expect(try await cluster.drover(1, ["offline"]).status == 0)
        try await cluster.eventually("node 1 out of placement") { try await ready(kept) == 503 }
        let created = try await RawHTTPClient.request("POST", host: drained.address, port: drained.port, path: "/api/sessions")
        let stuck = try #require(json(created)["id"] as? String, "\(created.status) \(created.body)")
        let failed = try await cluster.drover(0, ["drain"])
        #expect(failed.status == 1, "\(failed.stdout)\n\(failed.stderr)")
        #expect(failed.stdout.contains("not moved: \(stuck)") && failed.stderr.contains("could not be moved"), "\(failed.stdout)\n\(failed.stderr)")
        #expect(try await listedSessions(drained)[stuck]?.state == "suspended")
        for index in 0..<2 { #expect(try await cluster.stop(index) == 0) }
    }

    /// A WebSocket whose session moves away, or whose node stops, ends with 1012 (Service
    /// Restart), the code README tells clients to reconnect on; reconnected, it reaches the
    /// session where it runs now.
    @Test func webSocketsEndWithTheRestartCodeWhenTheirSessionMovesOrTheirNodeStops() async throws {
        let nodes = try await twoNodes()
        let (cluster, drained, kept) = (nodes.cluster, nodes.drained, nodes.kept)
        var placed: [Int64: String] = [:]
        for _ in 0..<8 where placed.count < 2 {
            let created = try await RawHTTPClient.request("POST", host: kept.address, port: kept.port, path: "/api/sessions")
            let id = try #require(json(created)["id"] as? String, "\(created.status) \(created.body)")
            if let node = try await listedSessions(kept)[id]?.node, placed[node] == nil { placed[node] = id }
        }
        let moving = try #require(placed[nodes.drainedID], "a session on the node drained")
        let staying = try #require(placed[nodes.keptID], "a session on the node kept")
        // One WebSocket through the kept node to the session that moves; one through the node
        // drained (and later stopped) to the session that stays.
        let toMoving = try await RawWebSocket.Conversation.open(host: kept.address, port: kept.port, path: "/s/\(moving)/echo")
        let throughDrained = try await RawWebSocket.Conversation.open(host: drained.address, port: drained.port, path: "/s/\(staying)/echo")
        #expect(await toMoving.echo("before") == .echoed("before"))
        #expect(await throughDrained.echo("before") == .echoed("before"))

        let result = try await cluster.drover(0, ["drain"])
        #expect(result.status == 0, "\(result.stdout)\n\(result.stderr)")
        #expect(await toMoving.next() == .closed(code: 1012))
        let reconnected = try await RawWebSocket.Conversation.open(host: kept.address, port: kept.port, path: "/s/\(moving)/echo")
        #expect(await reconnected.echo("after the move") == .echoed("after the move"))
        // The drained node still carries its clients' WebSockets, until it stops.
        #expect(await throughDrained.echo("while drained") == .echoed("while drained"))
        async let ended = throughDrained.next()
        #expect(try await cluster.stop(0) == 0)
        #expect(await ended == .closed(code: 1012))
        let again = try await RawWebSocket.Conversation.open(host: kept.address, port: kept.port, path: "/s/\(staying)/echo")
        #expect(await again.echo("after the stop") == .echoed("after the stop"))
        #expect(try await cluster.stop(1) == 0)
    }

    /// Users keep working while their node drains: clients keep counting through the other node.
    /// No answered count may be lost (the demo session answered counts between its save and its
    /// exit), and every session is moved. A request may also resume a suspended session before
    /// the drain places it, which the drain counts as moved; that race shows in the release
    /// build's benchmark (Benchmarks/drain) more than here.
    @Test func aDrainWhileItsUsersKeepWorkingMovesEverySessionAndLosesNoCount() async throws {
        let nodes = try await twoNodes()
        let (cluster, kept, drainedID) = (nodes.cluster, nodes.kept, nodes.drainedID)
        for _ in 0..<8 {
            let created = try await RawHTTPClient.request("POST", host: kept.address, port: kept.port, path: "/api/sessions")
            #expect(created.status == 201, "\(created.status) \(created.body)")
        }
        let onDrained = try await listedSessions(kept).filter { $0.value.node == drainedID }.map(\.key)
        #expect(onDrained.count >= 3, "the balancer put sessions on both nodes")
        let working = Mutex(true)
        // Three clients per session, so one is always about to ask when the session is saved.
        async let answers: [Int] = concurrently(3 * onDrained.count) { client in
            let index = client % onDrained.count
            var answered = 0
            while working.withLock({ $0 }) {
                let counted = try? await RawHTTPClient.request("POST", host: kept.address, port: kept.port, path: "/s/\(onDrained[index])/count")
                if counted?.status == 200 { answered += 1 }
            }
            return answered
        }
        try await Task.sleep(for: .seconds(0.5))
        let result = try await cluster.drover(0, ["drain"])
        try await Task.sleep(for: .seconds(0.5))
        working.withLock { $0 = false }
        let perClient = await answers
        let counts = onDrained.indices.map { index in stride(from: index, to: perClient.count, by: onDrained.count).reduce(0) { $0 + perClient[$1] } }
        #expect(result.status == 0, "\(result.stdout)\n\(result.stderr)")
        #expect(result.stdout.contains("Moved \(onDrained.count) of \(onDrained.count) session(s)"), "\(result.stdout)")
        let after = try await listedSessions(kept)
        for (index, id) in onDrained.enumerated() {
            #expect(after[id]?.state == "running" && after[id]?.node == nodes.keptID, "\(id): \(String(describing: after[id]))")
            let now = try await RawHTTPClient.request(host: kept.address, port: kept.port, path: "/s/\(id)/count")
            #expect(count(now) == counts[index], "\(id): \(counts[index]) counts answered")
        }
        for index in 0..<2 { #expect(try await cluster.stop(index) == 0) }
    }
}
