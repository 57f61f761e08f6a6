import DroverKernel
import DroverTesting
import Foundation
import Testing

/// Issue 34, item 6 (its first and third parts): behind a load balancer or TLS terminator
/// (`www-trusted-proxies`), the client's address, scheme and host come from the proxy's
/// forwarding headers — and only from a trusted proxy's.
@Suite struct TrustedProxyTests {
    /// Sends raw bytes from `source` and returns the first line of what came back within a second.
    static let rawClient = """
        import socket, sys
        s = socket.create_connection((sys.argv[1], int(sys.argv[2])), source_address=(sys.argv[3], 0))
        s.sendall(sys.stdin.buffer.read())
        s.settimeout(1)
        out = b""
        try:
            while b"\\r\\n" not in out:
                chunk = s.recv(65536)
                if not chunk: break
                out += chunk
        except socket.timeout:
            pass
        print(out.split(b"\\r\\n")[0].decode())
        """

    /// A session that answers each GET with the request's headers, as JSON.
    static func headersSession() throws -> TemporaryDirectory {
        let scripts = TemporaryDirectory(prefix: "drover-proxy-session")
        try scripts.write("headers-session", """
            #!/usr/bin/env python3
            import http.server, json, os
            class Echo(http.server.BaseHTTPRequestHandler):
                def do_GET(self):
                    body = json.dumps(dict(self.headers.items())).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                def log_message(self, *args):
                    pass
            \(pythonServeOnListenFD)
            serve(http.server.HTTPServer, Echo)
            """, mode: 0o755)
        return scripts
    }

