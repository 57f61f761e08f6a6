import DroverKernel
import DroverPlugins
import DroverTesting
import Foundation
import Testing

/// What every diagnostics sink of the catalog must do, in a process of its own (the stderr sink
/// writes to the process's standard error): several threads recording at once give one whole
/// line per event, each ending in the event's fields, none lost and none interleaved.
@Suite struct DiagnosticsConformanceTests {
    /// Where each sink's lines land, read after the probe exits. A sink added to the catalog
    /// must be added here (``everyCatalogSinkIsCovered()`` fails until it is).
    static let readers: [String: @Sendable (_ probe: RunningProcess, _ directory: TemporaryDirectory) -> String] = [
        "stderr": { probe, _ in probe.stderr },
        "tmp": { _, directory in directory.read("diagnostics.log") ?? "" },
    ]

    static var sinkNames: [String] { PluginCatalog.builtin.diagnosticsSinks.map { $0.name } }

    @Test func everyCatalogSinkIsCovered() {
        #expect(Set(Self.sinkNames) == Set(Self.readers.keys), "add a reader for each new sink to DiagnosticsConformanceTests.readers")
    }

    @Test(arguments: sinkNames)
    func concurrentEventsGiveOneWholeLineEach(sink: String) async throws {
        let directory = TemporaryDirectory(prefix: "drover-diagnostics")
        try directory.write("rserver.conf", "server-data-dir=data\nserver-shared-storage-path=shared\n")
        try directory.write("load-balancer", "diagnostics=\(sink)\ndiagnostics-file=\(directory.url("diagnostics.log"))\n")
        let probe = try RunningProcess("drover-probe", ["diagnostics", "--config-dir", directory.path, "--writers", "4", "--events", "100"])
        #expect(try await probe.wait(timeout: 60) == 0, "\(probe.stderr)")
        let read = try #require(Self.readers[sink])
        let lines = read(probe, directory).split(separator: "\n").filter { $0.contains("event=w ") }
        #expect(lines.count == 400, "one line per event")
        let padding = String(repeating: "x", count: 300)
        #expect(lines.allSatisfy { $0.contains("pid=\(probe.pid) event=w writer=") && $0.hasSuffix(" pad=\(padding)") }, "whole lines")
        let seen = Set(lines.compactMap { line in line.split(separator: " ").first { $0.hasPrefix("writer=") }.map { "\($0) \(line.split(separator: " ").first { $0.hasPrefix("n=") } ?? "")" } })
        #expect(seen.count == 400, "every event once")
    }
}
