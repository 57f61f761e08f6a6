public import DroverKernel
import Foundation
import Synchronization
public import Testing

/// What every lock provider must do, as checks any test target can run against a provider it
/// builds (an in-house provider's own tests included; see README, "Adding an in-house plugin").
///
/// ```swift
/// @Test(arguments: LockConformance.Check.allCases)
/// func conforms(check: LockConformance.Check) async throws {
///     try await LockConformance.run(check, provider: MyLockProvider(...), directory: sharedDirectory)
/// }
/// ```
/// Failures are recorded with Swift Testing's `#expect` in the calling test.
public enum LockConformance {
    public enum Check: String, CaseIterable, Sendable, CustomTestStringConvertible {
        case exactlyOneOfAHundredThreadsAcquires
        case aSecondAcquireFailsUntilRelease
        case aForkedChildsExitDoesNotReleaseTheParentsLock
        case aNonContentionFailureIsAnErrorNotLockHeld

        public var testDescription: String { rawValue }

        /// Whether the check needs locks on real storage (not an in-memory double).
        public var needsStorage: Bool {
            self == .aForkedChildsExitDoesNotReleaseTheParentsLock || self == .aNonContentionFailureIsAnErrorNotLockHeld
        }
    }

    /// Whether `path` is unlocked now or within a second.
    static func freeWithinASecond(_ provider: any LockProvider, _ path: String) async throws -> Bool {
        let deadline = ContinuousClock.now + .seconds(1)
        while try provider.isLocked(path) {
            guard ContinuousClock.now < deadline else { return false }
            try await Task.sleep(for: .milliseconds(5))
        }
        return true
    }

    /// Runs `check` against `provider`, whose locks live in `directory` (the shared storage).
    public static func run(_ check: Check, provider: any LockProvider, directory: String) async throws {
        let path = directory + "/conformance-\(check.rawValue).lock"
        switch check {
        case .exactlyOneOfAHundredThreadsAcquires:
            let winners = Mutex<[any HeldLock]>([])
            let failures = Mutex<[String]>([])
            await raceThreads(100) { _ in
                do {
                    if let lock = try provider.tryAcquire(path) { winners.withLock { $0.append(lock) } }
                } catch {
                    failures.withLock { $0.append("\(error)") }
                }
            }
            #expect(failures.withLock { $0 }.isEmpty)
            #expect(winners.withLock { $0.count } == 1, "exactly one thread holds the lock")
            try winners.withLock { try $0.forEach { try $0.release() } }
        case .aSecondAcquireFailsUntilRelease:
            #expect(try provider.isLocked(path) == false)
            let first = try #require(try provider.tryAcquire(path))
            #expect(try provider.tryAcquire(path) == nil, "a held lock is refused to a second taker")
            #expect(try provider.isLocked(path))
            #expect(try first.refresh())
            try first.release()
            try first.release()
            #expect(try first.refresh() == false, "a released lock cannot be refreshed")
            // An advisory (OFD) lock lives as long as its open file description, and a process
            // another test of this process forks meanwhile holds a reference to it until it execs
            // or exits (a proof run caught one): free within a second, not at once.
            #expect(try await Self.freeWithinASecond(provider, path), "a released lock is free again")
            let second = try #require(try provider.tryAcquire(path))
            try second.release()
        case .aForkedChildsExitDoesNotReleaseTheParentsLock:
            let lock = try #require(try provider.tryAcquire(path))
            let child = fork()
            if child == 0 { _exit(0) }
            var status: Int32 = 0
            waitpid(child, &status, 0)
            #expect(try provider.isLocked(path))
            #expect(try provider.tryAcquire(path) == nil)
            #expect(try lock.refresh())
            try lock.release()
        case .aNonContentionFailureIsAnErrorNotLockHeld:
            let tooLong = directory + "/" + String(repeating: "x", count: 300)
            #expect(throws: LockError.self) { try provider.tryAcquire(tooLong) }
            #expect(throws: LockError.self) { try provider.tryAcquire(directory + "/no/such/dir/lock") }
        }
    }
}

/// Starts `count` threads that call `body` at the same instant; returns when all are done. The
/// threads sleep on a barrier until every one is ready, so waiting costs no CPU; the waiting is
/// done on a thread of its own, never on the cooperative pool the other suites need.
public func raceThreads(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) async {
    _ = try? await onOwnThread { raceThreadsBlocking(count, body) }
}

private func raceThreadsBlocking(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) {
    let ready = DispatchSemaphore(value: 0)
    let go = DispatchSemaphore(value: 0)
    let finished = DispatchGroup()
    for index in 0..<count {
        finished.enter()
        let thread = Thread {
            ready.signal()
            go.wait()
            body(index)
            finished.leave()
        }
        thread.start()
    }
    for _ in 0..<count { ready.wait() }
    for _ in 0..<count { go.signal() }
    finished.wait()
}
