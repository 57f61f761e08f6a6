import DroverCluster
import DroverTesting
import Foundation
import Synchronization
import Testing

/// The rolling upgrade of README's "Upgrading", done as an operator does it (issue 40, item 5):
/// three nodes on PostgreSQL, each in a root of its own (an overlay of this machine's, in a mount
/// namespace) with Drover installed from its Debian package, behind HAProxy that checks
/// `/ready`; shared storage and the homes are the machine's, as NFS would share them. Users keep
/// creating sessions, counting in them and talking to them through WebSockets while each node in
/// turn is drained, stopped, upgraded with `dpkg -i` and started; then the whole cluster is rolled
/// back to the release before (the contraction has not run), upgraded again, and contracted.
///
/// The release after this one is this tree built by `scripts/build-next-release.sh`
/// (`DROVER_TEST_NEXT_BIN`, which scripts/test.sh builds): another release string, protocol 2,
/// a schema expansion and contraction, and a new internal call.
@Suite(.serialized) struct RollingUpgradeTests {
    static let nextBin = ProcessInfo.processInfo.environment["DROVER_TEST_NEXT_BIN"].flatMap { $0.isEmpty ? nil : $0 }
    static var missing: [String] {
        var missing: [String] = []
        if getuid() != 0 { missing.append("root") }
        for tool in ["/usr/bin/dpkg-deb", "/usr/bin/unshare", "/usr/bin/nsenter", "/usr/sbin/haproxy"] where !FileManager.default.isExecutableFile(atPath: tool) {
            missing.append(tool)
        }
        if nextBin.map({ !FileManager.default.isExecutableFile(atPath: $0 + "/droverd") }) ?? true {
            missing.append("the next release's build (DROVER_TEST_NEXT_BIN, scripts/build-next-release.sh)")
        }
        if PostgresTestServer.current == nil { missing.append("PostgreSQL (DROVER_TEST_PG_*)") }
        return missing
    }
    /// In CI the test runs or fails; elsewhere it runs where it can.
    static var shouldRun: Bool { ProcessInfo.processInfo.environment["CI"] == "true" || missing.isEmpty }

    @Test(.enabled(if: shouldRun, "needs root, dpkg-deb, unshare, nsenter, HAProxy, PostgreSQL and scripts/build-next-release.sh"))
    func aClusterUpgradesOneNodeAtATimeWhileItsUsersWorkAndRollsBackBeforeTheContraction() async throws {
        try #require(Self.missing.isEmpty, "missing: \(Self.missing.joined(separator: ", "))")
        try await HeavyTests.run(.cores(1.0)) { try await rollingUpgrade() }
    }

    func rollingUpgrade() async throws {
        let work = TemporaryDirectory(prefix: "drover-rolling")
        let release = ClusterMembership.currentVersion
        let nextVersion = try #require(try await Executable.run(Self.nextBin! + "/droverd", ["--version"]).stdout
            .split(separator: " ").dropFirst().first.map(String.init))
        let packages = PackageTests()
        let oldPackage = try await packages.package(into: work.path + "/n")
        let newPackage = try await packages.package(into: work.path + "/next", next: Self.nextBin!)
        let server = try PostgresTestServer.required()

        let cluster = try await TestCluster(addresses: ["127.0.0.1", "127.0.0.2", "127.0.0.3"], backend: .postgresql(server),
                                            rserver: "session-command=/usr/lib/drover/bin/drover-demo-session\nauth-none=1\n"
                                                + "auth-none-allow-anyone-on-the-network=1\n")
        let database = try #require(cluster.databaseName)
        var nodes: [PackagedNode] = []
        for (index, config) in cluster.nodes.enumerated() {
            let node = try await PackagedNode(index: index, config: config, layers: work.path + "/node\(index)")
            try await node.install(oldPackage)
            try await node.useConfiguration()
            nodes.append(node)
        }
        for node in nodes { try await node.start() }
        let front = try await FrontBalancer(nodes: cluster.nodes, folder: work.path)
        #expect(try await versions(nodes[0]) == Array(repeating: "\(release) (protocol 1)", count: 3))

        // The users, through the front balancer, from here to the end.
        let users = Users(host: "127.0.0.1", port: front.port)
        try await users.start(counters: 6, webSockets: 3)
        let doubles = DoubleWatcher()

