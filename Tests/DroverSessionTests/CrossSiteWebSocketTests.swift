import DroverKernel
import DroverTesting
import Foundation
import Testing

/// Cross-site WebSocket hijacking (issue 16, item 5), tried the way it is done: a page served
/// from another port of the node's host, opened in a real browser (headless Chromium over WebDriver), opens a
/// WebSocket to a session. The browser sets `Origin`; the node refuses it unless the operator
/// allows that origin (`www-allowed-origins`).
@Suite struct CrossSiteWebSocketTests {
    /// Serves a blank page on `port` (another site: another origin than the node's) and logs
    /// every request to standard error, which a failure shows. A thread per connection: Chromium
    /// opens a connection ahead of need (a preconnect) and may send nothing on it for a while.
    static let pageServer = #"""
    import http.server, sys
    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"<!doctype html><html><body>another site</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, format, *args):
            sys.stderr.write("page server: " + (format % args) + "\n")
            sys.stderr.flush()
    http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Page).serve_forever()
    """#

    /// What the page's script does: opens the WebSocket, says hello, and reports what happened.
    static func script(target: String) -> String {
        """
        const report = arguments[arguments.length - 1];
        const ws = new WebSocket("\(target)");
        ws.onopen = () => ws.send("hello from another site");
        ws.onmessage = (event) => report("echo:" + event.data);
        ws.onerror = () => report("error");
        ws.onclose = (event) => report("closed:" + event.code);
        """
    }

    /// Opens a page of a server on `port` in the browser, runs ``script(target:)`` in it and
    /// returns what it reported. The browser is driven over WebDriver, as in the other browser
    /// tests: Chromium started with the page's address on its command line once never asked for
    /// the page in a minute (one run in about fifty, on a loaded machine), where a WebDriver
    /// navigation answers when the page has loaded or says why it has not.
    func visit(port: Int, target: String, browser: Browser) async throws -> String {
        let folder = TemporaryDirectory(prefix: "drover-page")
        try folder.write("server.py", Self.pageServer)
        let server = try RunningProcess("/usr/bin/env", ["python3", folder.url("server.py"), String(port)])
        defer { server.signal(SIGKILL) }
        try await server.waitUntil(timeout: 20, "the page server listens") {
            (try? await RawHTTPClient.request(host: "127.0.0.1", port: port, path: "/probe", timeout: 2))?.status == 200
        }
        do {
            try await browser.open("http://127.0.0.1:\(port)/")
            return try #require(try await browser.runAsync(Self.script(target: target), timeoutSeconds: 30) as? String)
        } catch {
            throw TestFailure("\(error)\n--- the page server's requests:\n\(server.stderr.suffix(3000))")
        }
    }

    /// Runs wherever chromedriver is installed (the README's test command installs it); in CI
    /// its absence fails the test rather than skipping it.
    @Test(.enabled(if: Browser.available || ProcessInfo.processInfo.environment["CI"] == "true"))
    func aWebSocketFromAnotherSitesPageIsRefusedAndFromAnAllowedOriginWorks() async throws {
        // A browser loads the machine: it takes its turn with the other heavy tests.
        try await HeavyTests.run(.wholeMachine) { try await browse() }
    }

    func browse() async throws {
        #expect(Browser.available, "no chromedriver: scripts/test.sh installs Debian's chromium-driver package")
        let (attacker, allowed) = (try FreePort.find(), try FreePort.find())
        let cluster = try await TestCluster(addresses: ["127.0.0.1"], backend: .sqlite,
                                            rserver: "session-command=\(demoCommand)\nauth-none=1\nwww-allowed-origins=http://127.0.0.1:\(allowed)\n")
        try await cluster.start(0)
        let node = cluster.nodes[0]
        let (id, _) = try #require(try await startSessions(cluster, count: 1).first)
        let target = "ws://127.0.0.1:\(node.port)/s/\(id)/echo"

        try await Browser.using { browser in
            func visit(port: Int) async throws -> String {
                do {
                    return try await self.visit(port: port, target: target, browser: browser)
                } catch {
                    throw TestFailure("\(error)\n--- droverd:\n\(cluster.process(0)?.stderr.suffix(4000) ?? "")")
                }
            }
            let refused = try await visit(port: attacker)
            #expect(refused == "error" || refused.hasPrefix("closed:"), "a page of another port reached the session: \(refused)")
            let log = cluster.process(0)?.stderr ?? ""
            #expect(log.split(separator: "\n").contains { $0.contains("event=websocket-origin-refused") && $0.contains("127.0.0.1:\(attacker)") },
                    "\(log.suffix(1500))")

            let echoed = try await visit(port: allowed)
            #expect(echoed == "echo:hello from another site", "the allowed origin's page: \(echoed)")
        }
        // The node's own pages are always allowed (same origin), and clients without Origin are not browsers.
        #expect(try await RawWebSocket.echo(host: node.address, port: node.port, path: "/s/\(id)/echo", message: "no origin", timeout: 10) == "no origin")
        #expect(try await cluster.stop(0) == 0)
    }
}
