import DroverKernel
import DroverTesting
import Foundation
import Testing

@Suite struct DiagnosticsEventTests {
    @Test func formatsOneGreppableLine() {
        let event = DiagnosticsEvent("node-joined", time: Date(timeIntervalSince1970: 1_700_000_000.25),
                                     fields: [.init("node", "2"), .init("host", "a b"), .init("note", "x=\"y\"\nz")])
        #expect(event.formatted(pid: 42) == #"2023-11-14T22:13:20.250Z pid=42 event=node-joined node=2 host="a b" note="x=\"y\"\nz""#)
    }

    @Test func emptyValuesAreQuoted() {
        let event = DiagnosticsEvent("e", time: Date(timeIntervalSince1970: 0), fields: [.init("k", "")])
        #expect(event.formatted(pid: 1) == #"1970-01-01T00:00:00.000Z pid=1 event=e k="""#)
    }

    @Test func diagnosticsOffRecordsNothingAndOnRecordsInOrder() {
        Diagnostics.off.record("ignored")
        let sink = InMemoryDiagnosticsSink()
        let diagnostics = Diagnostics(sink: sink)
        diagnostics.record("a", ("k", "1"))
        diagnostics.record("b")
        #expect(sink.events.map(\.name) == ["a", "b"])
        #expect(sink.events[0].fields == [.init("k", "1")])
    }
}
