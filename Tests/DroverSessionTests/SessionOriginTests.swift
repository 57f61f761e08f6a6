import DroverKernel
import DroverTesting
import Foundation
import Testing

/// Issue 37 against real nodes, real accounts and PAM, over raw HTTP with the `Host` a browser
/// would send: each session at its own origin (`<id>.sessions.test`), signed in there through
/// the main origin's single-use ticket, bound to the browser's state, taken once by the whole
/// cluster; the session's cookie good for that session alone and revoked with its sign-in; the
/// session's origin serving nothing of Drover's; fetch metadata refusing other sites' pages.
/// (`SessionOriginBrowserTests` shows the same in Chromium.)
@Suite(.serialized) struct SessionOriginTests {
    static let (alice, bob) = ("droverso1", "droverso2")
    static let (domain, mainHost) = ("sessions.test", "drover.test")

    /// What a browser at `host` (a `Host` value) sends node `node`.
    static func get(_ node: ConfigDirectory, _ host: String, _ path: String, _ headers: [(String, String)] = [],
                    method: String = "GET", body: String = "") async throws -> RawHTTPClient.Response {
        try await RawHTTPClient.request(method, host: node.address, port: node.port, path: path, headers: [("Host", host)] + headers, body: body,
                                        timeout: 60)
    }

    /// The `Set-Cookie` named `name` in `response`, as `name=value`.
    static func cookie(_ name: String, in response: RawHTTPClient.Response) -> String? {
        response.headers.first { $0.0.lowercased() == "set-cookie" && $0.1.hasPrefix(name + "=") }.map { String($0.1.split(separator: ";")[0]) }
    }

    /// The path and query of an absolute `Location`, after checking its origin.
    static func path(of location: String?, origin: String) throws -> String {
        let location = try #require(location)
        try #require(location.hasPrefix(origin + "/"), "\(location) is not at \(origin)")
        return String(location.dropFirst(origin.count))
    }

    /// The whole hand-off for session `id` as a browser does it, from the session's origin on
    /// node `at` through the main origin on node `via`, back to the callback on node `back`.
    /// - Returns: the session's cookie (`__Host-drover-session=…`).
    static func signInToSession(_ id: String, main: Visitor, at: ConfigDirectory, via: ConfigDirectory, back: ConfigDirectory) async throws -> String {
        let sessionHost = "\(id).\(domain):\(at.port)"
        let begin = try await get(at, sessionHost, "/s/\(id)/count", [("Accept", "text/html")])
        #expect(begin.status == 303, "\(begin.status) \(begin.body)")
        let state = try #require(cookie("__Host-drover-state", in: begin), "\(begin.headers)")
        let ticketPath = try path(of: begin.header("Location"), origin: "http://\(mainHost):\(at.port)")
        let ticket = try await get(via, "\(mainHost):\(at.port)", ticketPath, [("Cookie", main.cookie)])
        #expect(ticket.status == 303 && ticket.header("Referrer-Policy") == "no-referrer", "\(ticket.status) \(ticket.body)")
        let callback = try path(of: ticket.header("Location"), origin: "http://\(sessionHost)")
        let landed = try await get(back, sessionHost, callback, [("Cookie", state)])
        #expect(landed.status == 303 && landed.header("Location") == "/s/\(id)/count", "\(landed.status) \(landed.body)")
        return try #require(cookie("__Host-drover-session", in: landed), "\(landed.headers)")
    }

