@testable import DroverCluster
import DroverKernel
import Foundation
import Synchronization
import Testing

/// The thread that tells session guards droverd is alive (``AliveTicker``), on a real pipe.
struct AliveTickerTests {
    /// What arrives on `descriptor` within `seconds`, and whether the writer closed; read on a
    /// thread of its own, not one of the cooperative pool's two.
    func read(_ descriptor: Int32, for seconds: Double) async -> (text: String, closed: Bool) {
        (try? await onOwnThread { Self.blockingRead(descriptor, for: seconds) }) ?? ("", false)
    }

    static func blockingRead(_ descriptor: Int32, for seconds: Double) -> (text: String, closed: Bool) {
        var text = ""
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            var ready = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
            guard poll(&ready, 1, Int32(max(1, deadline.timeIntervalSinceNow * 1000))) > 0 else { continue }
            var buffer = [UInt8](repeating: 0, count: 256)
            let count = Foundation.read(descriptor, &buffer, buffer.count)
            if count <= 0 { return (text, true) }
            text += String(decoding: buffer[0..<count], as: UTF8.self)
        }
        return (text, false)
    }

    @Test func ticksEverySecondWhileServingStopsWhenCutOffAndClosesItsDescriptorOnRemoval() async throws {
        var ends: [Int32] = [0, 0]
        try #require(pipe(&ends) == 0)
        defer { close(ends[0]) }
        let ticker = AliveTicker()
        let serving = Mutex(true)
        let id = ticker.add(descriptor: dup(ends[1])) { serving.withLock { $0 } }
        close(ends[1])

        let ticking = await read(ends[0], for: 3.5)
        #expect(!ticking.closed)
        #expect(Set(ticking.text.split(separator: "\n")) == ["alive"])
        #expect((2...4).contains(ticking.text.split(separator: "\n").count), "\(ticking.text.debugDescription)")

        serving.withLock { $0 = false }
        _ = await read(ends[0], for: 1.2)
        let cutOff = await read(ends[0], for: 2.5)
        #expect(cutOff.text.isEmpty && !cutOff.closed, "a node that cannot serve must fall silent: \(cutOff.text.debugDescription)")

        serving.withLock { $0 = true }
        ticker.remove(id)
        // The ticker held the last write end: the reader sees it close, and nothing more comes.
        let removed = await read(ends[0], for: 2.5)
        #expect(removed.closed)
        #expect(removed.text.isEmpty)
    }

    /// A tick whose work takes longer than ``AliveTicker/lateBound`` is reported (droverd logs
    /// `event=alive-tick-late`): a guard that hears nothing can then be told apart from a
    /// ticker that was held up.
    @Test func aTickThatTakesLongIsReportedAndAQuickOneIsNot() async throws {
        var ends: [Int32] = [0, 0]
        try #require(pipe(&ends) == 0)
        defer { close(ends[0]) }
        let reports = Mutex<[(late: Double, took: Double, guards: Int)]>([])
        let ticker = AliveTicker { late, took, guards in reports.withLock { $0.append((late, took, guards)) } }
        let slow = Mutex(false)
        let id = ticker.add(descriptor: dup(ends[1])) {
            if slow.withLock({ $0 }) { usleep(700_000) }
            return true
        }
        close(ends[1])
        defer { ticker.remove(id) }

        _ = await read(ends[0], for: 2.5)
        // (A tick may still wake late on a loaded machine, and says so, but its work was quick.)
        #expect(reports.withLock { $0.allSatisfy { $0.took < 0.5 } }, "quick ticks reported as slow: \(reports.withLock { $0 })")
        slow.withLock { $0 = true }
        _ = await read(ends[0], for: 2.5)
        let slowReports = reports.withLock { $0 }
        #expect(!slowReports.isEmpty)
        #expect(slowReports.allSatisfy { $0.took >= 0.6 && $0.guards == 1 }, "\(slowReports)")
    }

    @Test func aGuardThatStoppedReadingNeverBlocksTheTicksOfTheOthers() async throws {
        var stuck: [Int32] = [0, 0]
        var healthy: [Int32] = [0, 0]
        try #require(pipe(&stuck) == 0 && pipe(&healthy) == 0)
        defer { for fd in stuck + healthy { close(fd) } }
        // Fill the stuck guard's pipe to the brim.
        _ = fcntl(stuck[1], F_SETFL, fcntl(stuck[1], F_GETFL) | O_NONBLOCK)
        let filler = [UInt8](repeating: 0x20, count: 4096)
        while write(stuck[1], filler, filler.count) > 0 {}
        let ticker = AliveTicker()
        let first = ticker.add(descriptor: dup(stuck[1])) { true }
        let second = ticker.add(descriptor: dup(healthy[1])) { true }
        defer { ticker.remove(first); ticker.remove(second) }
        let ticking = await read(healthy[0], for: 2.5)
        #expect(ticking.text.hasPrefix("alive\n"), "\(ticking.text.debugDescription)")
    }

    @Test func aGuardGoneBeforeItsTickCostsNoSignal() async throws {
        var ends: [Int32] = [0, 0]
        try #require(pipe(&ends) == 0)
        let ticker = AliveTicker()
        let id = ticker.add(descriptor: ends[1]) { true }
        // No reader: the tick's write fails with EPIPE; SIGPIPE would end this test process.
        close(ends[0])
        try await Task.sleep(for: .seconds(2.2))
        ticker.remove(id)
    }
}
