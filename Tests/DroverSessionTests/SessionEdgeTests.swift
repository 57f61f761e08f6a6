import DroverCluster
import DroverKernel
import DroverTesting
import Foundation
import Testing

@Suite struct SessionEdgeTests {
    @Test func aCommandThatFailsToStartGivesTheReasonAndLeavesNothing() async throws {
        let cluster = try await TestCluster(addresses: ["127.0.0.1"], backend: .sqlite,
                                            rserver: "session-command=/bin/sh -c 'echo cannot find my notebook >&2; exit 3'\nauth-none=1\n")
        try await cluster.start(0)
        let node = cluster.nodes[0]
        let failed = try await RawHTTPClient.request("POST", host: node.address, port: node.port, path: "/api/sessions")
        #expect(failed.status == 500, "a start that failed is not a node that is unavailable")
        #expect(failed.header("Retry-After") == nil)
        #expect(failed.body.contains("the 'default' session exited (status 3) before answering; the end of its log: cannot find my notebook"), "\(failed.body)")
        #expect(try await RawHTTPClient.request(host: node.address, port: node.port, path: "/api/sessions").body == "[]")
        #expect(try await cluster.stop(0) == 0)
    }

    /// Past `max-starting-sessions`, a start is refused at once with 429 and `Retry-After`,
    /// never a bare 503; every start within the limit succeeds.
    /// Issue 34, item 8: another site cannot frame Drover's pages (the home page, the sign-in
    /// form, the admin dashboard, errors), nor a browser sniff them; a session's pages are its own.
    @Test func droversOwnPagesCannotBeFramedAndSessionPagesAreLeftAlone() async throws {
        let cluster = try await TestCluster(addresses: ["127.0.0.1"], backend: .sqlite, rserver: "session-command=\(demoCommand)\nauth-none=1\n")
        try await cluster.start(0)
        let node = cluster.nodes[0]
        let id = try #require(try await startSessions(cluster, count: 1).first?.id)
        for path in ["/", "/admin", "/api/me", "/api/sessions", "/nowhere", "/s/\(String(repeating: "0", count: 32))/"] {
            let answer = try await RawHTTPClient.request(host: node.address, port: node.port, path: path)
            #expect(answer.header("Content-Security-Policy") == "frame-ancestors 'none'" && answer.header("X-Frame-Options") == "DENY"
                        && answer.header("X-Content-Type-Options") == "nosniff", "\(path): \(answer.status) \(answer.headers)")
        }
        let page = try await RawHTTPClient.request(host: node.address, port: node.port, path: "/s/\(id)/")
        #expect(page.status == 200 && page.header("X-Frame-Options") == nil && page.header("Content-Security-Policy") == nil, "\(page.headers)")
        #expect(try await cluster.stop(0) == 0)
    }

    @Test func startsPastTheNodesLimitAre429WithRetryAfter() async throws {
        // A session that takes a second to start, so the starts overlap.
        let cluster = try await TestCluster(addresses: ["127.0.0.1"], backend: .sqlite,
                                            rserver: "session-command=/bin/sh -c 'sleep 1; exec \(demoCommand)'\nauth-none=1\nmax-starting-sessions=2\n")
        try await cluster.start(0)
        let node = cluster.nodes[0]
        let answers = await concurrently(8) { _ in
            try? await RawHTTPClient.request("POST", host: node.address, port: node.port, path: "/api/sessions", timeout: 60)
        }
        let statuses = answers.map { $0?.status ?? 0 }
        #expect(statuses.allSatisfy { $0 == 201 || $0 == 429 }, "\(statuses)")
        #expect(statuses.filter { $0 == 201 }.count >= 2, "\(statuses)")
        let refused = answers.compactMap { $0 }.filter { $0.status == 429 }
        #expect(!refused.isEmpty, "8 starts at once against a limit of 2: \(statuses)")
        for answer in refused {
            #expect(answer.header("Retry-After") == "1")
            #expect(answer.body.contains("max-starting-sessions"), "\(answer.body)")
        }
        // Refused starts leave no row behind.
        let listed = try await RawHTTPClient.request(host: node.address, port: node.port, path: "/api/sessions")
        let rows = (try JSONSerialization.jsonObject(with: Data(listed.body.utf8)) as? [[String: Any]]) ?? []
        #expect(rows.count == statuses.filter { $0 == 201 }.count, "\(listed.body)")
        #expect(try await cluster.stop(0) == 0)
    }

    /// Found by the chaos test: quitting a suspended session left its saved state behind.
    /// Found by the chaos test: a session ran on after another node had re-placed it away from
    /// its healthy owner (the owner's heartbeats were late through a database restart); the new
    /// owner's start waited for the old copy's lock, failed and freed the row, and so did every
    /// later request, for as long as the old owner lived. The owner now ends a copy whose row is
    /// no longer its own, saving its state, and the session starts where the row says.
    @Test func aSessionTakenAwayFromAHealthyOwnerEndsThereAndStartsElsewhereWithItsState() async throws {
        let cluster = try await TestCluster(addresses: ["127.0.0.1", "127.0.0.2"], backend: .sqlite,
                                            rserver: "session-command=\(demoCommand)\nauth-none=1\n")
        try await cluster.start(0)
        try await cluster.start(1)
        let (id, owner) = try #require(try await startSessions(cluster, count: 1).first)
        let (home, other) = (cluster.nodes[owner], cluster.nodes[1 - owner])
        for expected in 1...3 {
            #expect(count(try await RawHTTPClient.request("POST", host: home.address, port: home.port, path: "/s/\(id)/count")) == expected)
        }
        // The owner takes no new sessions, so the restart below happens on the other node.
        #expect(try await cluster.drover(owner, ["offline"]).status == 0)
        try await cluster.eventually("the owner is in offline mode") { try await cluster.status(of: home.address) == "Offline mode" }
        // What a node that re-placed it and then failed to start it leaves: suspended, no node.
        let script = "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); "
            + "c.execute(\"update session set node_id=null, pid=null, port=null, state='suspended' where id=?\", (sys.argv[2],)); c.commit()"
        let written = try await Executable.run("/usr/bin/env", ["python3", "-c", script, cluster.shared.url("drover.sqlite"), id])
        #expect(written.status == 0, "\(written.stderr)")
        // The old copy saves and ends; the lock is free; a request through the other node
        // starts it again with its count.
        try await cluster.eventually("the session answers through the other node with its count", timeout: 40) {
            count(try await RawHTTPClient.request("POST", host: other.address, port: other.port, path: "/s/\(id)/count", timeout: 30)) == 4
        }
        let log = cluster.process(owner)?.stderr ?? ""
        #expect(log.split(separator: "\n").contains { $0.contains("event=session-taken-away") && $0.contains(id) }, "\(log.suffix(2000))")
        #expect(SystemUsers.runningSessionIDs().filter { $0 == id }.count == 1, "one copy of the session runs")
        for index in 0..<2 { #expect(try await cluster.stop(index) == 0) }
    }

    /// Found by the chaos test: a session quit through another node while its owner looked dead
    /// (paused, or cut off from the database) had its saved state back once the owner ended its
    /// copy, because a session saves when it is ended. The owner now removes the state of a copy
    /// whose row is gone, after ending it.
    @Test func aCopyWhoseRowWasQuitElsewhereEndsWithoutLeavingItsState() async throws {
        let cluster = try await TestCluster(addresses: ["127.0.0.1"], backend: .sqlite,
                                            rserver: "session-command=\(demoCommand)\nauth-none=1\n")
        try await cluster.start(0)
        let node = cluster.nodes[0]
        let (id, _) = try #require(try await startSessions(cluster, count: 1).first)
        #expect(count(try await RawHTTPClient.request("POST", host: node.address, port: node.port, path: "/s/\(id)/count")) == 1)
        let state = try #require(SystemUsers.account(SystemUsers.currentName)).home + "/.local/share/drover/sessions/" + id
        // What a quit through another node leaves while this one looked dead: no row, no state.
        let script = "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute(\"delete from session where id=?\", (sys.argv[2],)); c.commit()"
        let written = try await Executable.run("/usr/bin/env", ["python3", "-c", script, cluster.shared.url("drover.sqlite"), id])
        #expect(written.status == 0, "\(written.stderr)")
        try await cluster.eventually("the copy ends", timeout: 20) {
            let log = cluster.process(0)?.stderr ?? ""
            return !SystemUsers.runningSessionIDs().contains(id)
                && log.split(separator: "\n").contains { $0.contains("event=session-quit") && $0.contains(id) }
        }
        #expect(!FileManager.default.fileExists(atPath: state), "the quit session's saved state is removed")
        #expect(try await RawHTTPClient.request(host: node.address, port: node.port, path: "/s/\(id)/count").status == 404)
        #expect(try await cluster.stop(0) == 0)
    }

    /// Found by the chaos test (a user's request answered 500): a start forwarded to a node
    /// whose row had changed meanwhile (that node restarted and freed its rows, or another
    /// request started the session elsewhere) was a failed start, 500, and the node that sent it
    /// then freed the row, whoever had started it since. It is 409 `moved` now: the sender looks
    /// at the row again, and a start it did not make is left alone.
    @Test func aStartForASessionThatMovedMeanwhileIsAConflictAndChangesNothing() async throws {
        let cluster = try await TestCluster(addresses: ["127.0.0.1"], backend: .sqlite,
                                            rserver: "session-command=\(demoCommand)\nauth-none=1\n")
        try await cluster.start(0)
        let node = cluster.nodes[0]
        let (id, _) = try #require(try await startSessions(cluster, count: 1).first)
        #expect(try await RawHTTPClient.request("POST", host: node.address, port: node.port, path: "/api/sessions/\(id)/suspend").status == 202)
        try await cluster.eventually("suspended", timeout: 15) { !SystemUsers.runningSessionIDs().contains(id) }
        let key = try SecureCookieKey.load(from: node.path + "/secure-cookie-key")
        let client = try NodeClient(key: key, protocol: .http, timeoutSeconds: 10)
        let answer = try await client.call(.launch(.init(id: id), isNew: false), host: node.address, port: node.port)
        #expect(answer.status == 409, "\(answer.status) \(answer.text)")
        #expect(answer.text.contains("no longer waiting to start on this node"), "\(answer.text)")
        let listed = try await RawHTTPClient.request(host: node.address, port: node.port, path: "/api/sessions")
        #expect(listed.body.contains("\"suspended\""), "the row is left as it was: \(listed.body)")
        // The session still resumes at its next request.
        #expect(count(try await RawHTTPClient.request("POST", host: node.address, port: node.port, path: "/s/\(id)/count")) == 1)
        #expect(try await cluster.stop(0) == 0)
    }

    /// Found by the chaos test: a node placed a session on another, then died before its
    /// start call arrived; the row stayed `starting` on a live node and every request waited
    /// on it ("keeps moving"). The node it names frees it after three `timeout`s and five
    /// seconds, and the next request starts the session.
    @Test func aStartThatNeverCameIsFreedByTheNodeItWasPlacedOn() async throws {
        let cluster = try await TestCluster(addresses: ["127.0.0.1", "127.0.0.2"], backend: .sqlite,
                                            rserver: "session-command=\(demoCommand)\nauth-none=1\n")
        try await cluster.start(0)
        try await cluster.start(1)
        let ids = try await cluster.statuses()
        let placedOn = try #require(ids.first { $0.host == cluster.nodes[1].address }?.id)
        let user = SystemUsers.currentName
        let id = "fedcba9876543210fedcba9876543210"
        // The row as placement leaves it, with no start call ever sent.
        let script = "import sqlite3,sys,time; c=sqlite3.connect(sys.argv[1]); t=time.time(); "
            + "c.execute(\"insert into session (id, username, node_id, state, created_at, last_active) values (?, ?, ?, 'starting', ?, ?)\", "
            + "(sys.argv[2], sys.argv[3], int(sys.argv[4]), t, t)); c.commit()"
        let written = try await Executable.run("/usr/bin/env", ["python3", "-c", script, cluster.shared.url("drover.sqlite"), id, user, String(placedOn)])
        #expect(written.status == 0, "\(written.stderr)")
        let via = cluster.nodes[0]
        let started = Date()
        try await cluster.eventually("the session starts once its orphaned row is freed", timeout: 45) {
            count(try await RawHTTPClient.request(host: via.address, port: via.port, path: "/s/\(id)/count", timeout: 30)) == 0
        }
        // Scaled timeout=2: freed after 3 × 2 + 5 = 11 s (plus a sweep), not before.
        #expect(Date().timeIntervalSince(started) >= 10, "freed too early: a start on its way could lose its row")
        let log = cluster.process(1)?.stderr ?? ""
        #expect(log.split(separator: "\n").contains { $0.contains("event=orphaned-start-freed") && $0.contains(id) }, "\(log.suffix(1500))")
        for index in 0..<2 { #expect(try await cluster.stop(index) == 0) }
    }

    @Test func quitRemovesTheProcessTheRowAndTheSavedStateWhetherRunningOrSuspended() async throws {
        let cluster = try await TestCluster(addresses: ["127.0.0.1", "127.0.0.2"], backend: .sqlite,
                                            rserver: "session-command=\(demoCommand)\nauth-none=1\n")
        try await cluster.start(0)
        try await cluster.start(1)
        let node = cluster.nodes[0]
        let home = (SystemUsers.account(SystemUsers.currentName)?.home ?? NSHomeDirectory())
        func stateDirectory(_ id: String) -> String { home + "/.local/share/drover/sessions/" + id }
        var ids: [String] = []
        for _ in 0..<2 {
            let created = try await RawHTTPClient.request("POST", host: node.address, port: node.port, path: "/api/sessions")
            let id = try #require(json(created)["id"] as? String, "\(created.status) \(created.body)")
            #expect(count(try await RawHTTPClient.request("POST", host: node.address, port: node.port, path: "/s/\(id)/count")) == 1)
            ids.append(id)
        }
        // The first is suspended: its count is saved, then quitting removes it.
        #expect(try await RawHTTPClient.request("POST", host: node.address, port: node.port, path: "/api/sessions/\(ids[0])/suspend").status == 202)
        try await cluster.eventually("suspended and saved", timeout: 15) {
            FileManager.default.fileExists(atPath: stateDirectory(ids[0]) + "/count") && !SystemUsers.runningSessionIDs().contains(ids[0])
        }
        // Each quit goes through the node that is not the one it was created on.
        for id in ids {
            let other = cluster.nodes[1]
            #expect(try await RawHTTPClient.request("DELETE", host: other.address, port: other.port, path: "/api/sessions/\(id)").status == 204)
            #expect(try await RawHTTPClient.request(host: node.address, port: node.port, path: "/s/\(id)/count").status == 404)
            #expect(!FileManager.default.fileExists(atPath: stateDirectory(id)), "saved state of \(id) removed")
            #expect(!SystemUsers.runningSessionIDs().contains(id))
            #expect(try await RawHTTPClient.request("DELETE", host: node.address, port: node.port, path: "/api/sessions/\(id)").status == 404)
        }
        #expect(try await RawHTTPClient.request(host: node.address, port: node.port, path: "/api/sessions").body == "[]")
        for index in 0..<2 { #expect(try await cluster.stop(index) == 0) }
    }

    /// Found by the chaos test: a quit answered 204 while the session lived on (it had moved
    /// meanwhile); a quit now ends only when the row is gone, and works when the owner is dead.
    @Test func quittingASessionWhoseNodeDiedRemovesItThroughAnotherNode() async throws {
        let cluster = try await TestCluster(addresses: ["127.0.0.1", "127.0.0.2"], backend: .sqlite,
                                            rserver: "session-command=\(demoCommand)\nauth-none=1\n")
        try await cluster.start(0)
        try await cluster.start(1)
        let ids = try await cluster.statuses().reduce(into: [String: Int64]()) { $0[$1.host] = $1.id }
        // Node 1 in offline mode for a moment, so the session lands on node 0.
        let node = cluster.nodes[1]
        #expect(try await cluster.drover(1, ["offline"]).status == 0)
        try await cluster.eventually("node 1 in offline mode", timeout: 5) { try await cluster.status(of: "127.0.0.2") == "Offline mode" }
        let created = try await RawHTTPClient.request("POST", host: node.address, port: node.port, path: "/api/sessions")
        let id = try #require(json(created)["id"] as? String, "\(created.status) \(created.body)")
        #expect((json(created)["node"] as? NSNumber)?.int64Value == ids["127.0.0.1"])
        #expect(try await cluster.drover(1, ["online"]).status == 0)
        #expect(try await cluster.stop(0, signal: SIGKILL) == 128 + SIGKILL)
        try await cluster.eventually("node 0 Unreachable", timeout: 10) { try await cluster.status(of: "127.0.0.1") == "Unreachable" }
        #expect(try await RawHTTPClient.request("DELETE", host: node.address, port: node.port, path: "/api/sessions/\(id)").status == 204)
        #expect(try await RawHTTPClient.request(host: node.address, port: node.port, path: "/api/sessions").body == "[]")
        #expect(!SystemUsers.runningSessionIDs().contains(id))
        #expect(try await cluster.stop(1) == 0)
    }

    /// Found by the chaos test: a node killed and restarted before its peers noticed kept its
    /// old rows `running` (or `starting`), so requests through other nodes went round in circles.
    @Test func aNodeRestartedAfterSIGKILLFreesTheSessionsOfItsPreviousRunAtOnce() async throws {
        let cluster = try await TestCluster(addresses: ["127.0.0.1"], backend: .sqlite,
                                            rserver: "session-command=\(demoCommand)\nauth-none=1\n")
        try await cluster.start(0)
        let node = cluster.nodes[0]
        let created = try await RawHTTPClient.request("POST", host: node.address, port: node.port, path: "/api/sessions")
        let id = try #require(json(created)["id"] as? String, "\(created.status) \(created.body)")
        #expect(count(try await RawHTTPClient.request("POST", host: node.address, port: node.port, path: "/s/\(id)/count")) == 1)
        #expect(try await RawHTTPClient.request("POST", host: node.address, port: node.port, path: "/api/sessions/\(id)/suspend").status == 202)
        func state() async throws -> String? {
            let listed = try await RawHTTPClient.request(host: node.address, port: node.port, path: "/api/sessions")
            return ((try JSONSerialization.jsonObject(with: Data(listed.body.utf8)) as? [[String: Any]])?.first { $0["id"] as? String == id })?["state"] as? String
        }
        try await cluster.eventually("suspended", timeout: 15) { try await state() == "suspended" }
        #expect(count(try await RawHTTPClient.request("POST", host: node.address, port: node.port, path: "/s/\(id)/count", timeout: 30)) == 2, "resumed from 1")
        #expect(try await state() == "running")
        #expect(try await cluster.stop(0, signal: SIGKILL) == 128 + SIGKILL)
        try await cluster.start(0)
        #expect(try await state() == "suspended", "freed as the node started, not left running")
        #expect(count(try await RawHTTPClient.request(host: node.address, port: node.port, path: "/s/\(id)/count", timeout: 30)) == 1,
                "the unsaved increment died with the node; the saved count is back")
        #expect(SystemUsers.runningSessionIDs().filter { $0 == id }.count == 1)
        #expect(try await RawHTTPClient.request("DELETE", host: node.address, port: node.port, path: "/api/sessions/\(id)").status == 204)
        #expect(try await cluster.stop(0) == 0)
    }

    /// A session that takes longer than `session-response-timeout` to start answering gets the
    /// client a 504; on a keep-alive connection each request has its own deadline.
    @Test func aSlowSessionGivesA504AfterTheResponseTimeoutAndEachRequestHasItsOwnDeadline() async throws {
        let scripts = TemporaryDirectory()
        try scripts.write("slow-session", """
            #!/usr/bin/env python3
            import http.server, os, time, urllib.parse
            class Slow(http.server.BaseHTTPRequestHandler):
                protocol_version = "HTTP/1.1"
                def do_GET(self):
                    query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
                    time.sleep(int(query.get("ms", ["0"])[0]) / 1000)
                    self.send_response(200)
                    self.send_header("Content-Length", "3")
                    self.end_headers()
                    self.wfile.write(b"ok\\n")
                def log_message(self, *args):
                    pass
            \(pythonServeOnListenFD)
            serve(http.server.ThreadingHTTPServer, Slow)
            """, mode: 0o755)
        let cluster = try await TestCluster(addresses: ["127.0.0.1"], backend: .sqlite,
                                            rserver: "session-command=\(scripts.url("slow-session"))\nauth-none=1\nsession-response-timeout=1\n")
        try await cluster.start(0)
        let node = cluster.nodes[0]
        let created = try await RawHTTPClient.request("POST", host: node.address, port: node.port, path: "/api/sessions")
        let id = try #require(json(created)["id"] as? String, "\(created.status) \(created.body)")
        let started = Date()
        let slow = try await RawHTTPClient.request(host: node.address, port: node.port, path: "/s/\(id)/x?ms=15000")
        #expect(slow.status == 504)
        #expect(slow.body.contains("did not answer within 1 s (session-response-timeout)"), "\(slow.body)")
        // Long before the session's own answer at 15 s (which would have been a 200). How promptly
        // on a loaded machine is not this test's to judge: proof runs saw the 504 of a 1 s
        // deadline arrive after 5 s while the whole suite started at once on two cores.
        #expect(Date().timeIntervalSince(started) < 15)
        // Keep-alive: a request sent 0.7 s after the first, answering after 0.6 s, is within its
        // own second even though the first request's second has passed.
        let connection = try await RawHTTPClient.KeepAlive(host: node.address, port: node.port)
        #expect(try await connection.request(path: "/s/\(id)/x").status == 200)
        try await Task.sleep(for: .milliseconds(700))
        #expect(try await connection.request(path: "/s/\(id)/x?ms=600").status == 200)
        #expect(try await connection.request(path: "/s/\(id)/x?ms=2000").status == 504)
        #expect(try await cluster.stop(0) == 0)
    }

    @Test func theProxyAddsForwardingHeadersAndKeepsDroversOwnFromTheSession() async throws {
        let scripts = TemporaryDirectory()
        // A session program that answers every request with the headers it received.
        try scripts.write("headers-session", """
            #!/usr/bin/env python3
            import http.server, json, os
            class Echo(http.server.BaseHTTPRequestHandler):
                def do_GET(self):
                    body = json.dumps(dict(self.headers.items())).encode()
                    self.send_response(200)
                    self.send_header("Set-Cookie", "theme=light; Path=/")
                    self.send_header("Set-Cookie", "drover-auth=forged-by-the-session; Path=/")
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                def log_message(self, *args):
                    pass
            \(pythonServeOnListenFD)
            serve(http.server.HTTPServer, Echo)
            """, mode: 0o755)
        let cluster = try await TestCluster(addresses: ["127.0.0.1", "127.0.0.2"], backend: .sqlite,
                                            rserver: "session-command=\(scripts.url("headers-session"))\nauth-none=1\n")
        try await cluster.start(0)
        try await cluster.start(1)
        let node = cluster.nodes[0]
        let created = try await RawHTTPClient.request("POST", host: node.address, port: node.port, path: "/api/sessions", body: #"{"label":"hdr"}"#)
        let id = try #require(json(created)["id"] as? String, "\(created.status) \(created.body)")
        for via in cluster.nodes {
            let answer = try await RawHTTPClient.request(host: via.address, port: via.port, path: "/s/\(id)/x",
                                                   headers: [("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-Proto", "https"),
                                                             ("X-Forwarded-Host", "bank.example"), ("Proxy-Authorization", "Basic eDp5"),
                                                             ("Keep-Alive", "timeout=5"), ("TE", "trailers"),
                                                             ("Cookie", "theme=dark; drover-auth=not-for-the-session; lang=en")],
                                                   localAddress: "127.0.0.9")
            let seen = json(answer)
            #expect(answer.status == 200)
            // The client's address, never what the client claimed; the same through the other
            // node, whose requests reach the session as they left it (a session hop).
            #expect(seen["X-Forwarded-For"] as? String == "127.0.0.9", "\(seen)")
            #expect(seen["X-Forwarded-Proto"] as? String == "http")
            #expect(seen["X-Forwarded-Host"] as? String == "\(via.address):\(via.port)")
            for name in ["Proxy-Authorization", "Keep-Alive", "Te"] { #expect(seen[name] == nil, "\(name) reached the session") }
            // The session's cookies are confined to its path and cannot be Drover's.
            let cookies = answer.headers.filter { $0.0.lowercased() == "set-cookie" }.map(\.1)
            #expect(cookies == ["theme=light; Path=/s/\(id)/"], "\(cookies)")
            // Drover's own cookie and the hop's headers never reach the session; other cookies do.
            #expect(seen["Cookie"] as? String == "theme=dark; lang=en", "\(seen)")
            #expect(!seen.keys.contains { $0.lowercased().hasPrefix("x-drover") }, "\(seen.keys.sorted())")
            // A client cannot pose as a forwarding node: a hop without a valid signature is refused.
            let forged = try await RawHTTPClient.request(host: via.address, port: via.port, path: "/s/\(id)/x",
                                                         headers: [("X-Drover-Hop", "1"), ("X-Drover-Hop-User", "root")])
            #expect(forged.status == 403, "\(forged.status) \(forged.body)")
        }
        for index in 0..<2 { #expect(try await cluster.stop(index) == 0) }
    }
}