        // Forward, one node at a time. While the cluster mixes, sessions go to the new release.
        for (step, node) in nodes.enumerated() {
            try await node.roll(to: newPackage)
            let expected = (0..<3).map { $0 <= step ? "\(nextVersion) (protocol 2)" : "\(release) (protocol 1)" }
            #expect(try await versions(nodes[0]) == expected, "after upgrading node \(step)")
            if step == 0 {
                // The only node of the new release gets the next new session.
                let placed = try await users.createSession()
                #expect(try await sessionNode(server, database, placed) == node.id, "a new session goes to the upgraded node")
            }
        }
        let afterForward = try await Executable.run(nodes[0].drover, nodes[0].droverArguments(["migrate-db", "--status"]))
        #expect(afterForward.stdout.contains("12"), "the contraction is pending: \(afterForward.stdout)\(afterForward.stderr)")
        #expect(try await contracted(server, database) == false)

        // Back to the release before, one node at a time, before the contraction.
        for node in nodes { try await node.roll(to: oldPackage) }
        #expect(try await versions(nodes[0]) == Array(repeating: "\(release) (protocol 1)", count: 3))

        // Forward again, then the contraction.
        for node in nodes { try await node.roll(to: newPackage) }
        #expect(try await versions(nodes[0]) == Array(repeating: "\(nextVersion) (protocol 2)", count: 3))
        let contraction = try await Executable.run(nodes[0].drover, nodes[0].droverArguments(["migrate-db"]))
        #expect(contraction.status == 0, "\(contraction.stdout)\(contraction.stderr)")
        #expect(try await contracted(server, database) == true)

        // What the users saw.
        let seen = try await users.stop()
        print("rolling upgrade: \(seen.summary)")
        #expect(seen.failedRequests.isEmpty, "plain HTTP requests failed: \(seen.failedRequests.prefix(10))")
        #expect(seen.wrongCloses.isEmpty, "WebSockets ended without the reconnect code: \(seen.wrongCloses.prefix(10))")
        #expect(seen.wrongEchoes.isEmpty, "WebSocket echoes garbled: \(seen.wrongEchoes.prefix(5))")
        #expect(seen.reconnects > 0, "the WebSockets were moved and reconnected")
        #expect(seen.counted > 100, "the users kept working: \(seen.summary)")

        // The new call, both ways: the first node upgraded found older peers, the last one new ones.
        let first = nodes[0].log, last = nodes[2].log
        #expect(first.contains("it does not know the build call"), "node 0 handled the older peers' 404")
        #expect(last.contains("Drover \(nextVersion) (protocol 2), by the build call"), "node 2 asked the new peers")

        // Nothing ran twice; every count answered is in its session, in memory and saved.
        let ranTwice = doubles.stop().intersection(seen.sessions)
        #expect(ranTwice.isEmpty, "sessions ran twice at once: \(ranTwice)")
        for (id, answered) in seen.counts {
            let now = try await users.count(id)
            #expect(now == answered, "session \(id.prefix(6)) counts \(now.map(String.init) ?? "nothing"), \(answered) were answered")
        }
        for id in seen.sessions { try await users.suspend(id) }
        try await eventually("every session suspended", timeout: 30) {
            try await server.psql(database, "SELECT count(*) FROM session WHERE state <> 'suspended'").trimmingCharacters(in: .whitespacesAndNewlines) == "0"
        }
        for (id, answered) in seen.counts {
            #expect(DemoSessionState.savedCount(id) == answered, "session \(id.prefix(6)) saved \(DemoSessionState.savedCount(id) ?? -1) of \(answered)")
            DemoSessionState.remove(id)
        }
        for node in nodes { #expect(try await node.stop() == 0) }
        front.stop()
    }

    /// Each node's `version (protocol P)` as `list-nodes --json` shows it, in id order.
    func versions(_ via: PackagedNode) async throws -> [String] {
        let listed = try await Executable.run(via.drover, via.droverArguments(["list-nodes", "--json"]))
        let object = try JSONSerialization.jsonObject(with: Data(listed.stdout.utf8)) as? [String: Any]
        return (object?["nodes"] as? [[String: Any]] ?? []).map { "\($0["version"] as? String ?? "?") (protocol \($0["protocol_version"] as? Int ?? 0))" }
    }

    func sessionNode(_ server: PostgresTestServer, _ database: String, _ id: String) async throws -> Int64? {
        Int64(try await server.psql(database, "SELECT node_id FROM session WHERE id = '\(id)'").trimmingCharacters(in: .whitespacesAndNewlines))
    }

