@testable import DroverCluster
import DroverSessionProtocol
import DroverTesting
import Foundation
import Testing

/// The checks droverd makes before it sends a byte to a session's endpoint (issue 33, item 2),
/// attacked with real accounts, real sockets and a real cgroup. Each check is shown able to
/// fail: the same attack through a connector built without it (`SessionConnector(skipping:)`, a
/// test-only initialiser) reaches the attacker's listener.
@Suite(.serialized) struct SessionConnectorTests {
    static let (alice, bob) = ("droverkca", "droverkcb")

    /// Listens on a Unix socket (`unix PATH MODE WHO`) or a loopback port (`tcp PORT WHO`) and
    /// tells each connection who it is, then closes it.
    static let listener = """
        import os, socket, sys
        kind, where, who = sys.argv[1], sys.argv[2], sys.argv[-1]
        if kind == "unix":
            try: os.unlink(where)
            except OSError: pass
            s = socket.socket(socket.AF_UNIX)
            s.bind(where)
            os.chmod(where, int(sys.argv[3], 8))
        else:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", int(where)))
        s.listen(16)
        print("listening", flush=True)
        while True:
            c, _ = s.accept()
            try:
                c.sendall(("who=" + who + "\\n").encode())
                c.recv(1)  # held until the client closes, as a server holds a connection until its request is done
            except OSError: pass  # a client that was refused closed at once
            c.close()
        """

    struct Account {
        var uid: UInt32
        var gid: UInt32
    }

    static func account(_ name: String) throws -> Account {
        let entry = try #require(SystemUsers.account(name))
        return Account(uid: entry.uid, gid: entry.gid)
    }

    /// Starts the listener as `user` (root when nil), in `cgroup` when given.
    static func listen(as user: String?, _ arguments: [String], in cgroup: String? = nil) async throws -> RunningProcess {
        var command = ["/usr/bin/python3", "-c", listener] + arguments
        if let user {
            let account = try account(user)
            command = ["/usr/bin/setpriv", "--reuid=\(account.uid)", "--regid=\(account.gid)", "--init-groups", "--"] + command
        }
        if let cgroup { command = ["/bin/sh", "-c", "echo $$ > '\(cgroup)/cgroup.procs' && exec \"$@\"", "sh"] + command }
        let process = try RunningProcess(command[0], Array(command.dropFirst()))
        try await process.waitUntil(timeout: 20, "the listener \(arguments) of \(user ?? "root")") { process.stdout.contains("listening") }
        return process
    }