    @Test(.enabled(if: SystemUsers.available || ProcessInfo.processInfo.environment["CI"] == "true"))
    func aSessionsOriginSignsInThroughASingleUseTicketAndServesThatSessionAlone() async throws {
        try await SystemUsers.ensure([Self.alice, Self.bob])
        let cluster = try await TestCluster(addresses: ["127.0.0.1", "127.0.0.2"], backend: .sqlite, rserver: """
            session-command=\(demoCommand)
            auth-pam-service=\(SystemUsers.pamService)
            www-session-domain=\(Self.domain)
            www-main-host=\(Self.mainHost)
            www-secure-cookies=1
            www-allowed-origins=https://portal.test
            """)
        try await cluster.start(0)
        try await cluster.start(1)
        let (one, two) = (cluster.nodes[0], cluster.nodes[1])
        let main = "\(Self.mainHost):\(one.port)"
        let alice = try await signIn(one, user: Self.alice)
        let bob = try await signIn(one, user: Self.bob)

        // Two sessions of alice's; the API names each one's own origin.
        var ids: [String] = []
        for _ in 0..<2 {
            let created = try await Self.get(one, main, "/api/sessions", alice.headers, method: "POST")
            let id = try #require(json(created)["id"] as? String, "\(created.status) \(created.body)")
            #expect(json(created)["url"] as? String == "http://\(id).\(Self.domain):\(one.port)/s/\(id)/")
            ids.append(id)
        }
        let (a, b) = (ids[0], ids[1])
        let (hostA, hostB) = ("\(a).\(Self.domain):\(one.port)", "\(b).\(Self.domain):\(one.port)")

        // On Drover's origin a session's address sends the browser to the session's origin.
        let moved = try await Self.get(one, main, "/s/\(a)/count?x=1", [("Cookie", alice.cookie)])
        #expect(moved.status == 302 && moved.header("Location") == "http://\(hostA)/s/\(a)/count?x=1", "\(moved.status) \(moved.headers)")

        // The main cookie counts for nothing at a session's origin: a page opened starts the
        // hand-off, anything else is told to sign in.
        let page = try await Self.get(one, hostA, "/s/\(a)/count", [("Cookie", alice.cookie), ("Accept", "text/html")])
        #expect(page.status == 303 && page.header("Location")?.hasPrefix("http://\(main)/_drover/ticket?session=\(a)&state=") == true, "\(page.headers)")
        #expect(page.header("Set-Cookie")?.contains("HttpOnly; SameSite=Lax; Max-Age=600; Secure") == true, "\(page.headers)")
        #expect(alice.cookie.hasPrefix("__Host-drover-auth="), "the main cookie is host-only under __Host-: \(alice.cookie)")
        // The name from before `__Host-` is not taken where a session's page could set it.
        let legacy = "drover-auth=" + alice.cookie.dropFirst("__Host-drover-auth=".count)
        #expect(try await Self.get(one, main, "/api/me", [("Cookie", legacy)]).status == 401)
        #expect(try await Self.get(one, hostA, "/s/\(a)/count", [("Cookie", alice.cookie)]).status == 401)
        let state = try #require(Self.cookie("__Host-drover-state", in: page))
        let ticketPath = try Self.path(of: page.header("Location"), origin: "http://\(main)")

        // The main origin: not signed in, the browser signs in first and comes back.
        let anonymous = try await Self.get(one, main, ticketPath)
        #expect(anonymous.status == 303 && anonymous.header("Location")?.hasPrefix("/?next=/_drover/ticket%3Fsession%3D") == true, "\(anonymous.headers)")
        let form = try await Self.get(one, main, try #require(anonymous.header("Location")))
        #expect(form.body.contains(#"name="next" value="/_drover/ticket?session=\#(a)"#), "\(form.body.prefix(600))")
        let signedIn = try await Self.get(one, main, "/sign-in", [("Content-Type", "application/x-www-form-urlencoded")], method: "POST",
                                          body: "username=\(Self.alice)&password=\(SystemUsers.password)&next=" + (ticketPath.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? ""))
        #expect(signedIn.status == 303 && signedIn.header("Location") == ticketPath, "\(signedIn.status) \(signedIn.headers)")
        // A sign-in posted from a session's page is another origin's (login CSRF).
        let crossSignIn = try await Self.get(one, main, "/sign-in", [("Content-Type", "application/x-www-form-urlencoded"), ("Origin", "https://\(hostA)")],
                                        method: "POST", body: "username=\(Self.alice)&password=\(SystemUsers.password)")
        #expect(crossSignIn.status == 403, "\(crossSignIn.status) \(crossSignIn.body)")
        // Another user gets no ticket for alice's session; a page's fetch gets none at all.
        #expect(try await Self.get(one, main, ticketPath, [("Cookie", bob.cookie)]).status == 404)
        #expect(try await Self.get(one, main, ticketPath, [("Cookie", alice.cookie), ("Sec-Fetch-Site", "same-site"), ("Sec-Fetch-Mode", "cors")]).status == 403)
        let ticketed = try await Self.get(one, main, ticketPath, [("Cookie", alice.cookie)])
        #expect(ticketed.status == 303, "\(ticketed.status) \(ticketed.body)")
        let callback = try Self.path(of: ticketed.header("Location"), origin: "http://\(hostA)")
        #expect(callback.hasPrefix("/_drover/callback?ticket=t1."))

        // The callback, on the other node (a load balancer may send it anywhere): only the
        // browser holding the state, only at the ticket's session, only once in the cluster.
        #expect(try await Self.get(two, hostA, callback).status == 403, "no state cookie")
        #expect(try await Self.get(two, hostA, callback, [("Cookie", "__Host-drover-state=\(String(repeating: "0", count: 32))")]).status == 403, "another browser's state")
        let elsewhere = try await Self.get(two, hostB, callback.replacingOccurrences(of: "/s/\(a)", with: "/s/\(b)"), [("Cookie", state)])
        #expect(elsewhere.status == 403 && elsewhere.body.contains("another session"), "\(elsewhere.status) \(elsewhere.body)")
        let landed = try await Self.get(two, hostA, callback, [("Cookie", state)])
        #expect(landed.status == 303 && landed.header("Location") == "/s/\(a)/count" && landed.header("Referrer-Policy") == "no-referrer",
                "\(landed.status) \(landed.headers) \(landed.body)")
        let sessionCookie = try #require(Self.cookie("__Host-drover-session", in: landed))
        #expect(landed.headers.contains { $0.0.lowercased() == "set-cookie" && $0.1.hasPrefix("__Host-drover-session=") && $0.1.contains("Path=/; HttpOnly; SameSite=Lax") && $0.1.hasSuffix("; Secure") })
        let replayed = try await Self.get(one, hostA, callback, [("Cookie", state)])
        #expect(replayed.status == 403 && replayed.body.contains("used already"), "\(replayed.status) \(replayed.body)")
        try await cluster.eventually("the replay is logged") { cluster.process(0)?.stderr.contains("event=session-ticket-replayed") == true }

        // The session's cookie opens that session through either node, and nothing else.
        for node in [one, two] {
            let count = try await Self.get(node, hostA, "/s/\(a)/count", [("Cookie", sessionCookie)])
            #expect(count.status == 200 && count.body.contains("count"), "via \(node.address): \(count.status) \(count.body)")
        }
        #expect(try await Self.get(one, hostB, "/s/\(b)/count", [("Cookie", sessionCookie)]).status == 401, "a cookie of one session at another's origin")
        #expect(try await Self.get(one, hostA, "/s/\(b)/count", [("Cookie", sessionCookie)]).status == 404, "another session's path at this origin")
        for path in ["/api/me", "/api/sessions", "/admin", "/sessions", "/load-balancer/status"] {
            let answer = try await Self.get(one, hostA, path, [("Cookie", sessionCookie + "; " + alice.cookie)])
            #expect(answer.status == 404 && !answer.body.contains("csrf"), "\(path) at a session's origin: \(answer.status) \(answer.body)")
        }
        #expect(try await Self.get(one, hostA, "/", [("Cookie", sessionCookie)]).header("Location") == "/s/\(a)/")

        // Fetch metadata: another site's page (a sibling session's) driving the browser here, or
        // at Drover's own endpoints, is refused; the page's own requests are not.
        let sibling = [("Sec-Fetch-Site", "same-site"), ("Sec-Fetch-Mode", "cors"), ("Sec-Fetch-Dest", "empty")]
        #expect(try await Self.get(one, hostA, "/s/\(a)/count", [("Cookie", sessionCookie)] + sibling).status == 403)
        #expect(try await Self.get(one, hostA, "/s/\(a)/count", [("Cookie", sessionCookie), ("Sec-Fetch-Site", "same-origin"), ("Sec-Fetch-Mode", "cors")]).status == 200)
        #expect(try await Self.get(one, main, "/api/me", [("Cookie", alice.cookie)] + sibling).status == 403)
        #expect(try await Self.get(one, main, "/api/me", [("Cookie", alice.cookie), ("Sec-Fetch-Site", "same-origin")]).status == 200)
        // A browser without fetch metadata: a write posted from another origin's page is refused by its `Origin`.
        let posted = try await Self.get(one, hostA, "/s/\(a)/count", [("Cookie", sessionCookie), ("Origin", "https://\(hostB)")], method: "POST")
        #expect(posted.status == 403, "\(posted.status) \(posted.body)")
        #expect(try await Self.get(one, hostA, "/s/\(a)/count", [("Cookie", sessionCookie), ("Origin", "http://\(hostA)")], method: "POST").status == 200)
        // Nothing of Drover's is served at other names inside the sessions' domain.
        for name in ["login.\(Self.domain)", Self.domain] {
            #expect(try await Self.get(one, "\(name):\(one.port)", "/").status == 421, "\(name)")
            #expect(try await Self.get(one, "\(name):\(one.port)", "/s/\(a)/count").status == 421, "\(name)")
        }
        // A WebSocket from another session's page is refused; from the session's own, it works.
        let hijack = try? await RawWebSocket.echo(host: one.address, port: one.port, path: "/s/\(a)/echo",
                                                  headers: [("Host", hostA), ("Cookie", sessionCookie), ("Origin", "http://\(hostB)")], message: "x", timeout: 20)
        #expect(hijack == nil, "a WebSocket from session B's page into A: \(hijack ?? "")")
        #expect(try await RawWebSocket.echo(host: one.address, port: one.port, path: "/s/\(a)/echo",
                                            headers: [("Host", hostA), ("Cookie", sessionCookie), ("Origin", "http://\(hostA)")], message: "own", timeout: 20) == "own")
        // So does one from a page of www-allowed-origins, though another site's; a sibling's is refused.
        let portal = [("Host", hostA), ("Cookie", sessionCookie), ("Sec-Fetch-Site", "cross-site"), ("Sec-Fetch-Mode", "websocket")]
        #expect(try await RawWebSocket.echo(host: one.address, port: one.port, path: "/s/\(a)/echo", headers: portal + [("Origin", "https://portal.test")],
                                            message: "allowed", timeout: 20) == "allowed")
        let fromSibling = try? await RawWebSocket.echo(host: one.address, port: one.port, path: "/s/\(a)/echo",
                                                       headers: portal + [("Origin", "https://\(hostB)")], message: "x", timeout: 20)
        #expect(fromSibling == nil, "\(fromSibling ?? "")")

        // Signing out revokes the session's cookie with the sign-in it came from, on every node,
        // and closes its tunnels.
        let script = TemporaryDirectory(prefix: "drover-tunnel")
        try script.write("tunnel.py", SignOutTests.tunnel)
        let tunnel = try RunningProcess("/usr/bin/env", ["python3", script.url("tunnel.py"), two.address, String(two.port), "/s/\(a)/echo", sessionCookie, hostA])
        try await tunnel.waitUntil(timeout: 60, "the tunnel carries an echo") { tunnel.stdout.contains("echoed") }
        let signedOut = try await Self.get(one, main, "/sign-out", alice.headers, method: "POST")
        #expect(signedOut.status == 303)
        for node in [one, two] {
            #expect(try await Self.get(node, hostA, "/s/\(a)/count", [("Cookie", sessionCookie)]).status == 401, "after sign-out, via \(node.address)")
        }
        _ = try await tunnel.wait(timeout: 40)
        #expect(tunnel.stdout.contains("closed"), "the revoked session cookie's tunnel: \(tunnel.stdout)")

        // `drover revoke-user` ends the sign-ins made before it, session cookies included.
        let again = try await signIn(one, user: Self.alice)
        let fresh = try await Self.signInToSession(b, main: again, at: one, via: two, back: one)
        #expect(try await Self.get(two, hostB, "/s/\(b)/count", [("Cookie", fresh)]).status == 200)
        #expect(try await cluster.drover(0, ["revoke-user", Self.alice]).status == 0)
        try await cluster.eventually("the revocation reaches node two") {
            try await Self.get(two, hostB, "/s/\(b)/count", [("Cookie", fresh)]).status == 401
        }
        #expect(try await cluster.stop(0) == 0)
        #expect(try await cluster.stop(1) == 0)
    }

    /// Over https without session origins (`www-secure-cookies=1`: behind a TLS terminator), the
    /// sign-in cookie is `__Host-drover-auth`; one of the name used before still counts there, so
    /// an upgrade signs no one out, and signing out clears both names.
    @Test(.enabled(if: SystemUsers.available || ProcessInfo.processInfo.environment["CI"] == "true"))
    func theCookieNameFromBeforeHostStillCountsWhileSessionsShareDroversOrigin() async throws {
        try await SystemUsers.ensure([Self.alice])
        let cluster = try await TestCluster(addresses: ["127.0.0.1"], backend: .sqlite,
                                            rserver: "session-command=\(demoCommand)\nauth-pam-service=\(SystemUsers.pamService)\nwww-secure-cookies=1\n")
        try await cluster.start(0)
        let node = cluster.nodes[0]
        let visitor = try await signIn(node, user: Self.alice)
        #expect(visitor.cookie.hasPrefix("__Host-drover-auth="))
        let legacy = "drover-auth=" + visitor.cookie.dropFirst("__Host-drover-auth=".count)
        let me = try await RawHTTPClient.request(host: node.address, port: node.port, path: "/api/me", headers: [("Cookie", legacy)])
        #expect(me.status == 200, "\(me.status) \(me.body)")
        let out = try await RawHTTPClient.request("POST", host: node.address, port: node.port, path: "/sign-out",
                                                  headers: [("Cookie", legacy), ("X-CSRF-Token", visitor.csrf)])
        #expect(out.status == 303)
        let cleared = out.headers.filter { $0.0.lowercased() == "set-cookie" }.map(\.1)
        #expect(cleared.contains { $0.hasPrefix("__Host-drover-auth=;") } && cleared.contains { $0.hasPrefix("drover-auth=;") }, "\(cleared)")
        #expect(try await RawHTTPClient.request(host: node.address, port: node.port, path: "/api/me", headers: [("Cookie", visitor.cookie)]).status == 401)
        #expect(try await cluster.stop(0) == 0)
    }

    /// The quick start: `auth-none` with `www-session-domain=localhost`, sessions at
    /// `<id>.localhost` (which browsers resolve to loopback); the auth-none `Host` check takes
    /// those names, and still refuses others (DNS rebinding).
    @Test func theQuickStartServesSessionsAtIDDotLocalhost() async throws {
        let cluster = try await TestCluster(addresses: ["127.0.0.1"], backend: .sqlite,
                                            rserver: "session-command=\(demoCommand)\nauth-none=1\nwww-session-domain=localhost\n")
        try await cluster.start(0)
        let node = cluster.nodes[0]
        let created = try await Self.get(node, "localhost:\(node.port)", "/api/sessions", method: "POST")
        let id = try #require(json(created)["id"] as? String, "\(created.status) \(created.body)")
        #expect(json(created)["url"] as? String == "http://\(id).localhost:\(node.port)/s/\(id)/")
        #expect(try await Self.get(node, "localhost:\(node.port)", "/s/\(id)/count").header("Location") == "http://\(id).localhost:\(node.port)/s/\(id)/count")
        let count = try await Self.get(node, "\(id).localhost:\(node.port)", "/s/\(id)/count")
        #expect(count.status == 200 && count.body.contains("count"), "\(count.status) \(count.body)")
        #expect(try await Self.get(node, "\(id).evil.test:\(node.port)", "/s/\(id)/count").status == 421)
        #expect(try await Self.get(node, "\(id).localhost:\(node.port)", "/api/me").status == 404)
        #expect(try await cluster.stop(0) == 0)
    }
}
