import Foundation
public import Logging

/// The checked start-up state both executables share: the configuration, the key, and the
/// plugins selected by name. Building it touches nothing but the configuration directory (and,
/// for a single node without a key, writes a fresh key).
public struct NodeSetup: Sendable {
    public let configuration: DroverConfiguration
    public let key: SecureCookieKey
    /// True when the key did not exist and was generated (single-node only).
    public let generatedKey: Bool
    public let diagnostics: Diagnostics
    public let catalog: PluginCatalog

    /// Loads and checks everything.
    /// - Parameters:
    ///   - createKeyIfMissing: a single node (no `load-balancer`) generates its key on first run;
    ///     a cluster node never does, since every node must share one key.
    /// - Throws: ``ConfigurationError`` for anything an operator must fix.
    public init(configDirectory: String, catalog: PluginCatalog, createKeyIfMissing: Bool, logger: Logger) throws(ConfigurationError) {
        let configuration = try DroverConfiguration.load(directory: configDirectory, pluginKeys: catalog.loadBalancerPluginKeys)
        let keyPath = configuration.secureCookieKeyPath
        var generated = false
        if createKeyIfMissing, !configuration.isClustered, !FileManager.default.fileExists(atPath: keyPath) {
            key = try SecureCookieKey.generate(at: keyPath, force: false)
            generated = true
        } else {
            key = try SecureCookieKey.load(from: keyPath)
        }
        let context = PluginContext(configuration, key: key, logger: logger)
        let lb = configuration.effectiveLoadBalancer
        _ = try catalog.balancerStrategy(for: lb)
        diagnostics = try catalog.makeDiagnostics(lb, context: context)
        self.configuration = configuration
        self.generatedKey = generated
        self.catalog = catalog
    }
}
