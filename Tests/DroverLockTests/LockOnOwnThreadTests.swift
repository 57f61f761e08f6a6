import DroverKernel
import Dispatch
import Foundation
import Testing

/// The `…OnOwnThread` forms keep a lock call stuck in the kernel (a dead NFS mount) off the
/// cooperative pool: more calls are stuck at once than the pool has threads, and a task must
/// still run to unstick them. Were the calls made on the pool, it would have no thread left
/// for that task (nor for the test's time limit): a watchdog thread then stops the run with
/// a message after 30 s.
@Suite struct LockOnOwnThreadTests {
    /// A provider whose every call blocks until the test lets it go.
    final class StuckProvider: LockProvider {
        let name = "stuck"
        let refreshInterval = 1
        let gate = DispatchSemaphore(value: 0)

        func tryAcquire(_ path: String) throws -> (any HeldLock)? {
            gate.wait()
            return nil
        }

        func isLocked(_ path: String) throws -> Bool {
            gate.wait()
            return true
        }
    }

    @Test func callsStuckInTheKernelLeaveTheCooperativePoolFree() async throws {
        let provider = StuckProvider()
        let done = DispatchSemaphore(value: 0)
        defer { done.signal() }
        Thread {
            if done.wait(timeout: .now() + 30) == .timedOut {
                fatalError("LockOnOwnThreadTests: lock calls held every thread of the cooperative pool (the …OnOwnThread forms must not run on it)")
            }
        }.start()
        let stuck = 4 * max(2, ProcessInfo.processInfo.activeProcessorCount)
        try await withThrowingTaskGroup(of: Bool.self) { group in
            for index in 0..<stuck {
                group.addTask {
                    index.isMultiple(of: 2) ? try await provider.tryAcquireOnOwnThread("/x") == nil : try await provider.isLockedOnOwnThread("/x")
                }
            }
            // Give every call time to get stuck, then let them go from a task of the pool.
            try await Task.sleep(for: .milliseconds(200))
            for _ in 0..<stuck { provider.gate.signal() }
            var answered = 0
            for try await ok in group where ok { answered += 1 }
            #expect(answered == stuck)
        }
    }
}
