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
        guard case .forward(let byName, _, _, _) = resolver.decision(.remote(host: "127.0.0.2", port: 8443, name: "node2.example.com"),
                                                                     id: "abc", user: "alice", head: head) else {
            Issue.record("not forwarded"); return
        }
        #expect(byName == .tcp(host: "127.0.0.2", port: 8443, name: "node2.example.com", connectTimeout: .seconds(2)))
        guard case .forward(let byAddress, _, _, _) = resolver.decision(.remote(host: "127.0.0.3", port: 8443), id: "abc", user: "alice",
                                                                        head: head) else {
            Issue.record("not forwarded"); return
        }
        #expect(byAddress == .tcp(host: "127.0.0.3", port: 8443, name: nil, connectTimeout: .seconds(2)))
        await node.stop()
    }
}