    func contracted(_ server: PostgresTestServer, _ database: String) async throws -> Bool {
        try await server.psql(database, "SELECT kind FROM schema_version WHERE version = 12").trimmingCharacters(in: .whitespacesAndNewlines) == "contract"
    }
}

/// One node of the rolling upgrade: a root of its own (an overlay of this machine's root in a
/// mount namespace that a holder process keeps), where Drover is installed from its package and
/// runs on the test's configuration directory, mounted at `/etc/drover`.
final class PackagedNode: Sendable {
    let index: Int
    let config: ConfigDirectory
    let root: String
    let holder: RunningProcess
    let process = Mutex<RunningProcess?>(nil)
    /// What every droverd of this node printed, across restarts.
    let logs = Mutex<String>("")
    let nodeID = Mutex<Int64?>(nil)
    var id: Int64? { nodeID.withLock { $0 } }

    /// The node's mount namespace: an overlay of `/` on a tmpfs; `/proc`, `/dev`, `/sys`, `/tmp`,
    /// `/root` and `/home` are the machine's (the temporary folders hold the configuration and
    /// the shared storage; the homes hold the sessions' saved state, as NFS would).
    static let setup = #"""
        set -euo pipefail
        layers=$1
        mkdir -p "$layers"
        mount -t tmpfs drover-node "$layers"
        mkdir -p "$layers/upper" "$layers/work" "$layers/root"
        mount -t overlay overlay -o "lowerdir=/,upperdir=$layers/upper,workdir=$layers/work" "$layers/root"
        r=$layers/root
        mount --rbind /proc "$r/proc"
        mount --rbind /dev "$r/dev"
        mount --rbind /sys "$r/sys"
        for shared in /tmp /root /home; do mount --bind "$shared" "$r$shared"; done
        echo ready
        exec sleep infinity
        """#

    init(index: Int, config: ConfigDirectory, layers: String) async throws {
        self.index = index
        self.config = config
        root = layers + "/root"
        holder = try RunningProcess("/usr/bin/unshare", ["--mount", "--propagation", "private", "/bin/bash", "-c", Self.setup, "node", layers])
        try await holder.waitUntil(timeout: 20, "node \(index)'s root") { [holder] in holder.stdout.contains("ready") }
    }

    /// `command` in the node's root.
    func inRoot(_ command: [String]) -> [String] {
        ["-t", String(holder.pid), "-m", "--", "/usr/sbin/chroot", root] + command
    }

    func run(_ command: [String]) async throws -> Executable.Result {
        try await Executable.run("/usr/bin/nsenter", inRoot(command), timeout: 180)
    }

    /// The installed `drover`, for ``droverArguments(_:)``.
    let drover = "/usr/bin/nsenter"
    func droverArguments(_ arguments: [String]) -> [String] { inRoot(["/usr/bin/drover"] + arguments + ["--config-dir", "/etc/drover"]) }

    /// Installs (or upgrades, or downgrades to) the package at `path`, as `dpkg -i` does.
    func install(_ path: String) async throws {
        let result = try await run(["/usr/bin/dpkg", "-i", path])
        try #require(result.status == 0, "dpkg -i \(path) on node \(index): \(result.stdout)\(result.stderr)")
    }

    /// Puts the test's configuration at `/etc/drover` (over the examples the first install copied).
    func useConfiguration() async throws {
        let result = try await Executable.run("/usr/bin/nsenter", ["-t", String(holder.pid), "-m", "--", "/usr/bin/mount", "--bind", config.path, root + "/etc/drover"])
        try #require(result.status == 0, "\(result.stderr)")
    }

    /// Starts the installed droverd (as the unit does) and waits until it answers (a node drained
    /// before it stopped stays in offline mode until `drover online`).
    func start() async throws {
        let started = try RunningProcess("/usr/bin/nsenter", inRoot(["/usr/sbin/droverd", "--config-dir", "/etc/drover"]))
        process.withLock { $0 = started }
        do {
            try await started.waitUntil(timeout: 60, "node \(index) up") {
                (try? await RawHTTPClient.request(host: config.address, port: config.port, path: "/health-check").status) == 200
            }
        } catch {
            throw TestFailure("\(error); node \(index) printed: \(started.stderr.suffix(3000))")
        }
        if id == nil {
            let listed = try await run(["/usr/bin/drover", "list-nodes", "--json", "--config-dir", "/etc/drover"])
            let object = try JSONSerialization.jsonObject(with: Data(listed.stdout.utf8)) as? [String: Any]
            let mine = (object?["nodes"] as? [[String: Any]] ?? []).first { $0["host"] as? String == config.address }
            nodeID.withLock { $0 = (mine?["id"] as? NSNumber)?.int64Value }
        }
    }

    /// The ordered stop (SIGTERM, as the unit stops droverd); its exit status.
    func stop() async throws -> Int32 {
        guard let running = process.withLock({ $0 }) else { return -1 }
        running.signal(SIGTERM)
        let status = try await running.wait(timeout: 60)
        logs.withLock { $0 += running.stderr + running.stdout }
        process.withLock { $0 = nil }
        return status
    }

    var log: String { logs.withLock { $0 } + (process.withLock { $0 }.map { $0.stderr + $0.stdout } ?? "") }

    /// README's rolling procedure for one node: drain it (its sessions move warm, `/ready` says
    /// 503 so the front balancer takes it out), stop it in order, install `package`, start it,
    /// and take it back online.
    func roll(to package: String) async throws {
        let drained = try await run(["/usr/bin/drover", "drain", "--config-dir", "/etc/drover"])
        try #require(drained.status == 0, "drain node \(index): \(drained.stdout)\(drained.stderr)")
        // The front balancer checks /ready every 200 ms and takes the node out at the first 503.
        try await Task.sleep(for: .milliseconds(600))
        let stopped = try await stop()
        try #require(stopped == 0, "node \(index) stopped with \(stopped): \(log.suffix(2000))")
        try await install(package)
        try await start()
        let online = try await run(["/usr/bin/drover", "online", "--config-dir", "/etc/drover"])
        try #require(online.status == 0, "online node \(index): \(online.stdout)\(online.stderr)")
        try await eventually("node \(index) ready") {
            (try? await RawHTTPClient.request(host: config.address, port: config.port, path: "/ready").status) == 200
        }
        // Working a moment on the cluster as it is now.
        try await Task.sleep(for: .seconds(1))
    }

    deinit {
        process.withLock { $0 }?.signal(SIGKILL)
        holder.signal(SIGKILL)
    }
}

/// HAProxy in front of the nodes, as an operator runs one: round robin over the nodes whose
/// `/ready` answers 200 (checked every 200 ms), a request that could not reach a node sent to
/// another, WebSockets passed through.
final class FrontBalancer: Sendable {
    let port: Int
    let process: RunningProcess

    init(nodes: [ConfigDirectory], folder: String) async throws {
        port = try FreePort.find()
        let servers = nodes.enumerated().map { "    server n\($0.offset) \($0.element.address):\($0.element.port) check" }.joined(separator: "\n")
        let config = """
            global
                maxconn 2000
            defaults
                mode http
                timeout connect 2s
                timeout client 60s
                timeout server 60s
                timeout tunnel 1h
                retries 3
                option redispatch 1
                retry-on conn-failure empty-response
            frontend drover
                bind 127.0.0.1:\(port)
                default_backend nodes
            backend nodes
                balance roundrobin
                option httpchk GET /ready
                http-check expect status 200
                default-server inter 200ms fall 1 rise 2
            \(servers)

