import DroverKernel
import DroverTesting
import Foundation
import Synchronization
import Testing

/// A program of the tests' own, run as a session kind on each endpoint type: it answers every
/// GET with what it sees (its path, uid, environment, how it was reached).
///
/// `unix SOCKET` binds a Unix socket; `tcp PORT SECRET-FILE` listens on 127.0.0.1 and refuses
/// requests without the secret; `late-tcp PORT SECRET-FILE` does so after 4 s; `open-tcp PORT`
/// asks for no secret; `systemd` serves
/// on descriptor 3 by LISTEN_FDS; `exit SECRET-FILE` prints its secret and exits 3; `silent`
/// answers nothing.
let kindProgram = #"""
import http.server, json, os, socket, socketserver, sys, time
mode = sys.argv[1]
secret = None
if mode in ("tcp", "late-tcp", "exit"):
    secret = open(sys.argv[-1]).read().strip()
if mode == "exit":
    print("starting with token " + secret, flush=True)
    sys.exit(3)
if mode == "silent":
    time.sleep(3600)
jammed = []
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if mode == "unix" and self.path.endswith("/jam"):
            # A new listener at the socket's path that never accepts, its queue filled.
            os.unlink(sys.argv[2])
            jam = socket.socket(socket.AF_UNIX)
            jam.bind(sys.argv[2])
            jam.listen(0)
            for _ in range(8):
                filler = socket.socket(socket.AF_UNIX)
                filler.setblocking(False)
                try: filler.connect(sys.argv[2])
                except OSError: pass
                jammed.append(filler)
            jammed.append(jam)
            self.send_response(200); self.send_header("Content-Length", "7"); self.end_headers(); self.wfile.write(b"jammed\n"); return
        if secret is not None and self.headers.get("X-Session-Token") != secret:
            self.send_response(403); self.send_header("Content-Length", "9"); self.end_headers(); self.wfile.write(b"no token\n"); return
        fd3 = None
        if mode == "systemd":
            import fcntl
            fd3 = bool(fcntl.fcntl(3, fcntl.F_GETFL) & os.O_NONBLOCK)
        body = json.dumps({"path": self.path, "uid": os.getuid(), "mode": mode, "listen_pid": os.environ.get("LISTEN_PID"),
                           "pid": os.getpid(), "listen_fds": os.environ.get("LISTEN_FDS"), "nonblocking": fd3,
                           "foo": os.environ.get("KIND_TEST_FOO"), "profile": os.environ.get("PROFILE_SAYS"),
                           "home": os.environ.get("HOME"), "shell": os.environ.get("SHELL"), "kind": os.environ.get("DROVER_SESSION_KIND"),
                           "token_header": self.headers.get("X-Session-Token") is not None}).encode()
        self.send_response(200); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *args):
        pass
\#(pythonUnixServerClass)
class TCPServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
if mode == "unix":
    UnixServer(sys.argv[2], Handler).serve_forever()
elif mode in ("tcp", "late-tcp", "open-tcp"):
    if mode == "late-tcp":
        time.sleep(4)
    TCPServer(("127.0.0.1", int(sys.argv[2])), Handler).serve_forever()
elif mode == "systemd":
    assert os.environ["LISTEN_PID"] == str(os.getpid()) and os.environ["LISTEN_FDS"] == "1"
    server = TCPServer(("127.0.0.1", 0), Handler, bind_and_activate=False)
    server.socket.close()
    server.socket = socket.socket(fileno=3)
    server.serve_forever()
