import DroverKernel
import DroverPlugins
import DroverTesting
import Foundation
import Logging
import Testing

/// Every diagnostics sink of the catalog through the conformance suite in `DroverTesting`, each
/// in a process of its own (the stderr sink writes to the process's standard error).
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

    static func configured(_ sink: String) throws -> TemporaryDirectory {
        let directory = TemporaryDirectory(prefix: "drover-diagnostics")
        try directory.write("rserver.conf", "server-data-dir=data\nserver-shared-storage-path=shared\n")
        try directory.write("load-balancer", "diagnostics=\(sink)\ndiagnostics-file=\(directory.url("diagnostics.log"))\n")
        return directory
    }

    @Test(arguments: sinkNames)
    func concurrentEventsGiveOneWholeLineEach(sink: String) async throws {
        let directory = try Self.configured(sink)
        let probe = try RunningProcess("drover-probe", ["diagnostics", "--config-dir", directory.path,
                                                        "--writers", String(DiagnosticsConformance.writers),
                                                        "--events", String(DiagnosticsConformance.events)])
        #expect(try await probe.wait(timeout: 60) == 0, "\(probe.stderr)")
        let read = try #require(Self.readers[sink])
        DiagnosticsConformance.expectWholeLines(read(probe, directory), pid: probe.pid)
    }

    /// The suite as an in-house sink writing to a file would run it, in process.
    @Test func theFileSinkPassesTheSuiteInProcess() async throws {
        let directory = try Self.configured("tmp")
        let config = try DroverConfiguration.load(directory: directory.path)
        let context = PluginContext(config, key: nil, logger: Logger(label: "test"))
        let diagnostics = try PluginCatalog.builtin.makeDiagnostics(config.effectiveLoadBalancer, context: context)
        let sink = try #require(diagnostics.sink)
        await DiagnosticsConformance.run(sink) { directory.read("diagnostics.log") ?? "" }
    }
}
