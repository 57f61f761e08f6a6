import DroverKernel
import DroverPlugins
import DroverTesting
import Foundation
import Synchronization
import Testing

/// What every lock provider must do.
@Suite struct LockConformanceTests {
    /// README promises that every lock provider of the catalog runs through this suite.
    @Test func everyCatalogProviderIsCovered() {
        let catalog = Set(PluginCatalog.builtin.lockProviders.map { $0.name })
        #expect(catalog == Set(LockKind.allCases.filter { $0 != .memory }.map(\.rawValue)), "add a LockKind for each new provider")
    }

    @Test(arguments: LockKind.allCases)
    func exactlyOneOfAHundredThreadsAcquires(kind: LockKind) async throws {
        let harness = try LockHarness(kind)
        let path = harness.path()
        let winners = Mutex<[any HeldLock]>([])
        let failures = Mutex<[String]>([])
        await raceThreads(100) { _ in
            do {
                if let lock = try harness.provider.tryAcquire(path) { winners.withLock { $0.append(lock) } }
            } catch {
                failures.withLock { $0.append("\(error)") }
            }
        }
        #expect(failures.withLock { $0 }.isEmpty)
        #expect(winners.withLock { $0.count } == 1)
        try winners.withLock { try $0.forEach { try $0.release() } }
    }

    @Test(arguments: LockKind.allCases)
    func aSecondAcquireInTheSameProcessFailsUntilRelease(kind: LockKind) async throws {
        let harness = try LockHarness(kind)
        let path = harness.path()
        #expect(try harness.provider.isLocked(path) == false)
        let first = try #require(try harness.provider.tryAcquire(path))
        #expect(try harness.provider.tryAcquire(path) == nil)
        #expect(try harness.provider.isLocked(path))
        #expect(try first.refresh())
        try first.release()
        try first.release()
        #expect(try first.refresh() == false)
        #expect(try harness.provider.isLocked(path) == false)
        let second = try #require(try harness.provider.tryAcquire(path))
        try second.release()
    }

    @Test(arguments: LockKind.onDisk)
    func exactlyOneOfTwentyProcessesAcquires(kind: LockKind) async throws {
        let harness = try LockHarness(kind)
        let outcomes = try await harness.race(20)
        #expect(outcomes.filter { $0 == "acquired" }.count == 1, "\(outcomes)")
        #expect(outcomes.filter { $0 == "busy" }.count == 19)
    }

    @Test(arguments: LockKind.onDisk)
    func aForkedChildsExitDoesNotReleaseTheParentsLock(kind: LockKind) async throws {
        let harness = try LockHarness(kind)
        let path = harness.path()
        let lock = try #require(try harness.provider.tryAcquire(path))
        let child = fork()
        if child == 0 { _exit(0) }
        var status: Int32 = 0
        waitpid(child, &status, 0)
        #expect(try harness.provider.isLocked(path))
        #expect(try harness.provider.tryAcquire(path) == nil)
        #expect(try lock.refresh())
        try lock.release()
    }

    @Test(arguments: LockKind.onDisk)
    func aNonContentionFailureIsAnErrorNotLockHeld(kind: LockKind) async throws {
        let harness = try LockHarness(kind)
        let tooLong = harness.path(String(repeating: "x", count: 300))
        #expect(throws: LockError.self) { try harness.provider.tryAcquire(tooLong) }
        #expect(throws: LockError.self) { try harness.provider.tryAcquire(harness.config.url("no/such/dir/lock")) }
    }
}
