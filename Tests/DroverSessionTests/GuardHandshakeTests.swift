import DroverCluster
import DroverSessionProtocol
import DroverTesting
import Foundation
import Testing

/// The handshake between droverd and its session guards: a guard binary replaced on disk under
/// a running droverd (an upgrade's files, copied in by hand) is found out before either side
/// reads anything else of the other, and the session's start fails with a message that says so.
@Suite struct GuardHandshakeTests {
    static let release = ClusterMembership.currentVersion

    /// A spec as droverd writes it, from the build `build` (nil: a droverd older than the handshake).
    func spec(build: SessionGuardProtocol.Build?) -> String {
        var spec = SessionGuardProtocol.Spec(sessionID: String(repeating: "a", count: 32), configDirectory: "/nonexistent", lockPath: "/nonexistent/lock",
                                             lockWait: 1, command: "/bin/false", userName: "nobody", uid: 65534, gid: 65534, home: "/",
                                             socketPath: "/nonexistent/socket", environment: [:], stopGrace: 1, droverdSilence: 5)
        spec.build = build
        return spec.line
    }

    /// The guard says its build as droverd and drover do, so an operator can check the one
    /// beside droverd.
    @Test func theGuardPrintsItsVersion() async throws {
        let result = try await Executable.run("drover-session-guard", ["--version"])
        #expect(result.status == 0 && result.stdout == "Drover \(Self.release) (cluster protocol 1, registry schema 10)\n", "\(result.stdout)\(result.stderr)")
    }

    @Test func helloCarriesTheBuildAndReadsBack() {
        let build = SessionGuardProtocol.Build(release: "1.2.3", protocolVersion: 7)
        #expect(SessionGuardProtocol.Event.hello(build).line == "hello 7 1.2.3\n")
        #expect(SessionGuardProtocol.Event(line: "hello 7 1.2.3") == .hello(build))
        #expect(SessionGuardProtocol.Event(line: "hello seven 1.2.3") == nil)
        #expect(SessionGuardProtocol.handshakeRefusal(guard: build, droverd: SessionGuardProtocol.Build(release: "1.2.4", protocolVersion: 7),
                                                      guardPath: "/g") == nil, "releases of one protocol work together")
    }

    /// The real guard, given the spec of a droverd of another protocol, or of one from before the
    /// handshake: it says its build, refuses in one line that names both, and starts nothing.
    @Test(arguments: [SessionGuardProtocol.Build(release: "9.9.9", protocolVersion: 2), nil])
    func theGuardRefusesTheSpecOfAnotherBuild(droverd: SessionGuardProtocol.Build?) async throws {
        let guardPath = Executable.path("drover-session-guard")
        let result = try await Executable.run(guardPath, [], stdin: spec(build: droverd))
        let lines = result.stdout.split(separator: "\n").map(String.init)
        #expect(result.status == 2, "\(result.stdout) \(result.stderr)")
        // The path the guard names itself by (/proc/self/exe: symbolic links resolved).
        let path = URL(fileURLWithPath: guardPath).resolvingSymlinksInPath().path
        let expected = SessionGuardProtocol.handshakeRefusal(guard: .current, droverd: droverd, guardPath: path)
        #expect(lines == ["hello 1 \(Self.release)", "ended failed 2 \(expected ?? "(none)")"], "\(result.stdout)")
        #expect(expected?.contains("restart droverd") == true)
        if droverd != nil { #expect(expected?.contains("Drover \(Self.release) (cluster protocol 1) but droverd is Drover 9.9.9 (cluster protocol 2)") == true) }
    }

    /// A running droverd whose guard was replaced by one of another build: by one from before
    /// the handshake (it begins with its lock), and by one of the next protocol. The session's
    /// start fails with the reason and the fix, the impostor is killed, and nothing of what it
    /// said is taken for a session.
    @Test(arguments: ["old", "next"])
    func droverdRefusesAGuardReplacedUnderIt(impostor: String) async throws {
        let folder = TemporaryDirectory(prefix: "drover-replaced")
        let droverd = folder.url("droverd")
        // droverd finds its guard beside itself, by /proc/self/exe: a link keeps that folder.
        if link(Executable.path("droverd"), droverd) != 0 {
            try FileManager.default.copyItem(atPath: Executable.path("droverd"), toPath: droverd)
        }
        let first = impostor == "old" ? "locked" : "hello 2 9.9.9"
        try folder.write("drover-session-guard", """
            #!/bin/sh
            read spec
            echo '\(first)'
            echo "started $$ process-group"
            while :; do sleep 1; done
            """, mode: 0o755)
        let cluster = try await TestCluster(addresses: ["127.0.0.1"], backend: .sqlite, rserver: "session-command=\(demoCommand)\nauth-none=1\n")
        try await cluster.start(0, launcher: ["/bin/sh", "-c", "shift; exec '\(droverd)' \"$@\"", "sh"])
        let node = cluster.nodes[0]
        let created = try await RawHTTPClient.request("POST", host: node.address, port: node.port, path: "/api/sessions", timeout: 60)
        #expect(created.status != 201, "a session started on a guard of another build: \(created.body)")
        let expected = impostor == "old"
            ? "\(folder.url("drover-session-guard")) did not begin with its build (it began 'locked'), so it is older than this droverd, Drover \(Self.release) (cluster protocol 1)"
            : "\(folder.url("drover-session-guard")) is Drover 9.9.9 (cluster protocol 2) but droverd is Drover \(Self.release) (cluster protocol 1)"
        #expect(created.body.contains(expected) && created.body.contains("restart droverd"), "\(created.status) \(created.body)")
        // The impostor was killed at its first line, before it could go on.
        try await cluster.eventually("no impostor left", timeout: 10) { SystemUsers.processes(matching: folder.path + "/drover-session-guard").isEmpty }
        #expect(try await cluster.stop(0) == 0)
    }
}
