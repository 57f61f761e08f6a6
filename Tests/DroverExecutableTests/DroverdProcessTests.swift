import DroverKernel
import DroverTesting
import Foundation
import Testing

@Suite struct DroverdProcessTests {
    func healthy(_ config: ConfigDirectory) async -> Bool {
        (try? await RawHTTPClient.request(host: config.address, port: config.port, path: "/health-check").status) == 200
    }

    @Test(arguments: [SIGTERM, SIGINT])
    func servesHealthCheckAndStopsCleanlyOnSignal(signal: Int32) async throws {
        let config = try ConfigDirectory()
        let node = try RunningProcess("droverd", ["--config-dir", config.path])
        try await node.waitUntil("health check") { await healthy(config) }
        let response = try await RawHTTPClient.request(host: config.address, port: config.port, path: "/health-check")
        #expect(response.body == "ok\n")
        #expect(try await RawHTTPClient.request(host: config.address, port: config.port, path: "/nope").status == 404)
        node.signal(signal)
        #expect(try await node.wait(timeout: 15) == 0)
        #expect(await !healthy(config))
    }

    /// Found by fuzzing the HTTP path: a client that half-closed after its request got no
    /// answer, because the connection was closed as soon as its input ended.
    @Test func aClientThatHalfClosesAfterItsRequestsStillGetsEveryAnswer() async throws {
        let config = try ConfigDirectory()
        let node = try RunningProcess("droverd", ["--config-dir", config.path])
        try await node.waitUntil("health check") { await healthy(config) }
        let one = try await RawHTTPClient.halfClosedExchange(host: config.address, port: config.port,
                                                       raw: "GET /health-check HTTP/1.1\r\nHost: n\r\n\r\n")
        #expect(one.hasPrefix("HTTP/1.1 200 OK\r\n") && one.hasSuffix("\r\n\r\nok\n"), "\(one)")
        let pipelined = try await RawHTTPClient.halfClosedExchange(host: config.address, port: config.port,
                                                             raw: "GET /health-check HTTP/1.1\r\nHost: n\r\n\r\nGET /nope HTTP/1.1\r\nHost: n\r\n\r\n")
        #expect(pipelined.hasPrefix("HTTP/1.1 200 OK\r\n") && pipelined.contains("HTTP/1.1 404 Not Found\r\n"), "\(pipelined)")
        // Nothing sent, or half a request: closed at once, never left open.
        #expect(try await RawHTTPClient.halfClosedExchange(host: config.address, port: config.port, raw: "", timeout: 5) == "")
        let partial = try await RawHTTPClient.halfClosedExchange(host: config.address, port: config.port, raw: "GET /health-check HTTP/1.1\r\nHo", timeout: 5)
        #expect(!partial.contains("200 OK"), "\(partial)")
        node.signal(SIGTERM)
        #expect(try await node.wait(timeout: 15) == 0)
    }

    /// Found by FuzzHTTP: a request that asks to switch protocols, with bytes after it, answered
    /// without the switch (404 here) on a connection that then closes, handed those bytes to the
    /// routing handler, and droverd trapped: one unsigned request stopped the node.
    @Test func aRefusedUpgradeWithBytesAfterItLeavesTheNodeServing() async throws {
        let config = try ConfigDirectory()
        let node = try RunningProcess("droverd", ["--config-dir", config.path])
        try await node.waitUntil("health check") { await healthy(config) }
        for switching in ["Connection: Upgrade\r\nUpgrade: websocket", "Connection: upgrade\r\nUpgrade: h2c"] {
            let answer = try await RawHTTPClient.halfClosedExchange(host: config.address, port: config.port,
                                                                    raw: "GET /nothing HTTP/1.1\r\nHost: n\r\n\(switching)\r\n\r\nGET / HTTP/1.1\r\n\r\n")
            #expect(answer.hasPrefix("HTTP/1.1 404"), "\(answer)")
            try await Task.sleep(for: .milliseconds(300))  // the connection's closing, where it trapped
            #expect(await healthy(config), "droverd still answers: \(node.stderr.suffix(600))")
        }
        node.signal(SIGTERM)
        #expect(try await node.wait(timeout: 15) == 0)
    }

