public import DroverKernel
import Foundation

/// Writes diagnostics events, one line each, to standard error (`diagnostics=stderr`), for nodes
/// run in the foreground or under a supervisor that captures it.
public struct StderrDiagnosticsSink: DiagnosticsSink {
    public let name = StderrDiagnosticsSinkFactory.name
    private let writer = LineWriter(fileDescriptor: STDERR_FILENO, closeOnDeinit: false)

    public init() {}

    public func record(_ event: DiagnosticsEvent) {
        writer.write(line: event.formatted(pid: getpid()))
    }
}

/// Selects ``StderrDiagnosticsSink`` with `diagnostics=stderr`.
public enum StderrDiagnosticsSinkFactory: DiagnosticsSinkFactory {
    public static let name = "stderr"

    public static func make(config: LoadBalancerConfiguration, context: PluginContext) throws -> any DiagnosticsSink {
        StderrDiagnosticsSink()
    }
}
