import Foundation

/// Tests that load the machine (hundreds of session processes at once, a browser, nodes killed in
/// a loop) or that judge real timeouts (a paused owner, a partition) take turns by the load they
/// put on the machine. Run together without measure on two cores they would measure each other's
/// load (a load average of 30 was seen) instead of the product. Most of them, though, spend their
/// time waiting for a lease or a heartbeat to run out and keep a tenth of a core busy, so holding
/// them to one at a time made them the suite's critical path (385 s of heavy tests, one after the
/// other, in a 400 s suite).
///
/// Each heavy test names its `Load`: the cores it keeps busy when it runs alone, as every run
/// prints it. Heavy tests run side by side while their loads add up to at most one core, which
/// leaves the other core to the light tests; a `wholeMachine` test runs alone. Turns go in the
/// order asked among the tests that fit: a test waiting for the whole machine does not hold back
/// a small one that fits beside those running (the suite's heavy tests are a fixed set, so it
/// runs once they are done, at the latest).
public enum HeavyTests {
    public enum Load: Sendable, CustomStringConvertible {
        /// The cores the test keeps busy when it runs alone (rounded up from a measured run).
        case cores(Double)
        /// Loads the machine on its own: runs with no other heavy test.
        case wholeMachine

        var share: Double {
            switch self {
            case .cores(let cores): cores
            case .wholeMachine: HeavyTests.budget + 1
            }
        }

        public var description: String {
            switch self {
            case .cores(let cores): String(format: "%.2f cores", cores)
            case .wholeMachine: "the whole machine"
            }
        }
    }

    /// The cores all running heavy tests may keep busy together.
    static let budget = 1.0

    private actor Turns {
        private var held = 0.0
        private var running = 0
        private var waiting: [(share: Double, turn: CheckedContinuation<Void, Never>)] = []

        /// Whether a test of `share` may start beside those running: always when none runs.
        private func fits(_ share: Double) -> Bool {
            running == 0 || held + share <= HeavyTests.budget + 1e-9
        }

        private func hold(_ share: Double) {
            held += share
            running += 1
        }

        func take(_ share: Double) async {
            if fits(share) {
                hold(share)
                return
            }
            await withCheckedContinuation { waiting.append((share, $0)) }
        }

        func give(_ share: Double) {
            held -= share
            running -= 1
            if running == 0 { held = 0 }
            // In the order asked, every waiting test that fits now.
            var index = 0
            while index < waiting.count {
                guard fits(waiting[index].share) else {
                    index += 1
                    continue
                }
                let next = waiting.remove(at: index)
                hold(next.share)
                next.turn.resume()
            }
        }
    }

    private static let turns = Turns()

    /// The machine's busy CPU time so far, in seconds (every core, user and system), from the
    /// first line of /proc/stat; nil where it cannot be read.
    static func machineBusySeconds() -> Double? {
        guard let stat = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
              let first = stat.split(separator: "\n").first else { return nil }
        let fields = first.split(separator: " ").dropFirst().compactMap { Double($0) }
        guard fields.count >= 5 else { return nil }
        // user nice system idle iowait irq softirq steal …: busy is all but idle and iowait.
        let busy = fields.enumerated().filter { $0.offset != 3 && $0.offset != 4 }.prefix(6).map(\.element).reduce(0, +)
        return busy / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// Runs `body` once the heavy tests running leave room for `load`, and prints how long it
    /// waited for its turn, how long it ran, and how busy the machine's cores were meanwhile (the
    /// suite's breakdown: a heavy test's own time is not its wall time; run alone, the cores busy
    /// are the test's own load).
    public static func run<T: Sendable>(_ load: Load, _ name: String = #function, _ body: () async throws -> T) async throws -> T {
        let asked = ContinuousClock.now
        await turns.take(load.share)
        let began = ContinuousClock.now
        let busyBefore = machineBusySeconds()
        defer {
            let (waited, ran) = ((began - asked) / .seconds(1), (ContinuousClock.now - began) / .seconds(1))
            let cores = machineBusySeconds().flatMap { after in busyBefore.map { (after - $0) / max(ran, 0.001) } }
            print("heavy test \(name) (\(load)): waited \(String(format: "%.1f", waited)) s, ran \(String(format: "%.1f", ran)) s"
                  + (cores.map { String(format: ", %.2f cores busy", $0) } ?? ""))
        }
        do {
            let result = try await body()
            await turns.give(load.share)
            return result
        } catch {
            await turns.give(load.share)
            throw error
        }
    }
}
