public import DroverKernel
import Foundation

/// Appends diagnostics events, one line each, to a file (`diagnostics=tmp`).
///
/// The file is `diagnostics-file` in `load-balancer`, by default
/// `/tmp/drover-load-balancer-diagnostics`. Several processes may append to one file.
public struct TmpDiagnosticsSink: DiagnosticsSink {
    public let name = TmpDiagnosticsSinkFactory.name
    public let path: String
    private let writer: LineWriter

    init(path: String, writer: LineWriter) {
        self.path = path
        self.writer = writer
    }

    public func record(_ event: DiagnosticsEvent) {
        writer.write(line: event.formatted(pid: getpid()))
    }
}

/// Selects ``TmpDiagnosticsSink`` with `diagnostics=tmp`.
public enum TmpDiagnosticsSinkFactory: DiagnosticsSinkFactory {
    public static let name = "tmp"

    /// Opens `diagnostics-file` (default `/tmp/drover-load-balancer-diagnostics`) for appending.
    public static func make(config: LoadBalancerConfiguration, context: PluginContext) throws -> any DiagnosticsSink {
        switch LineWriter.appending(to: config.diagnosticsFile) {
        case .success(let writer):
            return TmpDiagnosticsSink(path: config.diagnosticsFile, writer: writer)
        case .failure(let failure):
            throw config.source.error("diagnostics-file", "\(failure); set diagnostics-file= to a writable path")
        }
    }
}
