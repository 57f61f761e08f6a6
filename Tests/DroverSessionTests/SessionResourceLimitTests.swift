import DroverKernel
import DroverSessionProtocol
import DroverTesting
import Foundation
import Synchronization
import Testing

/// A session program that takes what it is asked for: `GET …/hog` starts a process that
/// allocates (and touches) 16 MiB at a time up to 512 MiB; `GET …/burn` keeps one CPU busy for two seconds and answers
/// how much CPU time it got; anything else answers its pid.
let resourceHogProgram = #"""
import http.server, json, os, socketserver, subprocess, sys, time
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.endswith("/hog"):
            # In a process of its own, as a Jupyter kernel is: the OOM killer picks it, the largest.
            code = "held = []\nfor _ in range(32): held.append(bytearray(b'\\x01') * (16 << 20))"
            ended = subprocess.run([sys.executable, "-c", code]).returncode
            body = b"still alive\n" if ended == 0 else ("the hog ended with %d\n" % ended).encode()
        elif self.path.endswith("/burn"):
            wall, cpu = time.monotonic(), time.process_time()
            while time.monotonic() - wall < 2.0:
                pass
            body = json.dumps({"cpu": time.process_time() - cpu, "wall": time.monotonic() - wall}).encode()
        else:
            body = json.dumps({"pid": os.getpid()}).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *args):
        pass
