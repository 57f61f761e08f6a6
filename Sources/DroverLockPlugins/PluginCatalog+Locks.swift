public import DroverKernel
import LockAdvisory
import LockLinkBased

extension PluginCatalog {
    /// The lock providers built into Drover: part of ``builtin`` (in `DroverPlugins`), and all
    /// that `drover-session-guard` links, so the guard carries no registry driver (libpq,
    /// SQLite) or balancer it never uses.
    public static let builtinLockProviders: [any LockProviderFactory.Type] = [
        LinkBasedLockProviderFactory.self,
        AdvisoryLockProviderFactory.self,
    ]
}