    /// What the listener at `endpoint` says, through `connector`; or the refusal.
    static func reach(_ endpoint: SessionEndpoint, with connector: SessionConnector) -> Result<String, SessionEndpointRefusal> {
        do throws(SessionEndpointRefusal) {
            let fd = try connector.connect(endpoint, timeout: 2)
            defer { close(fd) }
            var buffer = [UInt8](repeating: 0, count: 64)
            let count = read(fd, &buffer, buffer.count)
            return .success(String(decoding: buffer.prefix(max(0, count)), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
        } catch {
            return .failure(error)
        }
    }

    static func refused(_ result: Result<String, SessionEndpointRefusal>, foreign: Bool) -> Bool {
        if case .failure(let refusal) = result { return refusal.isForeign == foreign }
        return false
    }

    /// A cgroup of the test's own, standing for a session's (v1 freezer here, else v2).
    final class TestCgroup {
        let path: String

        init() throws {
            let name = "drover-connector-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
            let candidates = ["/sys/fs/cgroup/freezer", "/sys/fs/cgroup"]
            guard let parent = candidates.first(where: { access($0 + "/cgroup.procs", W_OK) == 0 }) else {
                throw TestFailure("no writable cgroup hierarchy (freezer v1 or v2) to stand for a session's")
            }
            path = parent + "/" + name
            guard mkdir(path, 0o755) == 0 else { throw TestFailure("cannot make \(path): \(String(cString: strerror(errno)))") }
        }

        deinit {
            for pid in CgroupHost.members(of: path) { kill(pid, SIGKILL) }
            for _ in 0..<100 where rmdir(path) != 0 { usleep(20_000) }
        }
    }

    /// A folder of `user`'s, mode 0700, in a root-owned tree: a session's folder.
    static func sessionFolder(of user: String, in tree: TemporaryDirectory) throws -> String {
        chmod(tree.path, 0o711)
        let account = try account(user)
        let folder = tree.url("session")
        mkdir(folder, 0o700)
        chown(folder, account.uid, account.gid)
        return folder
    }

    /// Runs `command` as `user`.
    static func asUser(_ user: String, _ command: String) async throws {
        let account = try account(user)
        let result = try await Executable.run("/usr/bin/setpriv", ["--reuid=\(account.uid)", "--regid=\(account.gid)", "--init-groups",
                                                                   "--", "/bin/sh", "-c", command])
        #expect(result.status == 0, "\(command): \(result.stderr)")
    }

    @Test(.enabled(if: SystemUsers.available))
    func aLinkToARootDaemonsSocketReachesNothing() async throws {
        try await SystemUsers.ensure([Self.alice])
        let alice = try Self.account(Self.alice)
        // A root daemon's socket, as /run/docker.sock is: root's group may use it.
        let daemonFolder = TemporaryDirectory(prefix: "drover-root-daemon")
        chmod(daemonFolder.path, 0o755)
        let daemon = try await Self.listen(as: nil, ["unix", daemonFolder.url("daemon.sock"), "660", "root"])
        defer { daemon.signal(SIGKILL) }
        let tree = TemporaryDirectory(prefix: "drover-run")
        let folder = try Self.sessionFolder(of: Self.alice, in: tree)
        try await Self.asUser(Self.alice, "ln -s '\(daemonFolder.url("daemon.sock"))' '\(folder)/http.sock'")
        let endpoint = SessionEndpoint(address: .userSocket(folder + "/http.sock"), uid: alice.uid, gid: alice.gid, cgroup: nil)

        let refused = Self.reach(endpoint, with: SessionConnector())
        #expect(Self.refused(refused, foreign: false), "the link reached the daemon with the user's rights: \(refused)")
        // Without the user's rights, the connection is made (root may), and only the listener's
        // uid stops it; without that too, the daemon answers.
        #expect(Self.refused(Self.reach(endpoint, with: SessionConnector(skipping: [.userRights])), foreign: true))
        let unchecked = Self.reach(endpoint, with: SessionConnector(skipping: [.userRights, .listenerUser]))
        #expect((try? unchecked.get()) == "who=root", "\(unchecked)")
    }

    @Test(.enabled(if: SystemUsers.available))
    func anotherUsersSocketIsRefused() async throws {
        try await SystemUsers.ensure([Self.alice, Self.bob])
        let alice = try Self.account(Self.alice)
        // Bob's listener, which anyone may connect to.
        let open = TemporaryDirectory(prefix: "drover-open")
        chmod(open.path, 0o777)
        let bobs = try await Self.listen(as: Self.bob, ["unix", open.url("bob.sock"), "777", "bob"])
        defer { bobs.signal(SIGKILL) }
        let tree = TemporaryDirectory(prefix: "drover-run")
        let folder = try Self.sessionFolder(of: Self.alice, in: tree)
        try await Self.asUser(Self.alice, "ln -s '\(open.url("bob.sock"))' '\(folder)/http.sock'")
        let endpoint = SessionEndpoint(address: .userSocket(folder + "/http.sock"), uid: alice.uid, gid: alice.gid, cgroup: nil)

        let refused = Self.reach(endpoint, with: SessionConnector())
        guard case .failure(let refusal) = refused else { Issue.record("bob's socket answered alice's session: \(refused)"); return }
        #expect(refusal.isForeign && refusal.reason.contains("not the session's user"), "\(refusal)")
        #expect(try Self.reach(endpoint, with: SessionConnector(skipping: [.listenerUser])).get() == "who=bob")
    }

    @Test(.enabled(if: SystemUsers.available))
    func onlyAProcessOfTheSessionsCgroupIsTheSession() async throws {
        try await SystemUsers.ensure([Self.alice])
        let alice = try Self.account(Self.alice)
        let cgroup = try TestCgroup()
        let tree = TemporaryDirectory(prefix: "drover-run")
        let folder = try Self.sessionFolder(of: Self.alice, in: tree)
        let endpoint = SessionEndpoint(address: .userSocket(folder + "/http.sock"), uid: alice.uid, gid: alice.gid, cgroup: cgroup.path)

        // Alice's own process, but not the session's (another session of hers, a shell).
        let outside = try await Self.listen(as: Self.alice, ["unix", folder + "/http.sock", "600", "outside"])
        let refused = Self.reach(endpoint, with: SessionConnector())
        guard case .failure(let refusal) = refused else { Issue.record("a process outside the session answered for it: \(refused)"); return }
        #expect(refusal.isForeign && refusal.reason.contains("not one of the session's"), "\(refusal)")
        #expect(try Self.reach(endpoint, with: SessionConnector(skipping: [.listenerCgroup])).get() == "who=outside")
        outside.signal(SIGKILL)
        _ = try await outside.wait(timeout: 10)

        let inside = try await Self.listen(as: Self.alice, ["unix", folder + "/http.sock", "600", "session"], in: cgroup.path)
        defer { inside.signal(SIGKILL) }
        #expect(try Self.reach(endpoint, with: SessionConnector()).get() == "who=session")
    }

    @Test(.enabled(if: SystemUsers.available))
    func aSquattedPortIsRefusedBeforeAByteIsSent() async throws {
        try await SystemUsers.ensure([Self.alice, Self.bob])
        let alice = try Self.account(Self.alice)
        let cgroup = try TestCgroup()
        let port = try SessionManager.freeLoopbackPort()
        let endpoint = SessionEndpoint(address: .loopbackPort(port), uid: alice.uid, gid: alice.gid, cgroup: cgroup.path)

        // Another user took the port first.
        let squatter = try await Self.listen(as: Self.bob, ["tcp", String(port), "bob"])
        let byBob = Self.reach(endpoint, with: SessionConnector())
        guard case .failure(let refusal) = byBob else { Issue.record("bob's listener was taken for alice's session: \(byBob)"); return }
        let bobsUID = try Self.account(Self.bob).uid
        #expect(refusal.isForeign && refusal.reason.contains("uid \(bobsUID)"), "\(refusal)")
        #expect(try Self.reach(endpoint, with: SessionConnector(skipping: [.listenerUser, .listenerCgroup])).get() == "who=bob")
        squatter.signal(SIGKILL)
        _ = try await squatter.wait(timeout: 10)

        // Alice's own process outside the session.
        let outside = try await Self.listen(as: Self.alice, ["tcp", String(port), "outside"])
        #expect(Self.refused(Self.reach(endpoint, with: SessionConnector()), foreign: true))
        #expect(try Self.reach(endpoint, with: SessionConnector(skipping: [.listenerCgroup])).get() == "who=outside")
        outside.signal(SIGKILL)
        _ = try await outside.wait(timeout: 10)

        let session = try await Self.listen(as: Self.alice, ["tcp", String(port), "session"], in: cgroup.path)
        defer { session.signal(SIGKILL) }
        #expect(try Self.reach(endpoint, with: SessionConnector()).get() == "who=session")
    }

}