            """
        let path = folder + "/haproxy.cfg"
        try config.write(toFile: path, atomically: true, encoding: .utf8)
        process = try RunningProcess("/usr/sbin/haproxy", ["-f", path, "-db"])
        try await process.waitUntil(timeout: 20, "HAProxy") {
            (try? await RawHTTPClient.request(host: "127.0.0.1", port: port, path: "/health-check").status) == 200
        }
    }

    func stop() { process.signal(SIGTERM) }
}

/// The users: some count in sessions of their own with plain HTTP requests, some keep a
/// WebSocket to a session and echo through it, one creates a session now and then; all through
/// the front balancer. Every request that fails is recorded; a WebSocket that ends is
/// reconnected, and its close code recorded.
final class Users: Sendable {
    let host: String
    let port: Int
    private let working = Atomic<Bool>(true)
    private let tasks = Mutex<[Task<Void, Never>]>([])
    private let failed = Mutex<[String]>([])
    private let closes = Mutex<[String]>([])
    private let garbled = Mutex<[String]>([])
    private let reconnected = Atomic<Int>(0)
    private let answeredCounts = Mutex<[String: Int]>([:])
    private let created = Mutex<Set<String>>([])

    init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    struct Seen {
        var failedRequests: [String]
        var wrongCloses: [String]
        var wrongEchoes: [String]
        var reconnects: Int
        var counts: [String: Int]
        var sessions: Set<String>
        var counted: Int { counts.values.reduce(0, +) }
        var summary: String {
            "\(sessions.count) sessions, \(counted) counts answered, \(failedRequests.count) requests failed, \(reconnects) WebSocket reconnects"
        }
    }

    /// One plain request; a failure (no answer, or another status than `expected`) is recorded.
    func request(_ method: String, _ path: String, expected: Int) async -> RawHTTPClient.Response? {
        let sent = Date()
        let answer = try? await RawHTTPClient.request(method, host: host, port: port, path: path, timeout: 30)
        if answer?.status != expected {
            let what = answer.map { "\($0.status) \($0.body.prefix(200))" } ?? "no answer"
            failed.withLock { $0.append("\(method) \(path) at \(sent.timeIntervalSince1970): \(what)") }
            return nil
        }
        return answer
    }

    func createSession() async throws -> String {
        let answer = try #require(await request("POST", "/api/sessions", expected: 201), "a session was created")
        let id = try #require((try? JSONSerialization.jsonObject(with: Data(answer.body.utf8)) as? [String: Any])?["id"] as? String)
        created.withLock { _ = $0.insert(id) }
        return id
    }

    func count(_ id: String) async throws -> Int? {
        let answer = try await RawHTTPClient.request(host: host, port: port, path: "/s/\(id)/count", timeout: 30)
        return (try? JSONSerialization.jsonObject(with: Data(answer.body.utf8)) as? [String: Any])?["count"] as? Int
    }

    func suspend(_ id: String) async throws {
        _ = await request("POST", "/api/sessions/\(id)/suspend", expected: 202)
    }

    func start(counters: Int, webSockets: Int) async throws {
        var sessions: [String] = []
        for _ in 0..<(counters + webSockets) { sessions.append(try await createSession()) }
        var started: [Task<Void, Never>] = []
        for id in sessions.prefix(counters) {
            answeredCounts.withLock { $0[id] = 0 }
            started.append(Task { [self] in
                while working.load(ordering: .relaxed) {
                    if await request("POST", "/s/\(id)/count", expected: 200) != nil {
                        answeredCounts.withLock { $0[id, default: 0] += 1 }
                    }
                    try? await Task.sleep(for: .milliseconds(50))
                }
            })
        }
        for id in sessions.suffix(webSockets) {
            started.append(Task { [self] in await talk(to: id) })
        }
        // Someone starts a session now and then, and counts in it once.
        started.append(Task { [self] in
            while working.load(ordering: .relaxed) {
                try? await Task.sleep(for: .seconds(3))
                guard working.load(ordering: .relaxed), let id = try? await createSession() else { continue }
                if await request("POST", "/s/\(id)/count", expected: 200) != nil { answeredCounts.withLock { $0[id] = 1 } }
            }
        })
        tasks.withLock { $0 = started }
    }

    /// Echoes through a WebSocket to session `id`, reconnecting when it ends.
    private func talk(to id: String) async {
        var number = 0
        while working.load(ordering: .relaxed) {
            guard let conversation = try? await RawWebSocket.Conversation.open(host: host, port: port, path: "/s/\(id)/echo") else {
                try? await Task.sleep(for: .milliseconds(100))
                continue
            }
            while working.load(ordering: .relaxed) {
                number += 1
                let message = "message \(number)"
                let answer = await conversation.echo(message)
                if case .echoed(let text) = answer {
                    if text != message { garbled.withLock { $0.append("\(message) came back as \(text)") } }
                    try? await Task.sleep(for: .milliseconds(100))
                    continue
                }
                if answer != .closed(code: 1012) { closes.withLock { $0.append("\(id.prefix(6)): \(answer)") } }
                reconnected.add(1, ordering: .relaxed)
                break
            }
        }
    }

    func stop() async throws -> Seen {
        working.store(false, ordering: .relaxed)
        for task in tasks.withLock({ $0 }) { await task.value }
        return Seen(failedRequests: failed.withLock { $0 }, wrongCloses: closes.withLock { $0 }, wrongEchoes: garbled.withLock { $0 },
                    reconnects: reconnected.load(ordering: .relaxed), counts: answeredCounts.withLock { $0 }, sessions: created.withLock { $0 })
    }
}
