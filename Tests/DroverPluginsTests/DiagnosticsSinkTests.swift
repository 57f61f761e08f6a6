import DroverKernel
import DroverPlugins
import DroverTesting
import Foundation
import Logging
import Testing

@Suite struct DiagnosticsSinkTests {
    func context(_ dir: TemporaryDirectory) -> PluginContext {
        PluginContext(configDirectory: dir.path, dataDirectory: dir.path, secureCookieKey: nil, logger: Logger(label: "test"))
    }

    @Test func tmpSinkAppendsOneLinePerEventAtTheConfiguredPath() async throws {
        let dir = TemporaryDirectory()
        var lb = LoadBalancerConfiguration()
        lb.diagnostics = "tmp"
        lb.diagnosticsFile = dir.url("diag")
        try dir.write("diag", "earlier line\n")
        let sink = try #require(try PluginCatalog.builtin.diagnosticsSink(for: lb)).make(config: lb, context: context(dir))
        sink.record(DiagnosticsEvent("node-joined", fields: [.init("node", "3")]))
        sink.record(DiagnosticsEvent("reload"))
        let lines = try #require(dir.read("diag")).split(separator: "\n")
        #expect(lines.count == 3)
        #expect(lines[0] == "earlier line")
        #expect(lines[1].hasSuffix("pid=\(getpid()) event=node-joined node=3"))
        #expect(lines[2].hasSuffix("event=reload"))
    }

    @Test func tmpSinkLinesNeverInterleaveUnderConcurrentWriters() async throws {
        let dir = TemporaryDirectory()
        var lb = LoadBalancerConfiguration()
        lb.diagnostics = "tmp"
        lb.diagnosticsFile = dir.url("diag")
        let sink = try #require(try PluginCatalog.builtin.diagnosticsSink(for: lb)).make(config: lb, context: context(dir))
        let padding = String(repeating: "x", count: 300)
        await withTaskGroup(of: Void.self) { group in
            for writer in 0..<8 {
                group.addTask {
                    for n in 0..<200 { sink.record(DiagnosticsEvent("w", fields: [.init("writer", "\(writer)"), .init("n", "\(n)"), .init("pad", padding)])) }
                }
            }
        }
        let lines = try #require(dir.read("diag")).split(separator: "\n")
        #expect(lines.count == 1600)
        #expect(lines.allSatisfy { $0.hasSuffix("pad=\(padding)") && $0.contains("event=w writer=") })
    }

    @Test func tmpSinkRefusesAnUnwritablePathWithTheKeyToFix() async throws {
        let dir = TemporaryDirectory()
        let lb = try LoadBalancerConfiguration(parsing: "diagnostics=tmp\ndiagnostics-file=/nonexistent/dir/diag\n",
                                               path: dir.url("load-balancer"), baseDirectory: dir.path)
        let factory = try #require(try PluginCatalog.builtin.diagnosticsSink(for: lb))
        #expect(throws: ConfigurationError(file: dir.url("load-balancer"), line: 2,
            "cannot open /nonexistent/dir/diag for writing (No such file or directory); set diagnostics-file= to a writable path")) {
            try factory.make(config: lb, context: context(dir))
        }
    }

    /// In /tmp another user can make the file first (to read what is written), or a FIFO (to
    /// block the node when it opens it for writing): both refused, saying what to do.
    @Test func tmpSinkRefusesAFileMadeByAnotherUserOrAFIFOAndKeepsItsOwnPrivate() async throws {
        let dir = TemporaryDirectory()
        func make(_ name: String) throws -> any DiagnosticsSink {
            let lb = try LoadBalancerConfiguration(parsing: "diagnostics=tmp\ndiagnostics-file=\(name)\n", path: dir.url("load-balancer"), baseDirectory: dir.path)
            return try #require(try PluginCatalog.builtin.diagnosticsSink(for: lb)).make(config: lb, context: context(dir))
        }
        #expect(mkfifo(dir.url("fifo"), 0o666) == 0)
        #expect(throws: ConfigurationError(file: dir.url("load-balancer"), line: 2,
            "cannot open \(dir.url("fifo")) for writing (it is not a regular file (a FIFO, socket or device); remove it); set diagnostics-file= to a writable path")) {
            _ = try make("fifo")
        }
        try dir.write("loose", "", mode: 0o644)
        _ = try make("loose")
        var info = stat()
        stat(dir.url("loose"), &info)
        #expect(info.st_mode & 0o777 == 0o600, "a file of ours readable by others is made private")
        _ = try make("fresh")
        stat(dir.url("fresh"), &info)
        #expect(info.st_mode & 0o777 == 0o600)
        if geteuid() == 0 {
            try dir.write("planted", "", mode: 0o666)
            #expect(chown(dir.url("planted"), 65534, 65534) == 0)
            #expect(throws: ConfigurationError(file: dir.url("load-balancer"), line: 2,
                "cannot open \(dir.url("planted")) for writing (it was made by another user (uid 65534), who could read what is written; remove it); set diagnostics-file= to a writable path")) {
                _ = try make("planted")
            }
        }
    }

    @Test func tmpSinkDoesNotFollowASymlinkPlantedAtItsPath() async throws {
        let dir = TemporaryDirectory()
        try dir.write("target", "")
        symlink(dir.url("target"), dir.url("diag"))
        let lb = try LoadBalancerConfiguration(parsing: "diagnostics=tmp\ndiagnostics-file=diag\n", path: dir.url("load-balancer"), baseDirectory: dir.path)
        #expect(throws: ConfigurationError.self) {
            try #require(try PluginCatalog.builtin.diagnosticsSink(for: lb)).make(config: lb, context: context(dir))
        }
        #expect(dir.read("target") == "")
    }
}
