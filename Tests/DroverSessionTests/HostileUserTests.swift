import DroverKernel
import DroverTesting
import Foundation
import Testing

/// A real unprivileged user plants symlinks where droverd keeps the user's session state; root
/// must never follow them: the root-owned target keeps its owner, mode and content, and no error
/// reveals what it holds.
@Suite(.serialized) struct HostileUserTests {
    struct Snapshot: Equatable {
        var owner: uid_t
        var mode: mode_t
        var entries: [String]
        var secret: String?
        var secretOwner: uid_t
        var secretMode: mode_t
    }

    static func snapshot(_ target: String) -> Snapshot {
        var folder = stat()
        var file = stat()
        stat(target, &folder)
        stat(target + "/secret", &file)
        return Snapshot(owner: folder.st_uid, mode: folder.st_mode & 0o7777,
                        entries: ((try? FileManager.default.contentsOfDirectory(atPath: target)) ?? []).sorted(),
                        secret: try? String(contentsOfFile: target + "/secret", encoding: .utf8),
                        secretOwner: file.st_uid, secretMode: file.st_mode & 0o7777)
    }

    @Test(.enabled(if: SystemUsers.available))
    func symlinksInTheUsersHomeNeverLeadRootAnywhere() async throws {
        let user = "drovertest4"
        try await SystemUsers.ensure([user])
        let account = try #require(SystemUsers.account(user))
        let home = account.home
        let sessions = home + "/.local/share/drover/sessions"
        // Clean slate, owned by the user as their own files would be.
        _ = try await Executable.run("/bin/rm", ["-rf", home + "/.local/share/drover"])

        let target = TemporaryDirectory(prefix: "drover-root-owned")
        chmod(target.path, 0o755)
        try target.write("secret", "root-only-content-7d3f\n")
        chmod(target.url("secret"), 0o600)
        let before = Self.snapshot(target.path)

        let cluster = try await TestCluster(addresses: ["127.0.0.1"], backend: .sqlite,
                                            rserver: "session-command=\(demoCommand)\nauth-pam-service=\(SystemUsers.pamService)\n")
        try await cluster.start(0)
        let node = cluster.nodes[0]
        let visitor = try await signIn(node, user: user)
        func asUser(_ command: String) async throws {
            let result = try await Executable.run("/usr/bin/setpriv", ["--reuid=\(account.uid)", "--regid=\(account.gid)", "--init-groups",
                                                                       "--", "/bin/sh", "-c", command])
            #expect(result.status == 0, "\(command): \(result.stderr)")
        }
        func start() async throws -> RawHTTPClient.Response {
            try await RawHTTPClient.request("POST", host: node.address, port: node.port, path: "/api/sessions", headers: visitor.headers, timeout: 60)
        }
        func bump(_ id: String) async throws -> RawHTTPClient.Response {
            try await RawHTTPClient.request("POST", host: node.address, port: node.port, path: "/s/\(id)/count", headers: visitor.headers, timeout: 60)
        }
        var answers: [String] = []

        // 1. The sessions folder is a symlink into the root-owned folder.
        try await asUser("mkdir -p '\(home)/.local/share/drover' && ln -s '\(target.path)' '\(sessions)'")
        let refused = try await start()
        answers.append(refused.body)
        #expect(refused.status == 500, "the user's own shell cannot make its state folder there: \(refused.status) \(refused.body)")
        try await asUser("rm '\(sessions)' && mkdir -p '\(sessions)'")

        // 2. A suspended session's state folder becomes a symlink; it is resumed, then quit.
        let created = try await start()
        let first = try #require(json(created)["id"] as? String, "\(created.status) \(created.body)")
        #expect(count(try await bump(first)) == 1)
        #expect(try await RawHTTPClient.request("POST", host: node.address, port: node.port, path: "/api/sessions/\(first)/suspend", headers: visitor.headers).status == 202)
        try await cluster.eventually("suspended") { SystemUsers.processes(ofSession: first).isEmpty }
        try await asUser("rm -rf '\(sessions)/\(first)' && ln -s '\(target.path)' '\(sessions)/\(first)'")
        answers.append(try await bump(first).body)
        #expect(try await RawHTTPClient.request("DELETE", host: node.address, port: node.port, path: "/api/sessions/\(first)", headers: visitor.headers).status == 204)

        // 3. A suspended session's log becomes a symlink to the root-only file; it is resumed.
        let second = try #require(json(try await start())["id"] as? String)
        #expect(count(try await bump(second)) == 1)
        #expect(try await RawHTTPClient.request("POST", host: node.address, port: node.port, path: "/api/sessions/\(second)/suspend", headers: visitor.headers).status == 202)
        try await cluster.eventually("suspended") { SystemUsers.processes(ofSession: second).isEmpty }
        try await asUser("rm -f '\(sessions)/\(second)/session.log' && ln -s '\(target.url("secret"))' '\(sessions)/\(second)/session.log'")
        answers.append(try await bump(second).body)
        #expect(try await RawHTTPClient.request("DELETE", host: node.address, port: node.port, path: "/api/sessions/\(second)", headers: visitor.headers).status == 204)

        #expect(Self.snapshot(target.path) == before, "the root-owned folder and file are untouched")
        for answer in answers { #expect(!answer.contains("root-only-content"), "no answer reveals the file: \(answer)") }
        #expect(try await cluster.stop(0) == 0)
    }

    /// Only droverd can reach a session: it listens on a Unix socket in a folder only droverd's
    /// user can enter, not on a loopback port any local user could connect to.
    @Test(.enabled(if: SystemUsers.available))
    func noOtherLocalUserCanReachASessionAroundDroverd() async throws {
        let (owner, stranger) = ("drovertest4", "drovertest5")
        try await SystemUsers.ensure([owner, stranger])
        let cluster = try await TestCluster(addresses: ["127.0.0.1"], backend: .sqlite,
                                            rserver: "session-command=\(demoCommand)\nauth-pam-service=\(SystemUsers.pamService)\n")
        try await cluster.start(0)
        let node = cluster.nodes[0]
        let visitor = try await signIn(node, user: owner)
        let created = try await RawHTTPClient.request("POST", host: node.address, port: node.port, path: "/api/sessions", headers: visitor.headers, timeout: 60)
        let id = try #require(json(created)["id"] as? String, "\(created.status) \(created.body)")
        let pid = try #require(SystemUsers.runningSessions().first { $0.id == id }?.pid)
        let environment = (FileManager.default.contents(atPath: "/proc/\(pid)/environ") ?? Data()).split(separator: 0)
            .map { String(decoding: $0, as: UTF8.self) }
        #expect(!environment.contains { $0.hasPrefix("DROVER_SESSION_PORT=") }, "no loopback port is offered")
        let socketPath = try #require(environment.first { $0.hasPrefix("DROVER_SESSION_SOCKET=") }.map { String($0.dropFirst(22)) })
        for user in [stranger, owner] {
            let account = try #require(SystemUsers.account(user))
            let attempt = try await Executable.run("/usr/bin/setpriv", [
                "--reuid=\(account.uid)", "--regid=\(account.gid)", "--init-groups", "--", "/usr/bin/python3", "-c",
                "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ntry:\n s.connect(sys.argv[1]); print('connected')\nexcept OSError as e: print('refused', e.errno)",
                socketPath])
            #expect(attempt.stdout.hasPrefix("refused"), "\(user) reached the session directly: \(attempt.stdout) \(attempt.stderr)")
        }
        // Through droverd, its user gets in, and a stranger's cookie does not.
        #expect(count(try await RawHTTPClient.request("POST", host: node.address, port: node.port, path: "/s/\(id)/count", headers: visitor.headers)) == 1)
        let other = try await signIn(node, user: stranger)
        #expect(try await RawHTTPClient.request(host: node.address, port: node.port, path: "/s/\(id)/count", headers: other.headers).status == 404)
        #expect(try await cluster.stop(0) == 0)
    }
}
