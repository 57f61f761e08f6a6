import DroverKernel
import DroverTesting
import DroverCluster
import Foundation
import Testing

/// A request for another node's session goes there on a connection that node joins to the
/// session once it has verified a signed opening (README, "Session hops"): the owner does no HTTP
/// work for the requests that follow, and the opening is the hop's only credential.
@Suite struct SessionHopTests {
    /// The opening as a node sends it (the wire format of docs/PROTOCOL.md, built here from
    /// the contract, not from the node's code): signed over `proxy-splice\n<user>`.
    static func opening(session id: String, user: String, destination: String, purpose: String = "proxy-splice",
                        key: String = TestCluster.defaultKey) -> String {
        let path = "/s/\(id)/"
        var text = "GET \(path) HTTP/1.1\r\nHost: \(destination)\r\nConnection: Upgrade\r\nUpgrade: drover-session\r\n"
            + "X-Drover-Hop: 1\r\nX-Drover-Hop-User: \(user)\r\n"
        for (name, value) in InternalRequestSignature.headers(method: "GET", path: path, body: Array("\(purpose)\n\(user)".utf8),
                                                              destination: destination, key: SecureCookieKey(bytes: Array(key.utf8))) {
            text += "\(name): \(value)\r\n"
        }
        return text + "\r\n"
    }

    @Test func aHopIsOpenedOnceCarriesTheSessionsTrafficAndEndsWithTheSession() async throws {
        let cluster = try await TestCluster(addresses: ["127.0.0.1", "127.0.0.2"], backend: .sqlite,
                                            rserver: "session-command=\(demoCommand)\nauth-none=1\n")
        try await cluster.start(0)
        try await cluster.start(1)
        let (id, owner) = try #require(try await startSessions(cluster, count: 1).first)
        let (home, other) = (cluster.nodes[owner], cluster.nodes[1 - owner])
        // Through the other node, one keep-alive connection: every request reaches the session.
        let client = try await RawHTTPClient.KeepAlive(host: other.address, port: other.port)
        for expected in 1...3 {
            let answer = try await client.request("POST", path: "/s/\(id)/count")
            #expect(count(answer) == expected, "\(answer.status) \(answer.body)")
        }

        // An opening signed with the cluster's key, for this node and the session's user: 101,
        // and what follows on the connection is the session's, as it is.
        let user = SystemUsers.currentName
        let destination = "\(home.address):\(home.port)"
        let opening = Self.opening(session: id, user: user, destination: destination)
        let hop = try await RawHTTPClient.KeepAlive(host: home.address, port: home.port)
        let accepted = try await hop.exchange(opening)
        #expect(accepted.status == 101, "\(accepted.status) \(accepted.body)")
        #expect(accepted.header("Upgrade") == "drover-session")
        for expected in 4...5 {
            let answer = try await hop.request("POST", path: "/s/\(id)/count")
            #expect(count(answer) == expected, "\(answer.status) \(answer.body)")
        }

        // The same opening again (captured and replayed): refused.
        let replayed = try await RawHTTPClient.KeepAlive(host: home.address, port: home.port).exchange(opening)
        #expect(replayed.status == 403 && replayed.body.contains("replayed"), "\(replayed.status) \(replayed.body)")
        // Signed for a plain hop's purpose, with another key, or for another node: refused.
        for (forged, why) in [(Self.opening(session: id, user: user, destination: destination, purpose: "proxy-hop"), "signed as a plain hop"),
                              (Self.opening(session: id, user: user, destination: destination, key: "another-key-0123456789abcdefghij"),
                               "signed with another key"),
                              (Self.opening(session: id, user: user, destination: "\(other.address):\(other.port)"), "signed for the other node")] {
            let refused = try await RawHTTPClient.KeepAlive(host: home.address, port: home.port).exchange(forged)
            #expect(refused.status == 403, "\(why): \(refused.status) \(refused.body)")
        }
        // A hop header on anything but an opening, signed as the plain hops of earlier versions
        // were: refused (only openings are trusted).
        let path = "/s/\(id)/count"
        let plain = InternalRequestSignature.headers(method: "GET", path: path, body: Array("proxy-hop\n\(user)".utf8), destination: destination,
                                                     key: SecureCookieKey(bytes: Array(TestCluster.defaultKey.utf8)))
        let refusedPlain = try await RawHTTPClient.request(host: home.address, port: home.port, path: path,
                                                           headers: [("X-Drover-Hop", "1"), ("X-Drover-Hop-User", user)] + plain)
        #expect(refusedPlain.status == 403 && refusedPlain.body.contains("not an opening"), "\(refusedPlain.status) \(refusedPlain.body)")
        // Another user's opening for this session: the session does not exist for them.
        let stranger = try await RawHTTPClient.KeepAlive(host: home.address, port: home.port)
            .exchange(Self.opening(session: id, user: "nobody", destination: destination))
        #expect(stranger.status == 404, "\(stranger.status) \(stranger.body)")

        // The session quits: the owner ends its hop connections with it, and the other node
        // says so on the same client connection.
        let quit = try await RawHTTPClient.request("DELETE", host: other.address, port: other.port, path: "/api/sessions/\(id)")
        #expect(quit.status == 204, "\(quit.status) \(quit.body)")
        #expect(await hop.end() == "closed")
        let gone = try await client.request("GET", path: "/s/\(id)/count")
        #expect(gone.status == 404, "\(gone.status) \(gone.body)")
        for index in 0..<2 { #expect(try await cluster.stop(index) == 0) }
    }
}
