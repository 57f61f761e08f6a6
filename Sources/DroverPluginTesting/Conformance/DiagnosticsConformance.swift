public import DroverKernel
import Foundation
import Testing

/// What every diagnostics sink must do: several threads recording at once give one whole line
/// per event, each ending in the event's fields, none lost and none interleaved. An in-house
/// sink's tests run it in process with a way to read back what the sink wrote:
///
/// ```swift
/// @Test func conforms() async throws {
///     let sink = try MySinkFactory.make(config: loadBalancer, context: context)
///     await DiagnosticsConformance.run(sink) { String(contentsOfFile: path) ?? "" }
/// }
/// ```
/// (A sink that writes to the process's standard error is run in a process of its own:
/// `drover-probe diagnostics` records with ``recordConcurrently(into:writers:events:)`` and
/// the test checks its output with ``expectWholeLines(_:pid:writers:events:)``.)
public enum DiagnosticsConformance {
    public static let writers = 4
    public static let events = 100
    static let padding = String(repeating: "x", count: 300)

    /// Records `writers` × `events` events `w writer=W n=N pad=…` into `sink`, the writers on
    /// threads of their own, all at once.
    public static func recordConcurrently(into sink: any DiagnosticsSink, writers: Int = writers, events: Int = events) async {
        let padding = padding
        _ = try? await onOwnThread {
            let group = DispatchGroup()
            for writer in 0..<writers {
                group.enter()
                Thread {
                    for n in 0..<events {
                        sink.record(DiagnosticsEvent("w", fields: [.init("writer", "\(writer)"), .init("n", "\(n)"), .init("pad", padding)]))
                    }
                    group.leave()
                }.start()
            }
            group.wait()
        }
    }

    /// Checks that `text` holds one whole line for every event recorded by process `pid`.
    public static func expectWholeLines(_ text: String, pid: Int32, writers: Int = writers, events: Int = events) {
        let lines = text.split(separator: "\n").filter { $0.contains("event=w ") }
        #expect(lines.count == writers * events, "one line per event")
        #expect(lines.allSatisfy { $0.contains("pid=\(pid) event=w writer=") && $0.hasSuffix(" pad=\(padding)") }, "whole lines")
        let seen = Set(lines.map { line in
            line.split(separator: " ").filter { $0.hasPrefix("writer=") || $0.hasPrefix("n=") }.joined(separator: " ")
        })
        #expect(seen.count == writers * events, "every event once")
    }

    /// Runs the suite in this process against `sink`, whose output `read` returns.
    public static func run(_ sink: any DiagnosticsSink, read: @Sendable () -> String) async {
        await recordConcurrently(into: sink)
        expectWholeLines(read(), pid: getpid())
    }
}
