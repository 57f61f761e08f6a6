import Foundation

/// Tests that load the whole machine (hundreds of session processes at once, nodes killed in a
/// loop, droverd paused) take turns: run together on two cores they would measure each other's
/// load (a load average of 30 was seen) instead of the product, while the many light tests
/// still run beside whichever one is going.
public enum HeavyTests {
    private actor Turns {
        private var busy = false
        private var waiting: [CheckedContinuation<Void, Never>] = []

        func take() async {
            guard busy else {
                busy = true
                return
            }
            await withCheckedContinuation { waiting.append($0) }
        }

        func give() {
            if waiting.isEmpty { busy = false } else { waiting.removeFirst().resume() }
        }
    }

    private static let turns = Turns()

    /// Runs `body` when no other heavy test runs, and prints how long it waited for its turn and
    /// how long it ran (the suite's breakdown: a heavy test's own time is not its wall time).
    public static func oneAtATime<T: Sendable>(_ name: String = #function, _ body: () async throws -> T) async throws -> T {
        let asked = ContinuousClock.now
        await turns.take()
        let began = ContinuousClock.now
        defer {
            let (waited, ran) = ((began - asked) / .seconds(1), (ContinuousClock.now - began) / .seconds(1))
            print("heavy test \(name): waited \(String(format: "%.1f", waited)) s, ran \(String(format: "%.1f", ran)) s")
        }
        do {
            let result = try await body()
            await turns.give()
            return result
        } catch {
            await turns.give()
            throw error
        }
    }
}
