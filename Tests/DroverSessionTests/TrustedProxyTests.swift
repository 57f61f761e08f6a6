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

    @Test func aTrustedProxyNamesTheClientItsSchemeAndHostAndNobodyElseDoes() async throws {
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
}