    /// Found by a security read: after a request that switches protocols the node reads no more
    /// HTTP on the connection (what follows may be the new protocol's). When the switch is
    /// refused, the node used to keep the connection open all the same, every later request on it
    /// unread, until the client gave up or the header timeout (30 s) ended it. Now the refusal
    /// says `Connection: close` and the connection ends with it.
    @Test func aRefusedUpgradeEndsItsConnectionWithItsAnswer() async throws {
        let config = try ConfigDirectory()
        let node = try RunningProcess("droverd", ["--config-dir", config.path])
        try await node.waitUntil("health check") { await healthy(config) }
        for switching in ["Connection: Upgrade\r\nUpgrade: websocket", "Connection: keep-alive, upgrade\r\nUpgrade: h2c"] {
            // The client does not close its side: the node must.
            let answer = try await RawHTTPClient.exchange(host: config.address, port: config.port,
                                                          raw: "GET /nothing HTTP/1.1\r\nHost: n\r\n\(switching)\r\n\r\nGET /health-check HTTP/1.1\r\nHost: n\r\n\r\n",
                                                          timeout: 10)
            #expect(answer.hasPrefix("HTTP/1.1 404"), "\(answer)")
            #expect(answer.lowercased().contains("connection: close"), "\(answer)")
            #expect(answer.components(separatedBy: "HTTP/1.1 ").count == 2, "one answer, the request after the switch unread: \(answer)")
        }
        node.signal(SIGTERM)
        #expect(try await node.wait(timeout: 15) == 0)
    }

    /// Found by a security read: a client that pipelines requests and never reads their answers
    /// grew droverd's memory without end (one connection: 40 MB to 966 MB in 15 s). The node now
    /// stops reading a client that does not take its answers.
    @Test func aClientThatNeverReadsItsAnswersCannotGrowTheNodesMemory() async throws {
        let config = try ConfigDirectory()
        let node = try RunningProcess("droverd", ["--config-dir", config.path])
        try await node.waitUntil("health check") { await healthy(config) }
        func residentMB() -> Int {
            let status = (try? String(contentsOfFile: "/proc/\(node.pid)/status", encoding: .utf8)) ?? ""
            let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
            return (Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0) / 1024
        }
        let before = residentMB()
        // Pipelined health checks on one connection whose answers are never read, for up to ten
        // seconds. Once droverd stops reading, the kernel's buffers fill and a send waits: two
        // seconds without progress is "blocked". A droverd that keeps reading (the bug) keeps the
        // sender going, at whatever pace it answers.
        let flood = try await Executable.run("/usr/bin/python3", ["-c", """
            import socket, time
            s = socket.create_connection(("\(config.address)", \(config.port)))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.settimeout(2)
            batch = b"GET /health-check HTTP/1.1\\r\\nHost: n\\r\\n\\r\\n" * 1000
            sent, start, blocked = 0, time.time(), False
            try:
                while time.time() - start < 10:
                    s.sendall(batch)
                    sent += 1000
            except socket.timeout:
                blocked = True
            print(sent, "blocked" if blocked else "flowing")
            """])
        let grown = residentMB() - before
        #expect(flood.stdout.contains("blocked"), "droverd kept reading a client that takes none of its answers: \(flood.stdout) \(flood.stderr)")
        #expect(grown < 100, "droverd grew by \(grown) MB (\(flood.stdout.trimmingCharacters(in: .whitespacesAndNewlines)))")
        #expect(await healthy(config))
        node.signal(SIGTERM)
        #expect(try await node.wait(timeout: 15) == 0)
    }