"""#

/// Session kinds end to end (issue 33): real accounts, droverd processes, the program above on
/// each endpoint type, and the attacks of item 2 made through the proxy.
@Suite(.serialized) struct SessionKindTests {
    static let (owner, stranger) = ("droverkd1", "droverkd2")

    /// The program, where every user may read it, and the session folders' tree.
    struct Setup {
        let programs = TemporaryDirectory(prefix: "drover-kind-program")
        let run = TemporaryDirectory(prefix: "drover-kind-run")

        init() throws {
            chmod(programs.path, 0o755)
            try programs.write("program.py", kindProgram)
            chmod(run.path, 0o755)
        }

        var program: String { programs.url("program.py") }

        func kind(_ arguments: [String], _ lines: String) -> String {
            let command = (["/usr/bin/python3", program] + arguments).map { "\"\($0)\"" }.joined(separator: ", ")
            return "command=[\(command)]\n" + lines
        }

        func cluster(_ addresses: [String] = ["127.0.0.1"], kinds: [String: String], rserver: String = "") async throws -> TestCluster {
            let cluster = try await TestCluster(addresses: addresses, backend: .sqlite, rserver: """
                session-command=\(demoCommand)
                auth-pam-service=\(SystemUsers.pamService)
                session-run-dir=\(run.path)/node
                \(rserver)
                """)
            for (index, node) in cluster.nodes.enumerated() {
                // One tree per node: two nodes on one machine are two machines here.
                try node.write("rserver.conf", (try String(contentsOfFile: node.path + "/rserver.conf", encoding: .utf8))
                                .replacingOccurrences(of: "\(run.path)/node", with: "\(run.path)/node\(index)"))
                for (name, text) in kinds { try node.write("kinds/\(name).conf", text) }
            }
            return cluster
        }
    }

    static func start(_ node: ConfigDirectory, _ visitor: Visitor, kind: String?) async throws -> RawHTTPClient.Response {
        try await RawHTTPClient.request("POST", host: node.address, port: node.port, path: "/api/sessions",
                                        headers: visitor.headers + [("Content-Type", "application/json")],
                                        body: kind.map { #"{"kind": "\#($0)"}"# } ?? "", timeout: 120)
    }

    static func get(_ node: ConfigDirectory, _ visitor: Visitor, _ path: String) async throws -> RawHTTPClient.Response {
        try await RawHTTPClient.request(host: node.address, port: node.port, path: path, headers: visitor.headers, timeout: 60)
    }

    /// Runs `command` as `user`; its output.
    static func asUser(_ user: String, _ arguments: [String]) async throws -> Executable.Result {
        let account = try #require(SystemUsers.account(user))
        return try await Executable.run("/usr/bin/setpriv", ["--reuid=\(account.uid)", "--regid=\(account.gid)", "--init-groups", "--"] + arguments)
    }

    static let connectAsUser = "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ntry:\n s.connect(sys.argv[1]); print('connected')\nexcept OSError as e: print('refused', e.errno)"

    @Test(.enabled(if: SystemUsers.available))
    func aUnixSocketProgramIsServedAndAPlantedSocketIsRefused() async throws {
        try await SystemUsers.ensure([Self.owner, Self.stranger])
        let setup = try Setup()
        // The owner's own group (useradd makes one per user) may use the admin dashboard.
        let cluster = try await setup.cluster(kinds: ["py": setup.kind(["unix", "{socket}"], "label=Python\nendpoint=unix-socket\nready-path={base-path}ready\n")],
                                              rserver: "admin-group=\(Self.owner)\n")
        try await cluster.start(0)
        let node = cluster.nodes[0]
        let visitor = try await signIn(node, user: Self.owner)

        let kinds = try await Self.get(node, visitor, "/api/kinds")
        #expect(kinds.body == #"[{"default":true,"label":"Default session","name":"default"},{"default":false,"label":"Python","name":"py"}]"#)
        // The API refuses what it does not know, naming it.
        let unknownKey = try await RawHTTPClient.request("POST", host: node.address, port: node.port, path: "/api/sessions",
                                                         headers: visitor.headers, body: #"{"knd": "py"}"#)
        #expect(unknownKey.status == 400 && unknownKey.body.contains("unknown key 'knd'"), "\(unknownKey.body)")
        let unknownKind = try await Self.start(node, visitor, kind: "rstudio")
        #expect(unknownKind.status == 400 && unknownKind.body.contains("no session kind 'rstudio'; the kinds are default, py"), "\(unknownKind.body)")

        let created = try await Self.start(node, visitor, kind: "py")
        let id = try #require(json(created)["id"] as? String, "\(created.status) \(created.body)")
        let answer = try await Self.get(node, visitor, "/s/\(id)/hello?x=1")
        #expect(answer.status == 200, "\(answer.body)")
        #expect(json(answer)["path"] as? String == "/s/\(id)/hello?x=1" && json(answer)["uid"] as? Int == Int(SystemUsers.account(Self.owner)!.uid))
        let listed = try await Self.get(node, visitor, "/api/sessions")
        #expect(listed.body.contains(#""kind":"py""#), "\(listed.body)")
        #expect(try await cluster.drover(0, ["active-sessions"]).stdout.contains(" py "))
        let home = try await Self.get(node, visitor, "/")
        #expect(home.body.contains(#"<option value="py">Python</option>"#) && home.body.contains("<td>Python</td>"), "the home page's picker and list")
        let dashboard = try await Self.get(node, visitor, "/admin")
        #expect(dashboard.status == 200 && dashboard.body.contains("<td>\(Self.owner)</td><td>py</td>"), "the admin dashboard: \(dashboard.status)")
        let metrics = try await RawHTTPClient.request(host: node.address, port: node.port, path: "/metrics").body
        #expect(metrics.contains(#"drover_sessions_by_kind{kind="py"} 1"#) && metrics.contains(#"drover_sessions_by_kind{kind="default"} 0"#),
                "\(metrics.split(separator: "\n").filter { $0.contains("by_kind") })")

        // The socket is in the owner's own folder: no other local user can reach it.
        let socket = setup.run.path + "/node0/\(id)/http.sock"
        #expect(try await Self.asUser(Self.stranger, ["/usr/bin/python3", "-c", Self.connectAsUser, socket]).stdout.hasPrefix("refused 13"))
        // Nor through the proxy.
        let strangerVisitor = try await signIn(node, user: Self.stranger)
        #expect(try await Self.get(node, strangerVisitor, "/s/\(id)/hello").status == 404)

        // The owner's session plants the stranger's listener at its socket's path: refused.
        let open = TemporaryDirectory(prefix: "drover-open")
        chmod(open.path, 0o777)
        let planted = try RunningProcess("/usr/bin/setpriv", ["--reuid=\(SystemUsers.account(Self.stranger)!.uid)", "--regid=\(SystemUsers.account(Self.stranger)!.gid)",
                                                            "--init-groups", "--", "/usr/bin/python3", setup.program, "unix", open.url("other.sock")])
        defer { planted.signal(SIGKILL) }
        try await cluster.eventually("the stranger's listener") { FileManager.default.fileExists(atPath: open.url("other.sock")) }
        chmod(open.url("other.sock"), 0o777)
        let moved = try await Self.asUser(Self.owner, ["/bin/sh", "-c", "mv '\(socket)' '\(socket).real' && ln -s '\(open.url("other.sock"))' '\(socket)'"])
        #expect(moved.status == 0, "\(moved.stderr)")
        let refused = try await Self.get(node, visitor, "/s/\(id)/hello")
        #expect(refused.status == 502 && !refused.body.contains("\"uid\""), "the planted listener answered: \(refused.status) \(refused.body)")
        #expect(cluster.process(0)?.stderr.contains("refused a session's endpoint") == true)
        #expect(cluster.process(0)?.stderr.contains("not the session's user") == true)

        // The session's program lets its socket's queue fill up and never accepts: its requests
        // are refused at once, and nothing else on the node waits for it (the connect never
        // blocks an event loop: it froze the whole node, every user's traffic and the guards'
        // signs of life, until the session ended).
        #expect(try await Self.asUser(Self.owner, ["/bin/sh", "-c", "rm -f '\(socket)' && mv '\(socket).real' '\(socket)'"]).status == 0)
        #expect(try await Self.get(node, visitor, "/s/\(id)/jam").body == "jammed\n")
        let started = Date()
        let jammed = await concurrently(8) { _ in (try? await RawHTTPClient.request(host: node.address, port: node.port, path: "/s/\(id)/x",
                                                                                     headers: visitor.headers, timeout: 15))?.status }
        #expect(jammed.allSatisfy { $0 == 502 }, "\(jammed)")
        #expect(try await RawHTTPClient.request(host: node.address, port: node.port, path: "/health-check", timeout: 5).status == 200)
        #expect(Date().timeIntervalSince(started) < 10, "requests to a jammed session waited")

        // The owner moves a folder of theirs holding the stranger's files into the session's
        // folder: removing it at the end must not empty the stranger's folder with root's rights.
        let shared = TemporaryDirectory(prefix: "drover-shared-tree")
        chmod(shared.path, 0o777)
        let (ownerAccount, strangerAccount) = (SystemUsers.account(Self.owner)!, SystemUsers.account(Self.stranger)!)
        try FileManager.default.createDirectory(atPath: shared.url("project/theirs"), withIntermediateDirectories: true)
        try "the stranger's work\n".write(toFile: shared.url("project/theirs/precious"), atomically: false, encoding: .utf8)
        chown(shared.url("project"), ownerAccount.uid, ownerAccount.gid)
        for path in [shared.url("project/theirs"), shared.url("project/theirs/precious")] { chown(path, strangerAccount.uid, strangerAccount.gid) }
        #expect(try await Self.asUser(Self.owner, ["/bin/mv", shared.url("project"), setup.run.path + "/node0/\(id)/project"]).status == 0)

        // Quit: the session's folder goes with it, but not what is someone else's.
        #expect(try await RawHTTPClient.request("DELETE", host: node.address, port: node.port, path: "/api/sessions/\(id)", headers: visitor.headers).status == 204)
        #expect(try await Self.asUser(Self.owner, ["/bin/ls", setup.run.path + "/node0/\(id)/project/theirs"]).stdout.contains("precious")
                    || FileManager.default.fileExists(atPath: setup.run.path + "/node0/\(id)/project/theirs/precious"),
                "the stranger's file was removed with root's rights")
        #expect(!FileManager.default.fileExists(atPath: setup.run.path + "/node0/\(id)/http.sock"))
        #expect(try await cluster.stop(0) == 0)
    }

    @Test(.enabled(if: SystemUsers.available))
    func aPortProgramGetsItsSecretThroughEitherNodeAndNoOneElseDoes() async throws {
        try await SystemUsers.ensure([Self.owner, Self.stranger])
        let setup = try Setup()
        let kinds = [
            "web": setup.kind(["tcp", "{port}", "{secret-file}"], "endpoint=tcp-port\nsecret-header=X-Session-Token\nbase-path=strip\nready-path=/ready\n"),
            "late": setup.kind(["late-tcp", "{port}", "{secret-file}"], "endpoint=tcp-port\nsecret-header=X-Session-Token\nready-path=/ready\nstart-timeout=20\n"),
        ]
        let cluster = try await setup.cluster(["127.0.0.1", "127.0.0.2"], kinds: kinds)
        try await cluster.start(0)
        try await cluster.start(1)
        let visitor = try await signIn(cluster.nodes[0], user: Self.owner)
        let created = try await Self.start(cluster.nodes[0], visitor, kind: "web")
        let id = try #require(json(created)["id"] as? String, "\(created.status) \(created.body)")
        // Through the owner and through the other node (a hop only splices: the first node
        // adds the secret), the program sees its own paths and the secret.
        for node in cluster.nodes {
            let answer = try await Self.get(node, visitor, "/s/\(id)/hello")
            #expect(answer.status == 200 && json(answer)["path"] as? String == "/hello" && json(answer)["token_header"] as? Bool == true,
                    "through \(node.address): \(answer.status) \(answer.body)")
        }
        // A client's own X-Session-Token is replaced, never passed on.
        let forged = try await RawHTTPClient.request(host: cluster.nodes[0].address, port: cluster.nodes[0].port, path: "/s/\(id)/hello",
                                                     headers: visitor.headers + [("X-Session-Token", "guess")], timeout: 30)
        #expect(forged.status == 200)

        // The secret is in no argument, no environment and no log line.
        let processes = SystemUsers.processes(ofSession: id)
        #expect(!processes.isEmpty)
        let secretFile = setup.run.path + "/node\(json(created)["node"] as? Int == 1 ? 0 : 1)/\(id)/secret"
        let secret = try #require(try? String(contentsOfFile: secretFile, encoding: .utf8), "the secret file \(secretFile)")
        #expect(secret.count == 64)
        for pid in processes {
            for file in ["cmdline", "environ"] {
                let text = String(decoding: FileManager.default.contents(atPath: "/proc/\(pid)/\(file)") ?? Data(), as: UTF8.self)
                #expect(!text.contains(secret), "the secret is in /proc/\(pid)/\(file)")
            }
        }
        for index in 0..<2 { #expect(cluster.process(index)?.stderr.contains(secret) == false) }
        var file = stat()
        stat(secretFile, &file)
        #expect(file.st_mode & 0o777 == 0o600 && file.st_uid == SystemUsers.account(Self.owner)!.uid)

        // Any local user can reach the port, but not without the secret.
        let port = try #require(processes.lazy.compactMap { pid in
            String(decoding: FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") ?? Data(), as: UTF8.self)
                .split(separator: "\0").dropFirst(3).first.flatMap { Int($0) }
        }.first)
        let direct = try await Self.asUser(Self.stranger, ["/usr/bin/python3", "-c",
            "import urllib.request,sys\ntry: urllib.request.urlopen('http://127.0.0.1:%s/hello' % sys.argv[1]); print('200')\nexcept Exception as e: print(e)", String(port)])
        #expect(direct.stdout.contains("403"), "\(direct.stdout) \(direct.stderr)")

        // Port squatting: another user takes the port the program was given before it binds
        // (it waits 4 s). The squatter answers the readiness check; droverd must not take it
        // for the session: the start fails.
        let stranger = try #require(SystemUsers.account(Self.stranger))
        let squatters = SquatterBox()
        async let late = Self.start(cluster.nodes[0], visitor, kind: "late")
        try await cluster.eventually("the late program is given its port") {
            guard let pid = SystemUsers.processes(matching: "late-tcp").first,
                  let port = String(decoding: FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") ?? Data(), as: UTF8.self)
                    .split(separator: "\0").dropFirst(3).first.flatMap({ Int($0) }) else { return false }
            squatters.add(try RunningProcess("/usr/bin/setpriv", ["--reuid=\(stranger.uid)", "--regid=\(stranger.gid)", "--init-groups", "--",
                                                                "/usr/bin/python3", setup.program, "open-tcp", String(port)]))
            return true
        }
        defer { squatters.killAll() }
        let refused = try await late
        #expect(refused.status == 500 && refused.body.contains("'late' session"), "the squatter was taken for the session: \(refused.status) \(refused.body)")
        try await cluster.eventually("nothing of the late session is left") { SystemUsers.processes(matching: "late-tcp").isEmpty }
        #expect(try await cluster.stop(0) == 0)
        #expect(try await cluster.stop(1) == 0)
    }
}

extension SessionKindTests {
    /// systemd's socket-activation convention, and the user's login environment: a bare program
    /// name found on the PATH the user's profile sets, what the profile exports, the kind's env.
    @Test(.enabled(if: SystemUsers.available))
    func socketActivationInTheUsersLoginEnvironment() async throws {
        try await SystemUsers.ensure([Self.owner])
        let setup = try Setup()
        let account = try #require(SystemUsers.account(Self.owner))
        let home = account.home
        // The user's own files, as the user would have written them.
        let bin = home + "/drover-test-bin"
        try FileManager.default.createDirectory(atPath: bin, withIntermediateDirectories: true)
        try "#!/bin/sh\nexec /usr/bin/python3 \(setup.program) \"$@\"\n".write(toFile: bin + "/drover-test-program", atomically: false, encoding: .utf8)
        try "export PATH=\"$HOME/drover-test-bin:$PATH\"\nexport PROFILE_SAYS=hello-from-profile\n".write(toFile: home + "/.profile", atomically: false, encoding: .utf8)
        chmod(bin + "/drover-test-program", 0o755)
        for path in [bin, bin + "/drover-test-program", home + "/.profile"] { chown(path, account.uid, account.gid) }
        defer { _ = try? FileManager.default.removeItem(atPath: home + "/.profile") }
        let cluster = try await setup.cluster(kinds: ["sd": #"command=["drover-test-program", "systemd"]"# + "\nendpoint=systemd-socket\nenv.KIND_TEST_FOO=foo-{session-id}\n"])
        try await cluster.start(0)
        let node = cluster.nodes[0]
        let visitor = try await signIn(node, user: Self.owner)
        let created = try await Self.start(node, visitor, kind: "sd")
        let id = try #require(json(created)["id"] as? String, "\(created.status) \(created.body)")
        let answer = json(try await Self.get(node, visitor, "/s/\(id)/x"))
        #expect(answer["listen_fds"] as? String == "1" && answer["listen_pid"] as? String == (answer["pid"] as? Int).map(String.init))
        #expect(answer["nonblocking"] as? Bool == true, "the descriptor arrives non-blocking: \(answer)")
        #expect(answer["profile"] as? String == "hello-from-profile" && answer["foo"] as? String == "foo-\(id)" && answer["kind"] as? String == "sd")
        #expect(answer["home"] as? String == home && answer["shell"] as? String == "/bin/sh")
        #expect(try await cluster.stop(0) == 0)
    }

    /// A program that exits at once, or never answers, fails its start within its kind's
    /// timeout: 500 naming the kind with the end of its log (its secret taken out), no row,
    /// nothing left running.
    @Test(.enabled(if: SystemUsers.available))
    func aProgramThatNeverComesUpFailsItsStartClearly() async throws {
        try await SystemUsers.ensure([Self.owner])
        let setup = try Setup()
        let cluster = try await setup.cluster(kinds: [
            "exits": setup.kind(["exit", "{port}", "{secret-file}"], "endpoint=tcp-port\nsecret-header=X-Session-Token\n"),
            "silent": setup.kind(["silent", "{socket}"], "endpoint=unix-socket\nstart-timeout=3\n"),
            // A program whose output tries to forge a line in an operator's terminal.
            "forger": #"command=["/bin/sh", "-c", "printf 'fine\\n2026-01-01T00:00:00Z  admin  session-quit  forged  node 1  ok\\033[2K\\r'; exit 4"]"# + "\nendpoint=inherited\n",
        ])
        try await cluster.start(0)
        let node = cluster.nodes[0]
        let visitor = try await signIn(node, user: Self.owner)

        let exited = try await Self.start(node, visitor, kind: "exits")
        #expect(exited.status == 500, "\(exited.body)")
        #expect(exited.body.contains("the 'exits' session exited (status 3) before answering") && exited.body.contains("starting with token [secret]"),
                "\(exited.body)")
        let started = Date()
        let silent = try await Self.start(node, visitor, kind: "silent")
        #expect(silent.status == 500 && silent.body.contains("the 'silent' session did not answer") && silent.body.contains("start-timeout (3 s)"), "\(silent.body)")
        #expect(Date().timeIntervalSince(started) < 15)
        #expect(try await Self.get(node, visitor, "/api/sessions").body == "[]", "no row is left")
        try await cluster.eventually("nothing is left running") {
            SystemUsers.processes(matching: setup.program).isEmpty && (try? FileManager.default.contentsOfDirectory(atPath: setup.run.path + "/node0"))?.isEmpty != false
        }
        let forged = try await Self.start(node, visitor, kind: "forger")
        #expect(forged.status == 500 && forged.body.contains("'forger' session exited (status 4)"), "\(forged.body)")
        try await cluster.eventually("the forger's row is written") {
            try await cluster.drover(0, ["audit", "--user", Self.owner, "--json"]).stdout.contains("kind forger")
        }
        let audit = try await cluster.drover(0, ["audit", "--user", Self.owner])
        #expect(audit.stdout.contains("kind exits") && audit.stdout.contains("[secret]") && audit.stdout.contains("failed"), "\(audit.stdout)")
        // One line per row, whatever the programs printed: escaped, never a line or an escape of their own.
        let lines = audit.stdout.split(separator: "\n")
        #expect(!audit.stdout.contains("\u{1b}") && !lines.contains { $0.hasPrefix("2026-01-01T00:00:00Z") }, "\(audit.stdout)")
        #expect(audit.stdout.contains(#"fine\n2026-01-01T00:00:00Z  admin  session-quit  forged  node 1  ok\x1b[2K"#), "\(audit.stdout)")
        let rows = try await cluster.drover(0, ["audit", "--user", Self.owner, "--json"]).stdout.split(separator: "\n")
        #expect(lines.count == rows.count && audit.stdout.contains("\u{1b}") == false)
        #expect(try await cluster.stop(0) == 0)
    }

    /// Kinds by group, and the three cases a resume must answer clearly: the user has left the
    /// kind's groups, the kind was removed, no node can run it.
    @Test(.enabled(if: SystemUsers.available))
    func kindsByGroupAndClearAnswersAtResume() async throws {
        let (member, other, group) = (Self.owner, Self.stranger, "droverkgrp")
        try await SystemUsers.ensure([member, other])
        _ = try await Executable.run("/usr/sbin/groupadd", ["-f", group])
        #expect(try await Executable.run("/usr/bin/gpasswd", ["-a", member, group]).status == 0)
        defer { Task { _ = try? await Executable.run("/usr/bin/gpasswd", ["-d", member, group]) } }
        let setup = try Setup()
        let kinds = [
            "grp": setup.kind(["unix", "{socket}"], "endpoint=unix-socket\ngroups=\(group)\n"),
            "gone": setup.kind(["unix", "{socket}"], "endpoint=unix-socket\n"),
            "missing": #"command=["/nonexistent/drover-program", "{socket}"]"# + "\nendpoint=unix-socket\n",
        ]
        let cluster = try await setup.cluster(kinds: kinds)
        try await cluster.start(0)
        let node = cluster.nodes[0]
        let memberVisitor = try await signIn(node, user: member)
        let otherVisitor = try await signIn(node, user: other)

        // Offered by group; a kind whose program is missing is offered to nobody.
        #expect(try await Self.get(node, memberVisitor, "/api/kinds").body.contains(#""name":"grp""#))
        let othersKinds = try await Self.get(node, otherVisitor, "/api/kinds").body
        #expect(!othersKinds.contains("grp") && !othersKinds.contains("missing"), "\(othersKinds)")
        let forbidden = try await Self.start(node, otherVisitor, kind: "grp")
        #expect(forbidden.status == 403 && forbidden.body.contains("only members of \(group) may"), "\(forbidden.body)")
        let missing = try await Self.start(node, memberVisitor, kind: "missing")
        #expect(missing.status == 503 && missing.body.contains("unable to run 'missing' sessions"), "\(missing.status) \(missing.body)")
        let verify = try await cluster.drover(0, ["verify"])
        #expect(verify.stdout.contains("warn  session kind missing is not offered by this node (its program /nonexistent/drover-program does not exist)"),
                "\(verify.stdout)")

        // A member's session, suspended; then the member leaves the group.
        let grp = try #require(json(try await Self.start(node, memberVisitor, kind: "grp"))["id"] as? String)
        let gone = try #require(json(try await Self.start(node, memberVisitor, kind: "gone"))["id"] as? String)
        for id in [grp, gone] {
            #expect(try await RawHTTPClient.request("POST", host: node.address, port: node.port, path: "/api/sessions/\(id)/suspend",
                                                    headers: memberVisitor.headers, timeout: 60).status == 202)
        }
        #expect(try await Executable.run("/usr/bin/gpasswd", ["-d", member, group]).status == 0)
        let left = try await Self.get(node, memberVisitor, "/s/\(grp)/")
        #expect(left.status == 403 && left.body.contains("may not start 'grp' sessions"), "\(left.status) \(left.body)")

        // The kind `gone` is removed from the configuration.
        #expect(try await cluster.stop(0) == 0)
        try FileManager.default.removeItem(atPath: node.path + "/kinds/gone.conf")
        try await cluster.start(0)
        let removed = try await Self.get(node, memberVisitor, "/s/\(gone)/")
        #expect(removed.status == 503 && removed.body.contains("'gone' session, and that kind is no longer configured"), "\(removed.status) \(removed.body)")
        #expect(try await cluster.stop(0) == 0)
    }
}

/// Processes a test started from a check closure, ended at its end.
final class SquatterBox: Sendable {
    private let processes = Mutex<[RunningProcess]>([])

    func add(_ process: RunningProcess) { processes.withLock { $0.append(process) } }

    func killAll() {
        for process in processes.withLock({ $0 }) { process.signal(SIGKILL) }
    }
}
