import DroverKernel
import DroverRegistrySQL
import Synchronization
import Testing

/// The line for registry connections: a node's heartbeat must not wait behind a burst.
@Suite struct SlotPoolTests {
    @Test func anUrgentCallerGoesAheadOfOrdinaryOnesButBehindEarlierUrgentOnes() async throws {
        let pool = SlotPool([0])
        let held = try await pool.acquire()
        let order = Order()
        var callers: [Task<Void, any Error>] = []
        for (name, urgent) in [("ordinary 1", false), ("ordinary 2", false), ("heartbeat 1", true), ("heartbeat 2", true)] {
            let before = pool.waiting
            callers.append(Task {
                let slot = try await pool.acquire(urgent: urgent)
                order.names.withLock { $0.append(name) }
                pool.release(slot)
            })
            // Counted, not slept on: each caller is in line before the next one comes.
            while pool.waiting == before { await Task.yield() }
        }
        pool.release(held)
        for caller in callers { try await caller.value }
        #expect(order.names.withLock { $0 } == ["heartbeat 1", "heartbeat 2", "ordinary 1", "ordinary 2"])
    }

    @Test func closingRefusesEveryWaiterAndLaterCaller() async throws {
        let pool = SlotPool([0])
        _ = try await pool.acquire()
        let waiter = Task { try await pool.acquire() }
        while pool.waiting == 0 { await Task.yield() }
        pool.close()
        await #expect(throws: RegistryError.self) { try await waiter.value }
        await #expect(throws: RegistryError.self) { try await pool.acquire(urgent: true) }
    }
}

/// The order in which callers got their slot.
private final class Order: Sendable {
    let names = Mutex<[String]>([])
}
