import DroverKernel
import DroverTesting
import Foundation
import Testing

/// Sign-out and revocation across a cluster (issue 16, item 3), with real accounts and PAM.
@Suite(.serialized) struct SignOutTests {
    /// Opens a WebSocket with `cookie`, checks one echo, then waits for the server to close it.
    /// Prints `echoed` once the echo came back, then `closed` or `still open` (after 30 s). A
    /// fifth argument is the `Host` to send (a session's own origin), else `host:port`.
    static let tunnel = #"""
    import base64, os, socket, sys, time
    host, port, path, cookie = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    named = sys.argv[5] if len(sys.argv) > 5 else "%s:%d" % (host, port)
    s = socket.create_connection((host, port), timeout=30)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
               "Sec-WebSocket-Version: 13\r\nCookie: %s\r\n\r\n" % (path, named, key, cookie)).encode())
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(4096)
    head, rest = data.split(b"\r\n\r\n", 1)
    if not head.startswith(b"HTTP/1.1 101"):
        print("refused " + head.split(b"\r\n")[0].decode(), flush=True)
        sys.exit(0)
    payload, mask = b"ping", os.urandom(4)
    s.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
    while len(rest) < 2 + len(payload):
        rest += s.recv(4096)
    print("echoed" if rest[2:2 + len(payload)] == payload else "garbled", flush=True)
    started = time.monotonic()
    try:
        while s.recv(4096):
            pass
        print("closed", flush=True)
    except socket.timeout:
        print("still open", flush=True)
    """#

    @Test(.enabled(if: SystemUsers.available))
    func signingOutRevokesTheCookieOnEveryNodeAndClosesItsTunnels() async throws {
        let user = "drovertest9"
        try await SystemUsers.ensure([user])
        let cluster = try await TestCluster(addresses: ["127.0.0.1", "127.0.0.2"], backend: .sqlite,
                                            rserver: "session-command=\(demoCommand)\nauth-pam-service=\(SystemUsers.pamService)\n")
        try await cluster.start(0)
        try await cluster.start(1)
        let (one, two) = (cluster.nodes[0], cluster.nodes[1])
        let first = try await signIn(one, user: user)
        let second = try await signIn(two, user: user)
        let created = try await RawHTTPClient.request("POST", host: one.address, port: one.port, path: "/api/sessions", headers: first.headers, timeout: 60)
        let id = try #require(json(created)["id"] as? String, "\(created.status) \(created.body)")
        func me(_ node: ConfigDirectory, _ visitor: Visitor) async throws -> Int {
            try await RawHTTPClient.request(host: node.address, port: node.port, path: "/api/me", headers: [("Cookie", visitor.cookie)]).status
        }

        // A WebSocket tunnel through node two, opened with the first cookie.
        let script = TemporaryDirectory(prefix: "drover-tunnel")
        try script.write("tunnel.py", Self.tunnel)
        let tunnel = try RunningProcess("/usr/bin/env", ["python3", script.url("tunnel.py"), two.address, String(two.port), "/s/\(id)/echo", first.cookie])
        try await tunnel.waitUntil(timeout: 60, "the tunnel carries an echo") { tunnel.stdout.contains("echoed") }

        // Without the CSRF token sign-out is refused, and the cookie still works.
        let forged = try await RawHTTPClient.request("POST", host: one.address, port: one.port, path: "/sign-out", headers: [("Cookie", first.cookie)])
        #expect(forged.status == 403, "\(forged.status) \(forged.body)")
        #expect(try await me(two, first) == 200)

        // Signing out on node one: the cookie is refused on both nodes at once, its tunnel on
        // node two is closed; the user's other sign-in is untouched.
        let signedOut = try await RawHTTPClient.request("POST", host: one.address, port: one.port, path: "/sign-out", headers: first.headers)
        #expect(signedOut.status == 303)
        #expect(signedOut.header("Set-Cookie")?.hasPrefix("drover-auth=;") == true)
        #expect(try await me(one, first) == 401)
        #expect(try await me(two, first) == 401, "node two heard of the sign-out at once")
        let refusedProxy = try await RawHTTPClient.request(host: two.address, port: two.port, path: "/s/\(id)/count", headers: [("Cookie", first.cookie)])
        #expect(refusedProxy.status == 401, "\(refusedProxy.status)")
        _ = try await tunnel.wait(timeout: 40)
        #expect(tunnel.stdout.contains("closed"), "the revoked cookie's tunnel: \(tunnel.stdout)")
        #expect(try await me(two, second) == 200, "another sign-in of the same user still works")

        // The operator signs the user out everywhere.
        let revoked = try await cluster.drover(0, ["revoke-user", user])
        #expect(revoked.status == 0, "\(revoked.stdout) \(revoked.stderr)")
        #expect(revoked.stdout.contains("Every sign-in of \(user) issued until now is revoked on every node."))
        #expect(try await me(one, second) == 401)
        #expect(try await me(two, second) == 401)
        // A node that starts later reads the revocations from the registry.
        #expect(try await cluster.stop(1) == 0)
        try await cluster.start(1)
        try await cluster.eventually("the restarted node knows the revocations", timeout: 10) { try await me(two, second) == 401 }
        // The user can sign in again (a second later: cookies of the revocation's second are revoked too).
        try await Task.sleep(for: .seconds(1.1))
        let again = try await signIn(two, user: user)
        #expect(try await me(one, again) == 200)
        for index in 0..<2 { #expect(try await cluster.stop(index) == 0) }
    }

    /// Login CSRF: a page of another site posting the sign-in form (to sign the victim's
    /// browser in as the attacker) is refused; the node's own page is served.
    @Test(.enabled(if: SystemUsers.available))
    func aSignInPostedFromAnotherSitesPageIsRefused() async throws {
        let user = "drovertest9"
        try await SystemUsers.ensure([user])
        let cluster = try await TestCluster(addresses: ["127.0.0.1"], backend: .sqlite, rserver: "auth-pam-service=\(SystemUsers.pamService)\n")
        try await cluster.start(0)
        let node = cluster.nodes[0]
        func post(_ headers: [(String, String)]) async throws -> RawHTTPClient.Response {
            try await RawHTTPClient.request("POST", host: node.address, port: node.port, path: "/sign-in",
                                            headers: [("Content-Type", "application/x-www-form-urlencoded")] + headers,
                                            body: "username=\(user)&password=\(SystemUsers.password)")
        }
        let crossSite = try await post([("Origin", "http://evil.example")])
        #expect(crossSite.status == 403 && crossSite.header("Set-Cookie") == nil, "\(crossSite.status) \(crossSite.body)")
        let otherPort = try await post([("Origin", "http://\(node.address):\(node.port + 1)")])
        #expect(otherPort.status == 403, "another port of the same host is another origin")
        let byReferer = try await post([("Referer", "http://evil.example/login.html")])
        #expect(byReferer.status == 403)
        let own = try await post([("Origin", "http://\(node.address):\(node.port)")])
        #expect(own.status == 303 && own.header("Set-Cookie")?.hasPrefix("drover-auth=v2.") == true, "\(own.status) \(own.headers)")
        #expect(try await cluster.stop(0) == 0)
    }
}
