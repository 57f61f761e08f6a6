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

    /// Runs `body` when no other heavy test runs.
    public static func oneAtATime<T: Sendable>(_ body: () async throws -> T) async throws -> T {
        await turns.take()
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
