/// The plugins an executable can select by name, one list per kind.
///
/// Built once (`PluginCatalog.builtin` in `DroverPlugins`) and passed down; never global.
public struct PluginCatalog: Sendable {
    public var balancerStrategies: [any BalancerStrategyFactory.Type]
    public var lockProviders: [any LockProviderFactory.Type]
    public var registryStores: [any RegistryStoreFactory.Type]
    public var diagnosticsSinks: [any DiagnosticsSinkFactory.Type]

    public init(balancerStrategies: [any BalancerStrategyFactory.Type] = [],
                lockProviders: [any LockProviderFactory.Type] = [],
                registryStores: [any RegistryStoreFactory.Type] = [],
                diagnosticsSinks: [any DiagnosticsSinkFactory.Type] = []) {
        self.balancerStrategies = balancerStrategies
        self.lockProviders = lockProviders
        self.registryStores = registryStores
        self.diagnosticsSinks = diagnosticsSinks
    }

    /// The `load-balancer` keys that balancer strategies read beyond the kernel's.
    public var loadBalancerPluginKeys: [String] {
        balancerStrategies.flatMap { $0.configurationKeys }
    }

    /// The Swift module of every factory; a runtime plugin's module is its folder under `Plugins/`.
    public var moduleNames: Set<String> {
        let types: [Any.Type] = balancerStrategies + lockProviders + registryStores + diagnosticsSinks
        return Set(types.map { String(reflecting: $0).split(separator: ".").first.map(String.init) ?? "" })
    }

    /// The balancer strategy named by `balancer=`.
    public func balancerStrategy(for config: LoadBalancerConfiguration) throws(ConfigurationError) -> any BalancerStrategyFactory.Type {
        try select(config.balancer, from: balancerStrategies, name: { $0.name }, key: "balancer", kind: "balancer strategy", source: config.source)
    }

    /// The lock provider named by `lock-type=`.
    public func lockProvider(for config: FileLocksConfiguration) throws(ConfigurationError) -> any LockProviderFactory.Type {
        try select(config.lockType, from: lockProviders, name: { $0.name }, key: "lock-type", kind: "lock type", source: config.source)
    }

    /// The registry store named by `provider=`.
    public func registryStore(for config: DatabaseConfiguration) throws(ConfigurationError) -> any RegistryStoreFactory.Type {
        try select(config.provider, from: registryStores, name: { $0.name }, key: "provider", kind: "database provider", source: config.source)
    }

    /// The diagnostics sink named by `diagnostics=`, or nil when diagnostics are off.
    public func diagnosticsSink(for config: LoadBalancerConfiguration) throws(ConfigurationError) -> (any DiagnosticsSinkFactory.Type)? {
        guard let name = config.diagnostics else { return nil }
        return try select(name, from: diagnosticsSinks, name: { $0.name }, key: "diagnostics", kind: "diagnostics sink", source: config.source)
    }

    private func select<Factory>(_ wanted: String, from factories: [Factory], name: (Factory) -> String, key: String,
                                 kind: String, source: ConfigSource) throws(ConfigurationError) -> Factory {
        if let match = factories.first(where: { name($0) == wanted }) { return match }
        let available = factories.map(name)
        let list = available.isEmpty ? "none are built in" : "available: \(available.joined(separator: ", "))"
        throw source.error(key, "unknown \(kind) '\(wanted)' in \(key)=; \(list)")
    }
}