    @Test func configDirectoryFromTheEnvironment() async throws {
        let config = try ConfigDirectory()
        let node = try RunningProcess("droverd", [], environment: ["DROVER_CONFIG_DIR": config.path])
        try await node.waitUntil("health check") { await healthy(config) }
        node.signal(SIGTERM)
        #expect(try await node.wait(timeout: 15) == 0)
    }

    @Test func badConfigExitsTwoWithFileAndLineAndTouchesNothing() async throws {
        let config = try ConfigDirectory(key: nil)
        try config.write("file-locks", "lock-type=linkbased\nrefresh-rate=soon\n")
        let result = try await Executable.run("droverd", ["--config-dir", config.path])
        #expect(result.status == 2)
        #expect(result.stderr.contains("\(config.path)/file-locks:2: 'refresh-rate' must be a whole number, found 'soon'"))
        #expect(!config.directory.exists("secure-cookie-key"))
        #expect(!config.directory.exists("data"))
    }

    @Test func unknownPluginNameExitsTwoListingTheAvailableNames() async throws {
        let config = try ConfigDirectory()
        try config.write("load-balancer", "balancer=fastest\n")
        let result = try await Executable.run("droverd", ["--config-dir", config.path])
        #expect(result.status == 2)
        #expect(result.stderr.contains("load-balancer:1: unknown balancer strategy 'fastest' in balancer=; available: sessions"))
    }

    @Test func weakKeyIsRefused() async throws {
        let config = try ConfigDirectory(key: nil)
        try config.write("secure-cookie-key", "0123456789abcdef0123\n", mode: 0o644)
        let loose = try await Executable.run("droverd", ["--config-dir", config.path])
        #expect(loose.status == 2)
        #expect(loose.stderr.contains("run: chmod 0600 \(config.path)/secure-cookie-key"))
        try config.write("secure-cookie-key", "short\n", mode: 0o600)
        let short = try await Executable.run("droverd", ["--config-dir", config.path])
        #expect(short.status == 2)
        #expect(short.stderr.contains("the secure cookie key is 5 bytes; it must be at least 16"))
    }

    @Test func singleNodeGeneratesItsKeyOnFirstRunButAClusterNodeDoesNot() async throws {
        let single = try ConfigDirectory(key: nil)
        let node = try RunningProcess("droverd", ["--config-dir", single.path])
        try await node.waitUntil("health check") { await healthy(single) }
        node.signal(SIGTERM)
        #expect(try await node.wait(timeout: 15) == 0)
        var info = stat()
        #expect(stat(single.directory.url("secure-cookie-key"), &info) == 0)
        #expect(info.st_mode & 0o777 == 0o600)
        #expect(try SecureCookieKey.load(from: single.directory.url("secure-cookie-key")).clusterHash.count == 64)

        let clustered = try ConfigDirectory(key: nil)
        try clustered.write("load-balancer", "")
        let refused = try await Executable.run("droverd", ["--config-dir", clustered.path])
        #expect(refused.status == 2)
        #expect(refused.stderr.contains("no secure cookie key; create one with: drover generate-key --output \(clustered.path)/secure-cookie-key"))
        #expect(!clustered.directory.exists("secure-cookie-key"))
    }

    @Test func portInUseIsAClearError() async throws {
        let first = try ConfigDirectory()
        let node = try RunningProcess("droverd", ["--config-dir", first.path])
        try await node.waitUntil("health check") { await healthy(first) }
        let second = try ConfigDirectory()
        try second.write("rserver.conf", "www-address=\(first.address)\nwww-port=\(first.port)\nserver-data-dir=data\n")
        let result = try await Executable.run("droverd", ["--config-dir", second.path])
        #expect(result.status == 1)
        #expect(result.stderr.contains("cannot listen on \(first.address):\(first.port)"))
        node.signal(SIGTERM)
        #expect(try await node.wait(timeout: 15) == 0)
    }