\#(pythonUnixServerClass)
UnixServer(sys.argv[1], Handler).serve_forever()
"""#

/// Per-kind resource limits (issue 35, items 2 and 3) on this machine's real cgroups (v1 memory
/// and cpu here, beside a v2 hierarchy without controllers), with real accounts and droverd.
@Suite(.serialized) struct SessionResourceLimitTests {
    static let (owner, neighbour) = ("droverrl1", "droverrl2")
    static let limit = "96M"

    @Test(.enabled(if: SystemUsers.available || ProcessInfo.processInfo.environment["CI"] == "true"))
    func aSessionOverItsMemoryLimitIsEndedAloneAndWaitsForItsUser() async throws {
        let host = CgroupHost.current()
        try #require(host.support(.memory).isUsable && host.support(.cpu).isUsable,
                     "this test needs the memory and cpu cgroup controllers (as root): \(host.support(.memory)); \(host.support(.cpu))")
        try await SystemUsers.ensure([Self.owner, Self.neighbour])
        let setup = try SessionKindTests.Setup()
        try setup.programs.write("hog.py", resourceHogProgram)
        let kind = """
            command=["/usr/bin/python3", "\(setup.programs.url("hog.py"))", "{socket}"]
            label=Hog
            endpoint=unix-socket
            memory-limit=\(Self.limit)
            cpu-limit=0.5
            """
        let cluster = try await setup.cluster(kinds: ["hog": kind], rserver: "admin-group=\(Self.owner)\n")
        try await cluster.start(0)
        let node = cluster.nodes[0]
        let (owner, neighbour) = (try await signIn(node, user: Self.owner), try await signIn(node, user: Self.neighbour))
        let hog = try #require(json(try await SessionKindTests.start(node, owner, kind: "hog"))["id"] as? String)
        let steady = try #require(json(try await SessionKindTests.start(node, neighbour, kind: "hog"))["id"] as? String)

        // The limits are on the session's cgroups; its guard is outside them.
        let pid = try #require(json(try await SessionKindTests.get(node, owner, "/s/\(hog)/"))["pid"] as? Int)
        let cgroups = try #require(SessionCgroupSet.of(pid: Int32(pid), sessionID: hog), "the program's cgroups")
        let memory = try #require(cgroups.memory)
        #expect(try String(contentsOfFile: memory + "/memory.limit_in_bytes", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines) == "100663296")
        #expect(try String(contentsOfFile: try #require(cgroups.cpu) + "/cpu.cfs_quota_us", encoding: .utf8).hasPrefix("50000"))
        let stat = try String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)
        let guardPID = try #require(stat[stat.index(after: stat.lastIndex(of: ")")!)...].split(separator: " ").dropFirst(1).first)
        let guardCgroups = try String(contentsOfFile: "/proc/\(guardPID)/cgroup", encoding: .utf8)
        #expect(!guardCgroups.contains(CgroupHost.sessionsFolder), "the guard is outside the limited groups: \(guardCgroups)")

        // Operators see the limits and the use.
        let listing = try await cluster.drover(0, ["active-sessions"]).stdout
        #expect(listing.contains("MEMORY") && listing.components(separatedBy: "/ \(Self.limit)").count == 3 && listing.contains("/ 0.5 CPU"), "\(listing)")
        let verify = try await cluster.drover(0, ["verify"]).stdout
        #expect(verify.contains("ok    cgroup controller memory: cgroup v1 (/sys/fs/cgroup/memory); memory-limit is enforced (kinds with memory-limit: hog)"), "\(verify)")
        #expect(verify.contains("ok    cgroup controller cpu: cgroup v1"), "\(verify)")
        let metrics = try await RawHTTPClient.request(host: node.address, port: node.port, path: "/metrics").body
        #expect(metrics.contains(#"drover_session_memory_limit_bytes{kind="hog"} 100663296"#) && metrics.contains(#"drover_session_cpu_limit_cpus{kind="hog"} 0.5"#),
                "\(metrics.split(separator: "\n").filter { $0.contains("session_") && !$0.hasPrefix("#") })")
        let used = metrics.split(separator: "\n").first { $0.hasPrefix(#"drover_session_memory_bytes{kind="hog"} "#) }.flatMap { Double($0.split(separator: " ").last!) } ?? 0
        #expect(used > 1_000_000, "two Python servers use some memory: \(used)")
        let dashboard = try await SessionKindTests.get(node, owner, "/admin/live")
        #expect(dashboard.body.contains("/ \(Self.limit)</td>") && dashboard.body.contains("/ 0.5 CPU</td>"), "\(dashboard.body.suffix(2500))")

        // cpu-limit: a busy loop of two seconds gets about half a CPU.
        let burn = json(try await SessionKindTests.get(node, neighbour, "/s/\(steady)/burn"))
        let share = (burn["cpu"] as? Double ?? 1) / (burn["wall"] as? Double ?? 1)
        #expect(share < 0.7, "a session limited to 0.5 CPU got \(share) of one")

        // The hog goes over its limit while the other session is asked every 100 ms.
        let failures = ManagedCounter()
        let watcher = Task {
            while !Task.isCancelled {
                let answer = try? await SessionKindTests.get(node, neighbour, "/s/\(steady)/")
                if answer?.status != 200 { failures.add() }
                try? await Task.sleep(for: .milliseconds(100))
            }
        }
        let hogged = try? await SessionKindTests.get(node, owner, "/s/\(hog)/hog")
        #expect(hogged?.body != "still alive\n", "the hog got 512 MiB under a limit of \(Self.limit)")
        try await cluster.eventually("the hog is held") {
            let state = try await JupyterLabTests.listed(node, owner)[hog]?.state
            let listed = try await SessionKindTests.get(node, owner, "/api/sessions").body
            return state == "suspended" && listed.contains("memory-limit of \(Self.limit)")
        }
        try await Task.sleep(for: .seconds(1))
        watcher.cancel()
        _ = await watcher.result
        #expect(failures.value == 0, "the other session failed \(failures.value) times while the hog was killed")
        #expect(try await JupyterLabTests.listed(node, neighbour)[steady]?.state == "running")
        #expect(!FileManager.default.fileExists(atPath: memory), "the hog's cgroup is gone")

        // Recorded: an event in the log, an audit row, a metric.
        #expect(cluster.process(0)?.stderr.contains("memory-limit") == true)
        let audit = try await cluster.drover(0, ["audit"]).stdout
        #expect(audit.contains("session-end  \(hog)") && audit.contains("memory-limit: it used more than its memory-limit of \(Self.limit)"), "\(audit)")
        let after = try await RawHTTPClient.request(host: node.address, port: node.port, path: "/metrics").body
        #expect(after.contains(#"drover_session_memory_limit_kills_total{kind="hog"} 1"#) && after.contains(#"drover_session_unasked_ends_total{reason="memory-limit"} 1"#))

        // Its user's next page says why, with a way to start it again; nothing restarts it alone.
        let page = try await RawHTTPClient.request(host: node.address, port: node.port, path: "/s/\(hog)/",
                                                   headers: owner.headers + [("Accept", "text/html")], timeout: 30)
        #expect(page.status == 409 && page.body.contains("This session was stopped") && page.body.contains("memory-limit of \(Self.limit)")
                && page.body.contains(#"<form method="post" action="/sessions/\#(hog)/start"><input type="hidden" name="csrf" value="\#(owner.csrf)">"#),
                "\(page.status) \(page.body)")
        let script = try await RawHTTPClient.request(host: node.address, port: node.port, path: "/s/\(hog)/api/x", headers: owner.headers, timeout: 30)
        #expect(script.status == 409 && script.body.contains("the session was stopped: it used more than its memory-limit"), "\(script.status) \(script.body)")
        let home = try await SessionKindTests.get(node, owner, "/")
        #expect(home.body.contains("stopped: it used more than its memory-limit") && home.body.contains("start again</button>"))
        try await Task.sleep(for: .seconds(2))
        #expect(try await JupyterLabTests.listed(node, owner)[hog]?.state == "suspended", "no restart of its own")
        // Another user cannot start it.
        #expect(try await RawHTTPClient.request("POST", host: node.address, port: node.port, path: "/api/sessions/\(hog)/start",
                                                headers: neighbour.headers).status == 404)
        let started = try await RawHTTPClient.request("POST", host: node.address, port: node.port, path: "/sessions/\(hog)/start",
                                                      headers: [("Cookie", owner.cookie), ("Content-Type", "application/x-www-form-urlencoded")],
                                                      body: "csrf=\(owner.csrf)", timeout: 60)
        #expect(started.status == 303 && started.header("Location") == "/s/\(hog)/", "\(started.status) \(started.body)")
        #expect(try await SessionKindTests.get(node, owner, "/s/\(hog)/").status == 200)
        let listed = try await SessionKindTests.get(node, owner, "/api/sessions")
        #expect(listed.body.contains(#""held":null"#) && !listed.body.contains("memory-limit"), "\(listed.body)")

        #expect(try await cluster.stop(0) == 0)
    }
}

/// A count several tasks add to.
final class ManagedCounter: Sendable {
    private let count = Mutex(0)
    func add() { count.withLock { $0 += 1 } }
    var value: Int { count.withLock { $0 } }
}

/// A program of a kind with `activity=jupyter` that never finishes answering `api/kernels`: it
/// sends a byte a second. The idle poll gives it three seconds, then counts the client's
/// writes alone (the security read of issue 35: a trickling answer held the node's idle sweep
/// for as long as it trickled).
let tricklingProgram = #"""
import socketserver, sys, time
class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        line = self.rfile.readline().decode()
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass
        if "/api/kernels" in line:
            self.wfile.write(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n[")
            for _ in range(120):
                time.sleep(1)
                self.wfile.write(b" ")
        else:
            self.wfile.write(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}")
\#(pythonUnixServerClass)
UnixServer(sys.argv[1], Handler).serve_forever()
"""#

@Suite(.serialized) struct ProgramActivityPollTests {
    @Test(.enabled(if: SystemUsers.available || ProcessInfo.processInfo.environment["CI"] == "true"))
    func aProgramThatTricklesItsAnswerIsSuspendedAsIdle() async throws {
        try await SystemUsers.ensure([SessionResourceLimitTests.owner])
        let setup = try SessionKindTests.Setup()
        try setup.programs.write("trickle.py", tricklingProgram)
        let kind = """
            command=["/usr/bin/python3", "\(setup.programs.url("trickle.py"))", "{socket}"]
            endpoint=unix-socket
            activity=jupyter
            """
        let cluster = try await setup.cluster(kinds: ["slow": kind], rserver: "session-timeout-minutes=0.1\n")
        try await cluster.start(0)
        let node = cluster.nodes[0]
        let visitor = try await signIn(node, user: SessionResourceLimitTests.owner)
        let id = try #require(json(try await SessionKindTests.start(node, visitor, kind: "slow"))["id"] as? String)
        // Six seconds of timeout, a second's sweep, three seconds for the program, and a margin.
        try await cluster.eventually("the session suspended as idle", timeout: 25) {
            try await JupyterLabTests.listed(node, visitor)[id]?.state == "suspended"
        }
        // Its audit row follows within a moment (rows are written in batches).
        try await cluster.eventually("the suspend's reason in the audit log") {
            try await cluster.drover(0, ["audit"]).stdout.contains("idle: no client writes (its Jupyter API did not answer)")
        }
        #expect(try await cluster.stop(0) == 0)
    }
}
