public import DroverKernel
import BalancerCustom
import BalancerRandomTwo
import BalancerSessions
import BalancerSystemLoad
import BalancerUserHash
import DiagnosticsStderr
import DiagnosticsTmp
import DroverLockPlugins
import RegistryPostgres
import RegistrySQLite

extension PluginCatalog {
    /// Every plugin built into Drover: the one list both executables select from.
    ///
    /// An in-house plugin is added here, with its folder under `Plugins/` and its name in
    /// `Package.swift`'s `runtimePlugins` (README, "Adding a plugin").
    public static let builtin = PluginCatalog(
        balancerStrategies: [
            SessionsBalancerStrategyFactory.self,
            SystemLoadBalancerStrategyFactory.self,
            UserHashBalancerStrategyFactory.self,
            CustomBalancerStrategyFactory.self,
            RandomTwoBalancerStrategyFactory.self,
        ],
        lockProviders: PluginCatalog.builtinLockProviders,
        registryStores: [
            SQLiteRegistryStoreFactory.self,
            PostgresRegistryStoreFactory.self,
        ],
        diagnosticsSinks: [
            TmpDiagnosticsSinkFactory.self,
            StderrDiagnosticsSinkFactory.self,
        ]
    )
}
