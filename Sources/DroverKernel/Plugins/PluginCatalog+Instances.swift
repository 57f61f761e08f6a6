/// Building the plugins a configuration selects: the one place each kind is instantiated, by
/// the daemon at start and at reload, by the command line and by the session guard.
extension PluginCatalog {
    /// The registry store `provider=` in `database.conf` selects.
    public func makeRegistryStore(_ configuration: DatabaseConfiguration, context: PluginContext) throws -> any RegistryStore {
        try registryStore(for: configuration).make(config: configuration, context: context)
    }

    /// The lock provider `lock-type=` in `file-locks` selects.
    public func makeLockProvider(_ configuration: FileLocksConfiguration, context: PluginContext) throws -> any LockProvider {
        try lockProvider(for: configuration).make(config: configuration, context: context)
    }

    /// The balancer strategy `balancer=` in `load-balancer` selects.
    public func makeBalancer(_ configuration: LoadBalancerConfiguration, context: PluginContext) throws -> any BalancerStrategy {
        try balancerStrategy(for: configuration).make(config: configuration, context: context)
    }

    /// The diagnostics `diagnostics=` in `load-balancer` selects (``Diagnostics/off`` without).
    /// - Throws: ``ConfigurationError`` naming the key, for an unknown sink or one that cannot
    ///   start (say, a file it cannot write).
    public func makeDiagnostics(_ configuration: LoadBalancerConfiguration, context: PluginContext) throws(ConfigurationError) -> Diagnostics {
        guard let factory = try diagnosticsSink(for: configuration) else { return .off }
        do {
            return Diagnostics(sink: try factory.make(config: configuration, context: context))
        } catch let error as ConfigurationError {
            throw error
        } catch {
            throw configuration.source.error("diagnostics", "cannot start diagnostics sink '\(factory.name)': \(error)")
        }
    }
}
