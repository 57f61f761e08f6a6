import DroverCluster
import DroverKernel
@testable import DroverServer
import DroverTesting
import NIOCore
import NIOHTTP1
import Testing

/// Where the proxy sends a request for another node's session: to the node's address, with its
/// host name for SNI and certificate verification, connecting within `timeout` like every peer
/// call (the seed's `timeout` in load-balancer, here the scaled 2 s).
@Suite struct ProxyHopTests {
    @Test func aHopGoesToTheAddressByNameWithinTheTimeout() async throws {
        let node = try await InProcessNode(address: "127.0.0.1", rserver: "auth-none=1\n")
        let resolver = SessionProxyResolver(sessions: node.sessions,
                                            authentication: Authentication(key: node.runtime.key, authNone: true, pamService: "login", secure: false),
                                            peerTLS: nil)
        let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: "/s/abc/count")
        guard case .forward(.node(let host, let port, let name, let connectTimeout, let opening), _, let headers, _, _) =
            resolver.decision(.remote(host: "127.0.0.2", port: 8443, name: "node2.example.com"), id: "abc", user: "alice", head: head) else {
            Issue.record("not forwarded to a node"); return
        }
        #expect(host == "127.0.0.2" && port == 8443 && name == "node2.example.com" && connectTimeout == .seconds(2))
        #expect(opening == HopOpening(session: "abc", user: "alice") { ByteBuffer() })
        #expect(headers.isEmpty, "the requests on a hop go as to a session of this node's: no hop headers")
        guard case .forward(.node(_, _, let noName, _, _), _, _, _, _) = resolver.decision(.remote(host: "127.0.0.3", port: 8443), id: "abc",
                                                                                        user: "alice", head: head) else {
            Issue.record("not forwarded to a node"); return
        }
        #expect(noName == nil)

        // The opening: signed for the destination, for this purpose and user, fresh each time.
        let text = String(buffer: opening.request())
        #expect(text.hasPrefix("GET /s/abc/ HTTP/1.1\r\nHost: 127.0.0.2:8443\r\nConnection: Upgrade\r\nUpgrade: drover-session\r\n"), "\(text)")
        #expect(text.hasSuffix("\r\n\r\n") && text.contains("\r\nX-Drover-Hop-User: alice\r\n"))
        let fields = Dictionary(text.split(separator: "\r\n").dropFirst().map { line in
            let parts = line.split(separator: ":", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            return (parts[0], parts[1])
        }, uniquingKeysWith: { first, _ in first })
        func verify(_ body: [UInt8]) -> Bool {
            (try? InternalRequestSignature.verify(method: "GET", path: "/s/abc/", body: body, header: { fields[$0] }, key: node.runtime.key,
                                                  isOwnDestination: { $0 == "127.0.0.2:8443" })) != nil
        }
        #expect(verify(SessionProxyResolver.openingBody("alice")))
        #expect(!verify(Array("proxy-hop\nalice".utf8)), "signed for the purpose of an opening alone")
        #expect(!verify(SessionProxyResolver.openingBody("bob")))
        #expect(String(buffer: opening.request()) != text, "each connection's opening has its own nonce")
        await node.stop()
    }
}
