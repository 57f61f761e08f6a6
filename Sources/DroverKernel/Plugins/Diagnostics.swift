import Foundation

/// The diagnostics sink in force, or none: callers record events without checking whether
/// diagnostics are on.
public struct Diagnostics: Sendable {
    public let sink: (any DiagnosticsSink)?

    public init(sink: (any DiagnosticsSink)?) {
        self.sink = sink
    }

    public static let off = Diagnostics(sink: nil)

    /// Records `name` with `fields`, in order, when a sink is configured.
    public func record(_ name: String, _ fields: (String, String)...) {
        record(name, fields: fields)
    }

    /// Records `name` with a list of fields built at run time.
    public func record(_ name: String, fields: [(String, String)]) {
        guard let sink else { return }
        sink.record(DiagnosticsEvent(name, fields: fields.map { DiagnosticsEvent.Field($0.0, $0.1) }))
    }
}
