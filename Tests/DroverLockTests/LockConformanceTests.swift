import DroverKernel
import DroverPlugins
import DroverTesting
import Foundation
import Testing

/// Every lock provider of the catalog (and the in-memory double) through the conformance suite
/// in `DroverTesting`, plus the check that needs separate processes.
@Suite struct LockConformanceTests {
    /// Every provider of the catalog by name, and the in-memory double the other suites use.
    static var providers: [String] { PluginCatalog.builtin.lockProviders.map { $0.name } + [LockKind.memory.rawValue] }

    /// README promises that every lock provider of the catalog runs through the suite: the
    /// arguments come from the catalog, and the harness must be able to build each of them.
    @Test func everyCatalogProviderIsCovered() throws {
        for name in Self.providers {
            #expect(LockKind(rawValue: name) != nil, "the lock harness cannot build '\(name)': add a LockKind for it")
        }
    }

    @Test(arguments: providers, LockConformance.Check.allCases)
    func conforms(provider: String, check: LockConformance.Check) async throws {
        let harness = try LockHarness(try #require(LockKind(rawValue: provider)))
        guard harness.kind != .memory || !check.needsStorage else { return }
        try await LockConformance.run(check, provider: harness.provider, directory: harness.config.url("shared"))
    }

    @Test(arguments: LockKind.onDisk)
    func exactlyOneOfTwentyProcessesAcquires(kind: LockKind) async throws {
        let harness = try LockHarness(kind)
        let outcomes = try await harness.race(20)
        #expect(outcomes.filter { $0 == "acquired" }.count == 1, "\(outcomes)")
        #expect(outcomes.filter { $0 == "busy" }.count == 19)
    }
}
