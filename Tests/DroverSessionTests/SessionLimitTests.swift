import DroverKernel
import DroverTesting
import Foundation
import Testing

/// `max-sessions-per-node` and `max-sessions-per-user` (issue 18, item 2), against real nodes.
@Suite struct SessionLimitTests {
    func create(_ node: ConfigDirectory) async throws -> RawHTTPClient.Response {
        try await RawHTTPClient.request("POST", host: node.address, port: node.port, path: "/api/sessions")
    }

    @Test func aFullNodeIsLeftOutOfPlacementSayingSo() async throws {
        let cluster = try await TestCluster(addresses: ["127.0.0.1", "127.0.0.2"], backend: .sqlite,
                                            loadBalancer: TestCluster.scaledLoadBalancer + "max-sessions-per-node=2\n",
                                            rserver: "session-command=\(demoCommand)\nauth-none=1\n")
        for index in 0..<2 { try await cluster.start(index) }
        var placed: [Int64: Int] = [:]
        for _ in 0..<4 {
            let answer = try await create(cluster.nodes[0])
            #expect(answer.status == 201, "\(answer.status) \(answer.body)")
            if let node = (json(answer)["node"] as? NSNumber)?.int64Value { placed[node, default: 0] += 1 }
        }
        #expect(placed.values.sorted() == [2, 2], "\(placed)")
        // Both full: a fifth has no node, and the answer says why.
        let refused = try await create(cluster.nodes[1])
        #expect(refused.status == 503 && refused.body.contains("full (2 sessions, max-sessions-per-node=2)"), "\(refused.status) \(refused.body)")
        let place = try await cluster.drover(0, ["place", "--user", "alice"])
        #expect(place.status == 1 && (place.stdout + place.stderr).contains("full"), "\(place.stdout)\n\(place.stderr)")
        for index in 0..<2 { #expect(try await cluster.stop(index) == 0) }
    }

    @Test func oneSessionPastTheUsersLimitIsRefusedWith429() async throws {
        let cluster = try await TestCluster(addresses: ["127.0.0.1"], backend: .sqlite,
                                            rserver: "session-command=\(demoCommand)\nauth-none=1\nmax-sessions-per-user=2\n")
        try await cluster.start(0)
        let node = cluster.nodes[0]
        var ids: [String] = []
        for _ in 0..<2 {
            let answer = try await create(node)
            ids.append(try #require(json(answer)["id"] as? String, "\(answer.status) \(answer.body)"))
        }
        // Suspended sessions count too.
        #expect(try await RawHTTPClient.request("POST", host: node.address, port: node.port, path: "/api/sessions/\(ids[0])/suspend").status < 300)
        let refused = try await create(node)
        #expect(refused.status == 429 && refused.body.contains("max-sessions-per-user=2"), "\(refused.status) \(refused.body)")
        #expect(refused.header("Retry-After") == nil, "waiting does not help")
        // One quit, one more may start.
        #expect(try await RawHTTPClient.request("DELETE", host: node.address, port: node.port, path: "/api/sessions/\(ids[1])").status < 300)
        #expect(try await create(node).status == 201)
        #expect(try await cluster.stop(0) == 0)
    }

    /// Issue 34, item 9: twelve starts at once by one user, split over two nodes, with
    /// `max-sessions-per-user=2`: two sessions, ten refusals (the count was read, then the session
    /// placed, with nothing in between: nine sessions were made). On SQLite and PostgreSQL.
    @Test(arguments: PostgresTestServer.shouldRun ? ["sqlite", "postgresql"] : ["sqlite"])
    func aBurstOfStartsAcrossNodesStaysWithinTheUsersLimit(backend name: String) async throws {
        let backend: TestCluster.Backend = name == "sqlite" ? .sqlite : .postgresql(try PostgresTestServer.required())
        let cluster = try await TestCluster(addresses: ["127.0.0.1", "127.0.0.2"], backend: backend,
                                            rserver: "session-command=\(demoCommand)\nauth-none=1\nmax-sessions-per-user=2\n")
        for index in 0..<2 { try await cluster.start(index) }
        let answers = await concurrently(12) { index in (try? await self.create(cluster.nodes[index % 2]))?.status ?? 0 }
        #expect(answers.filter { $0 == 201 }.count == 2 && answers.filter { $0 == 429 }.count == 10, "\(answers)")
        let listed = try await RawHTTPClient.request(host: cluster.nodes[0].address, port: cluster.nodes[0].port, path: "/api/sessions")
        #expect((try JSONSerialization.jsonObject(with: Data(listed.body.utf8)) as? [Any])?.count == 2, "\(listed.body)")
        for index in 0..<2 { #expect(try await cluster.stop(index) == 0) }
    }
}