    /// The seed's legacy `load-balancer`: settings under `[config]`, bare host names under
    /// `[nodes]` one per line. The node starts; the names are ignored with one warning.
    @Test func theSeedsLegacyLoadBalancerWithBareNodeNamesStartsTheNode() async throws {
        let config = try ConfigDirectory()
        try config.write("load-balancer", "[config]\nbalancer=sessions\nheartbeat-interval=1\ntimeout=2\n\n[nodes]\nrsw-primary.example.com\nrsw-secondary.example.com\n")
        let node = try RunningProcess("droverd", ["--config-dir", config.path])
        try await node.waitUntil("health check") { await healthy(config) }
        node.signal(SIGTERM)
        #expect(try await node.wait(timeout: 15) == 0)
        let warnings = node.stderr.split(separator: "\n").filter { $0.contains("event=configuration-warning") }
        #expect(warnings.count == 1, "\(node.stderr)")
        #expect(warnings.first?.contains("the [nodes] section is ignored (2 entries)") == true)
        let verified = try await Executable.run("drover", ["verify", "--config-dir", config.path])
        #expect(verified.status == 0, "\(verified.stdout)\(verified.stderr)")
    }

    /// admin-group naming a group this machine lacks is said at start: nobody could open /admin.
    @Test func anAdminGroupThatIsNotAGroupHereIsWarnedAboutAtStart() async throws {
        for (group, warned) in [("drover-no-such-group", true), ("root", false)] {
            let config = try ConfigDirectory(rserver: "admin-group=\(group)\n")
            let node = try RunningProcess("droverd", ["--config-dir", config.path])
            try await node.waitUntil("health check") { await healthy(config) }
            node.signal(SIGTERM)
            #expect(try await node.wait(timeout: 15) == 0)
            let warnings = node.stderr.split(separator: "\n").filter { $0.contains("event=configuration-warning") && $0.contains("admin-group") }
            #expect(warnings.count == (warned ? 1 : 0), "\(group): \(node.stderr)")
            if warned { #expect(warnings.first?.contains("admin-group=drover-no-such-group is not a group on this machine") == true) }
        }
    }

    @Test func diagnosticsGoToStderrOrToTheTmpFile() async throws {
        let config = try ConfigDirectory()
        try config.write("load-balancer", "diagnostics=stderr\n")
        let node = try RunningProcess("droverd", ["--config-dir", config.path])
        try await node.waitUntil("health check") { await healthy(config) }
        node.signal(SIGTERM)
        #expect(try await node.wait(timeout: 15) == 0)
        #expect(node.stderr.contains("pid=\(node.pid) event=node-starting address=\(config.address):\(config.port)"))
        #expect(node.stderr.contains("pid=\(node.pid) event=node-stopped"))

        let tmp = try ConfigDirectory()
        try tmp.write("load-balancer", "diagnostics=tmp\ndiagnostics-file=diag.log\n")
        let other = try RunningProcess("droverd", ["--config-dir", tmp.path])
        try await other.waitUntil("health check") { await healthy(tmp) }
        other.signal(SIGTERM)
        #expect(try await other.wait(timeout: 15) == 0)
        let events = try #require(tmp.directory.read("diag.log")).split(separator: "\n").map { line in
            line.split(separator: " ").first { $0.hasPrefix("event=") }.map { String($0.dropFirst(6)) } ?? ""
        }
        // The ordered stop: placement left (offline mode), then Offline.
        #expect(events == ["cluster-defined", "node-joined", "node-starting", "node-stopping", "node-status", "node-left", "node-stopped"])
    }
}

@Suite struct DroverdUsageTests {
    @Test func badUsageExitsTwo() async throws {
        let result = try await Executable.run("droverd", ["--frobnicate"])
        #expect(result.status == 2)
        #expect(result.stderr.contains("--frobnicate"))
    }
}
