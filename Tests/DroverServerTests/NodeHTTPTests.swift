import DroverCluster
import DroverKernel
import DroverTesting
import Foundation
import Testing

/// A node's HTTP layer in process (``InProcessNode``): its own endpoints, the signed internal
/// API, the user API and the proxy's answers without a session, over real HTTP on loopback,
/// on an in-memory registry whose clock the test moves.
@Suite struct NodeHTTPTests {
    static let diagnostics = TestCluster.scaledLoadBalancer + "diagnostics=tmp\ndiagnostics-file=diag.log\n"

    @Test func internalCallsMustBeSignedFreshAndNew() async throws {
        let node = try await InProcessNode(loadBalancer: Self.diagnostics)
        func call(_ headers: [(String, String)], path: String = "/load-balancer/ping", method: String = "GET", body: String = "") async throws -> Int {
            try await node.request(method, path, headers: headers, body: body).status
        }
        #expect(try await call([]) == 403, "unsigned")
        let good = node.signedHeaders("GET", "/load-balancer/ping")
        #expect(try await call(good) == 200)
        #expect(try await call(good) == 403, "replayed")
        #expect(try await call(node.signedHeaders("GET", "/load-balancer/status-not")) == 403, "signed for another path")
        #expect(try await call(node.signedHeaders("GET", "/load-balancer/ping", key: "someone-elses-key-0123456789")) == 403, "another key")
        #expect(try await call(node.signedHeaders("GET", "/load-balancer/ping", now: Date().addingTimeInterval(-120))) == 403, "too old")
        #expect(try await call(node.signedHeaders("GET", "/load-balancer/ping", now: Date().addingTimeInterval(120))) == 403, "from the future")
        let event = String(decoding: InternalCall.notice(.nodeStatus(.init(id: 1, status: .online))).body, as: UTF8.self)
        let other = String(decoding: InternalCall.notice(.nodeStatus(.init(id: 2, status: .online))).body, as: UTF8.self)
        #expect(try await call(node.signedHeaders("POST", "/load-balancer/node-status", body: event), path: "/load-balancer/node-status",
                               method: "POST", body: other) == 403, "tampered body")
        #expect(try await call(node.signedHeaders("POST", "/load-balancer/node-status", body: event), path: "/load-balancer/node-status",
                               method: "POST", body: event) == 204)
        var forged = node.signedHeaders("GET", "/load-balancer/ping")
        forged[3].1 = String(forged[3].1.reversed())
        #expect(try await call(forged) == 403, "forged signature")
        // A call captured on its way to another node cannot be replayed here.
        #expect(try await call(node.signedHeaders("GET", "/load-balancer/ping", destination: "127.0.0.9:\(node.port)")) == 403, "for another node")
        #expect(try await call(node.signedHeaders("GET", "/load-balancer/ping", destination: "127.0.0.1:\(node.port + 1)")) == 403,
                "for another port")
        var redirected = node.signedHeaders("GET", "/load-balancer/ping", destination: "127.0.0.9:\(node.port)")
        redirected[0].1 = "127.0.0.1:\(node.port)"
        #expect(try await call(redirected) == 403, "destination header changed after signing")
        // Each refusal says why; the log has one line a minute per address (issue 34, item 5).
        let elsewhere = try await node.request("GET", "/load-balancer/ping", headers: node.signedHeaders("GET", "/load-balancer/ping", destination: "127.0.0.9:\(node.port)"))
        #expect(elsewhere.body.contains("signed for another node (127.0.0.9:\(node.port)), not this one"), "\(elsewhere.body)")
        let again = node.signedHeaders("GET", "/load-balancer/ping")
        #expect(try await call(again) == 200)
        #expect(try await node.request("GET", "/load-balancer/ping", headers: again).body.contains("replayed request (nonce already used)"))
        let log = try #require(node.config.directory.read("diag.log"))
        #expect(log.components(separatedBy: "event=internal-call-refused").count - 1 == 1, "\(log.suffix(1000))")
        await node.stop()
    }

    /// Another node's opening of a session hop is trusted on its signature, which names the node
    /// it was sent to: one captured on its way to another node is refused here. A hop header on
    /// anything but an opening is refused, signed or not.
    @Test func aProxyHopSignedForAnotherNodeIsRefused() async throws {
        let node = try await InProcessNode()
        let path = "/s/0123456789abcdef0123456789abcdef/"
        func hop(_ destination: String, opening: Bool = true, switching: Bool = true) async throws -> RawHTTPClient.Response {
            let signed = node.signedHeaders("GET", path, body: opening ? "proxy-splice\nsomeone" : "proxy-hop\nsomeone", destination: destination)
            let upgrade = opening ? (switching ? [("Connection", "Upgrade")] : []) + [("Upgrade", "drover-session")] : []
            return try await node.request(path, headers: upgrade + [("X-Drover-Hop", "1"), ("X-Drover-Hop-User", "someone")] + signed)
        }
        let elsewhere = try await hop("127.0.0.9:\(node.port)")
        #expect(elsewhere.status == 403, "\(elsewhere.status) \(elsewhere.body)")
        #expect(elsewhere.body.contains("signed for another node"), "\(elsewhere.body)")
        let plain = try await hop("127.0.0.1:\(node.port)", opening: false)
        #expect(plain.status == 403 && plain.body.contains("not an opening"), "\(plain.status) \(plain.body)")
        // Signed as an opening, but not a protocol switch as the framer reads it (no
        // `Connection: upgrade`): the framer would read on after it, so it opens nothing.
        let unswitched = try await hop("127.0.0.1:\(node.port)", switching: false)
        #expect(unswitched.status == 403 && unswitched.body.contains("not an opening"), "\(unswitched.status) \(unswitched.body)")
        // Signed for this node the opening is trusted: the session simply does not exist.
        #expect(try await hop("127.0.0.1:\(node.port)").status == 404)
        await node.stop()
    }

    @Test func anUnknownOrMalformedInternalCallIsRefusedSayingWhat() async throws {
        let node = try await InProcessNode()
        let unknown = try await node.request("POST", "/load-balancer/reboot", headers: node.signedHeaders("POST", "/load-balancer/reboot"))
        #expect(unknown.status == 404)
        #expect(unknown.body.contains("no internal call POST /load-balancer/reboot; are all nodes running the same Drover version?"))
        let body = #"{"session":"abc"}"#
        let malformed = try await node.request("POST", "/load-balancer/suspend", headers: node.signedHeaders("POST", "/load-balancer/suspend", body: body),
                                               body: body)
        #expect(malformed.status == 400)
        #expect(malformed.body.contains("the body of suspend is not the JSON of SessionCall"), "\(malformed.body)")
        await node.stop()
    }

    @Test func theStatusEndpointAnswersLoopbackOnlyAndShowsASilentNodeUnreachable() async throws {
        let node = try await InProcessNode(loadBalancer: Self.diagnostics)
        let fresh = try await node.request(NodeEndpoint.status)
        #expect(fresh.status == 200)
        #expect(fresh.body.hasPrefix("127.0.0.1:\(node.port) Load: "), "\(fresh.body)")
        // No heartbeat runs in process: three intervals of the registry's clock make the row stale.
        node.clock.advance(4)
        #expect(try await node.request(NodeEndpoint.status).body.hasPrefix("127.0.0.1:\(node.port) (unreachable) Load: "))
        // A refusal reads nothing from the registry, and a flood of them logs one line.
        let readsBefore = node.store.calls
        for _ in 0..<20 {
            #expect(try await node.request(NodeEndpoint.status, from: "127.0.0.9").status == 403)
        }
        #expect(node.store.calls == readsBefore, "refused requests read the registry")
        let refusals = node.config.directory.read("diag.log")?.components(separatedBy: "event=status-refused remote=127.0.0.9").count ?? 0
        #expect(refusals - 1 == 1, "one log line a minute per address, not one per request")
        await node.stop()
    }

    /// Only the addresses of Online nodes are let in besides loopback: a node that left is not.
    @Test func theStatusEndpointLetsInOnlyOnlineNodes() async throws {
        let clock = InProcessNode.TestClock()
        let registry = InProcessNode.sharedRegistry(clock: clock)
        let first = try await InProcessNode(clock: clock, registry: registry)
        let second = try await InProcessNode(address: "127.0.0.2", clock: clock, registry: registry)
        #expect(try await first.request(NodeEndpoint.status, from: "127.0.0.2").status == 200)
        await second.membership.leave()
        await first.membership.refreshView()
        #expect(try await first.request(NodeEndpoint.status, from: "127.0.0.2").status == 403)
        await second.stop()
        await first.stop()
    }

    @Test func theUserAPIAsksForSignInAndCSRFAndSaysWhatIsWrongInJSON() async throws {
        let signedIn = try await InProcessNode(rserver: "auth-none=1\n")
        let me = try await signedIn.request("/api/me")
        #expect(me.status == 200)
        let fields = try #require(try JSONSerialization.jsonObject(with: Data(me.body.utf8)) as? [String: Any])
        #expect(fields["user"] as? String == Optional(SystemUsers.currentName))
        #expect(fields.keys.contains("csrf"), "csrf is always there, null without a cookie: \(me.body)")
        #expect(try await signedIn.request("/api/sessions").body == "[]")
        #expect(try await signedIn.request("/s/0123456789abcdef/").status == 404, "no such session")
        // auth-none without a cookie: a page of another origin may not change anything.
        let crossSite = try await signedIn.request("POST", "/api/sessions", headers: [("Origin", "http://evil.example")], body: "{}")
        #expect(crossSite.status == 403)
        #expect(crossSite.body == #"{"error":"missing or wrong CSRF token: send the X-CSRF-Token header from GET /api/me"}"#)
        let badBody = try await signedIn.request("POST", "/api/sessions", body: "label=x")
        #expect(badBody.status == 400)
        #expect(badBody.body == #"{"error":"the body must be empty or JSON like {\"kind\": \"jupyterlab\", \"label\": \"my analysis\"}"}"#)
        // A start that cannot happen is the node's fault, 500, with the reason.
        let noCommand = try await signedIn.request("POST", "/api/sessions", body: #"{"label":"x"}"#)
        #expect(noCommand.status == 500)
        #expect(noCommand.body == #"{"error":"the session could not start: no session kind is configured on this node; add kinds/NAME.conf or session-command to rserver.conf"}"#)
        await signedIn.stop()

        let anonymous = try await InProcessNode()
        let refused = try await anonymous.request("/api/me")
        #expect(refused.status == 401)
        #expect(refused.body == #"{"error":"sign in first (POST /sign-in)"}"#)
        #expect(try await anonymous.request("/s/0123456789abcdef0123456789abcdef/").status == 401)
        let malformed = try await anonymous.request("/s/0123456789abcdef/")
        #expect(malformed.status == 404 && malformed.body == "no such session\n", "a session id not of Drover's form is refused at once")
        #expect(try await anonymous.request(NodeEndpoint.healthCheck).body == "ok\n")
        await anonymous.stop()
    }

    /// DNS rebinding: a page of another site whose name was made to resolve to 127.0.0.1 sends
    /// its own name in `Host`. With auth-none such requests are refused; addresses, localhost
    /// and the node's own names are served.
    @Test func withAuthNoneARequestForAnotherSitesNameIsRefused() async throws {
        let node = try await InProcessNode(rserver: "auth-none=1\n", loadBalancer: TestCluster.scaledLoadBalancer + "www-host-name=node1.drover.test\n")
        for host in ["evil.example:\(node.port)", "evil.example", "127.0.0.1.evil.example:\(node.port)", "localhost.evil.example"] {
            let api = try await node.request("/api/sessions", headers: [("Host", host)])
            #expect(api.status == 421, "\(host): \(api.status) \(api.body)")
            #expect(api.body.contains("this node does not answer to the name in Host"), "\(api.body)")
            #expect(try await node.request("/s/0123456789abcdef0123456789abcdef/", headers: [("Host", host)]).status == 421, "\(host)")
            #expect(try await node.request("POST", "/api/sessions", headers: [("Host", host)]).status == 421, "\(host)")
        }
        for host in ["127.0.0.1:\(node.port)", "localhost:\(node.port)", "LOCALHOST", "[::1]:\(node.port)", "node1.drover.test:\(node.port)"] {
            let api = try await node.request("/api/sessions", headers: [("Host", host)])
            #expect(api.status == 200, "\(host): \(api.status) \(api.body)")
        }
        // The health check answers whatever the name (external load balancers probe by theirs).
        #expect(try await node.request(NodeEndpoint.healthCheck, headers: [("Host", "evil.example")]).status == 200)
        await node.stop()
    }

    @Test func theHomePageListsTheUsersSessionsWithCSRFTokensAndSignOutClearsTheCookie() async throws {
        let node = try await InProcessNode(rserver: "auth-none=1\n")
        let user = try #require(Optional(SystemUsers.currentName))
        let now = node.clock.now
        try await node.store.createSession(SessionRecord(id: "fedcba9876543210fedcba9876543210", username: user,
                                                         ownership: SessionOwnership(node: nil, state: .suspended),
                                                         createdAt: now, lastActive: now, label: "hdr"))
        let home = try await node.request("/")
        #expect(home.status == 200)
        #expect(home.body.contains("/s/fedcba9876543210fedcba9876543210/") && home.body.contains("hdr") && home.body.contains("name=\"csrf\""))
        #expect(home.header("Set-Cookie")?.hasPrefix("drover-auth=") == true, "auth-none visitors get a cookie for CSRF tokens")
        let signOut = try await node.request("POST", "/sign-out")
        #expect(signOut.status == 303)
        #expect(signOut.header("Set-Cookie")?.hasPrefix("drover-auth=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0") == true)
        await node.stop()
    }
}