    @Test func aTrustedProxyNamesTheClientItsSchemeAndHostAndNobodyElseDoes() async throws {
        let scripts = try Self.headersSession()
        let cluster = try await TestCluster(addresses: ["127.0.0.1"], backend: .sqlite,
                                            rserver: "session-command=\(scripts.url("headers-session"))\nauth-none=1\nwww-trusted-proxies=127.0.0.50\n")
        try await cluster.start(0)
        let node = cluster.nodes[0]
        let id = try #require(try await startSessions(cluster, count: 1).first?.id)
        let forwarding = [("X-Forwarded-For", "198.51.100.1, 203.0.113.7"), ("X-Forwarded-Proto", "https"), ("X-Forwarded-Host", "drover.example")]

        // Through the proxy: the last address it did not add itself, and the browser's scheme and host.
        let proxied = json(try await RawHTTPClient.request(host: node.address, port: node.port, path: "/s/\(id)/x", headers: forwarding,
                                                           localAddress: "127.0.0.50"))
        #expect(proxied["X-Forwarded-For"] as? String == "203.0.113.7" && proxied["X-Forwarded-Proto"] as? String == "https"
                    && proxied["X-Forwarded-Host"] as? String == "drover.example", "\(proxied)")
        // From anyone else the same headers are the client's own word, and ignored.
        let direct = json(try await RawHTTPClient.request(host: node.address, port: node.port, path: "/s/\(id)/x", headers: forwarding,
                                                          localAddress: "127.0.0.51"))
        #expect(direct["X-Forwarded-For"] as? String == "127.0.0.51" && direct["X-Forwarded-Proto"] as? String == "http"
                    && direct["X-Forwarded-Host"] as? String == "\(node.address):\(node.port)", "\(direct)")

        // The login-CSRF and WebSocket Origin checks compare with what the browser used.
        func firstLine(_ request: String, from source: String) async throws -> String {
            try await Executable.run("/usr/bin/python3", ["-c", Self.rawClient, node.address, String(node.port), source], stdin: request)
                .stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        let headers = "Host: \(node.address):\(node.port)\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: drover.example\r\nOrigin: https://drover.example\r\n"
        let signIn = "POST /sign-in HTTP/1.1\r\n\(headers)Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 23\r\n\r\nusername=a&password=b12"
        #expect(try await firstLine(signIn, from: "127.0.0.50").hasPrefix("HTTP/1.1 303"), "a sign-in through the terminator")
        #expect(try await firstLine(signIn, from: "127.0.0.51").hasPrefix("HTTP/1.1 403"), "the same headers from a client")
        let upgrade = "GET /s/\(id)/echo HTTP/1.1\r\n\(headers)Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        #expect(try await firstLine(upgrade, from: "127.0.0.51").hasPrefix("HTTP/1.1 403"), "a WebSocket of another origin")
        #expect(!(try await firstLine(upgrade, from: "127.0.0.50")).hasPrefix("HTTP/1.1 403"), "the browser's own origin through the terminator")
        #expect(try await cluster.stop(0) == 0)
    }

    /// The PROXY protocol (`www-proxy-protocol=1`): a TCP load balancer of `www-trusted-proxies`
    /// names the client in a header before the request, in text (v1) or binary (v2); from anyone
    /// else such a header is just a bad request.
    @Test func aTrustedTCPLoadBalancerNamesTheClientInAProxyProtocolHeader() async throws {
        let scripts = try Self.headersSession()
        let cluster = try await TestCluster(addresses: ["127.0.0.1"], backend: .sqlite,
                                            rserver: "session-command=\(scripts.url("headers-session"))\nauth-none=1\nwww-trusted-proxies=127.0.0.50\nwww-proxy-protocol=1\n")
        try await cluster.start(0)
        let node = cluster.nodes[0]
        let id = try #require(try await startSessions(cluster, count: 1).first?.id)
        let client = """
            import socket, sys
            s = socket.create_connection((sys.argv[1], int(sys.argv[2])), source_address=(sys.argv[3], 0))
            kind, path = sys.argv[4], sys.argv[5]
            request = ("GET %s HTTP/1.1\\r\\nHost: %s:%s\\r\\nX-Forwarded-For: 192.0.2.66\\r\\nConnection: close\\r\\n\\r\\n" % (path, sys.argv[1], sys.argv[2])).encode()
            if kind == "v1":
                header = b"PROXY TCP4 203.0.113.9 127.0.0.1 5555 80\\r\\n"
            elif kind == "v2":
                body = bytes([198, 51, 100, 4, 127, 0, 0, 1, 0x15, 0xb3, 0, 80])
                header = b"\\r\\n\\r\\n\\x00\\r\\nQUIT\\n" + bytes([0x21, 0x11, 0, len(body)]) + body
            else:
                header = b""
            s.sendall(header + request)
            s.settimeout(5)
            out = b""
            try:
                while True:
                    chunk = s.recv(65536)
                    if not chunk: break
                    out += chunk
            except socket.timeout:
                pass
            print(out.decode("latin-1"))
            """
        func send(_ kind: String, from source: String) async throws -> String {
            try await Executable.run("/usr/bin/python3", ["-c", client, node.address, String(node.port), source, kind, "/s/\(id)/x"]).stdout
        }
        let v1 = try await send("v1", from: "127.0.0.50")
        #expect(v1.hasPrefix("HTTP/1.0 200") && v1.contains(#""X-Forwarded-For": "203.0.113.9""#), "\(v1)")
        let v2 = try await send("v2", from: "127.0.0.50")
        #expect(v2.hasPrefix("HTTP/1.0 200") && v2.contains(#""X-Forwarded-For": "198.51.100.4""#), "\(v2)")
        // The load balancer must send its header: without one, nothing is served.
        let bare = try await send("none", from: "127.0.0.50")
        #expect(bare.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty, "\(bare)")
        // From anyone else a PROXY header is no header of theirs to give.
        let forged = try await send("v1", from: "127.0.0.51")
        #expect(forged.hasPrefix("HTTP/1.1 400") && !forged.contains("203.0.113.9"), "\(forged)")
        #expect(try await cluster.stop(0) == 0)
    }

    /// A trusted proxy's connection carries many clients: it is not held to one address's share
    /// of connections, but each of its clients is held to that share of requests in progress.
    @Test func eachClientOfATrustedProxyIsHeldToItsShareOfRequests() async throws {
        let scripts = TemporaryDirectory(prefix: "drover-proxy-session")
        try scripts.write("slow-session", """
            #!/usr/bin/env python3
            import http.server, os, time, urllib.parse
            class Slow(http.server.BaseHTTPRequestHandler):
                def do_GET(self):
                    ms = int(urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query).get("ms", ["0"])[0])
                    time.sleep(ms / 1000)
                    self.send_response(200)
                    self.send_header("Content-Length", "3")
                    self.end_headers()
                    self.wfile.write(b"ok\\n")
                def log_message(self, *args):
                    pass
            \(pythonServeOnListenFD)
            serve(http.server.ThreadingHTTPServer, Slow)
            """, mode: 0o755)
        let cluster = try await TestCluster(addresses: ["127.0.0.1"], backend: .sqlite, rserver: """
            session-command=\(scripts.url("slow-session"))
            auth-none=1
            www-trusted-proxies=127.0.0.50
            www-max-connections-per-address=3
            """)
        try await cluster.start(0)
        let node = cluster.nodes[0]
        let id = try #require(try await startSessions(cluster, count: 1).first?.id)
        // Five slow requests of one client through the proxy at once, and one of another client.
        let statuses = await concurrently(6) { index -> Int in
            if index == 5 { try? await Task.sleep(for: .milliseconds(500)) }
            let client = index == 5 ? "203.0.113.8" : "203.0.113.7"
            return (try? await RawHTTPClient.request(host: node.address, port: node.port, path: "/s/\(id)/x?ms=\(index == 5 ? 0 : 2500)",
                                                     headers: [("X-Forwarded-For", client)], localAddress: "127.0.0.50", timeout: 20))?.status ?? 0
        }
        #expect(statuses.prefix(5).filter { $0 == 200 }.count == 3 && statuses.prefix(5).filter { $0 == 503 }.count == 2, "\(statuses)")
        #expect(statuses[5] == 200, "another client of the same proxy: \(statuses)")
        // Their requests done, the client may send again.
        #expect(try await RawHTTPClient.request(host: node.address, port: node.port, path: "/s/\(id)/x",
                                                headers: [("X-Forwarded-For", "203.0.113.7")], localAddress: "127.0.0.50").status == 200)
        #expect(try await cluster.stop(0) == 0)
    }
}
