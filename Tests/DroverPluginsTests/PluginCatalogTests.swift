import DroverKernel
import DroverPlugins
import Foundation
import Logging
import Testing

@Suite struct PluginCatalogTests {
    let catalog = PluginCatalog.builtin

    @Test func everyFolderUnderPluginsIsRegistered() async throws {
        let plugins = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../Plugins").standardizedFileURL.path
        let folders = try FileManager.default.contentsOfDirectory(atPath: plugins).filter { name in
            var isDirectory: ObjCBool = false
            return FileManager.default.fileExists(atPath: plugins + "/" + name, isDirectory: &isDirectory) && isDirectory.boolValue
        }
        #expect(!folders.isEmpty)
        let unregistered = Set(folders).subtracting(catalog.moduleNames)
        #expect(unregistered.isEmpty, "folders under Plugins/ with no factory in PluginCatalog.builtin: \(unregistered.sorted())")
    }

    @Test func namesAreUniquePerKind() {
        for names in [catalog.balancerStrategies.map { $0.name }, catalog.lockProviders.map { $0.name },
                      catalog.registryStores.map { $0.name }, catalog.diagnosticsSinks.map { $0.name }] {
            #expect(Set(names).count == names.count)
        }
    }

    @Test func defaultsSelectBuiltinPlugins() async throws {
        let lb = LoadBalancerConfiguration()
        #expect(try catalog.balancerStrategy(for: lb).name == "sessions")
        #expect(try catalog.diagnosticsSink(for: lb) == nil)
    }

    @Test func diagnosticsNamesSelectTheirSinks() async throws {
        var lb = LoadBalancerConfiguration()
        lb.diagnostics = "tmp"
        #expect(try catalog.diagnosticsSink(for: lb)?.name == "tmp")
        lb.diagnostics = "stderr"
        #expect(try catalog.diagnosticsSink(for: lb)?.name == "stderr")
    }

    @Test func unknownNamesFailWithTheListOfAvailableNames() async throws {
        let lb = try LoadBalancerConfiguration(parsing: "balancer=fastest\ndiagnostics=syslog\n", path: "/c/load-balancer", baseDirectory: "/c")
        #expect(throws: ConfigurationError(file: "/c/load-balancer", line: 1,
            "unknown balancer strategy 'fastest' in balancer=; available: \(catalog.balancerStrategies.map { $0.name }.joined(separator: ", "))")) {
            try catalog.balancerStrategy(for: lb)
        }
        #expect(throws: ConfigurationError(file: "/c/load-balancer", line: 2, "unknown diagnostics sink 'syslog' in diagnostics=; available: tmp, stderr")) {
            try catalog.diagnosticsSink(for: lb)
        }
        let locks = try FileLocksConfiguration(parsing: "lock-type=flock\n", path: "/c/file-locks", baseDirectory: "/c")
        #expect(throws: ConfigurationError.self) { try catalog.lockProvider(for: locks) }
        let db = try DatabaseConfiguration(parsing: "provider=mysql\n", path: "/c/database.conf", baseDirectory: "/c", defaultDirectory: "/d")
        #expect(throws: ConfigurationError.self) { try catalog.registryStore(for: db) }
    }

    @Test func anEmptyCatalogSaysNoneAreBuiltIn() {
        #expect(throws: ConfigurationError(file: "load-balancer", line: nil, "unknown balancer strategy 'sessions' in balancer=; none are built in")) {
            try PluginCatalog().balancerStrategy(for: LoadBalancerConfiguration())
        }
    }
}
