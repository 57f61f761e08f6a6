import DroverKernel
import DroverPlugins
import Foundation
import Logging

/// What commands that read the registry directly need: the configuration, the key (when there
/// is one) and the configured store, migrated.
struct RegistryAccess {
    let configuration: DroverConfiguration
    let key: SecureCookieKey?
    let store: any RegistryStore

    /// Opens the configured store, or exits 2 (bad configuration) / 1 (database unreachable).
    static func open(_ options: ConfigOptions) async -> RegistryAccess {
        let configuration = options.load()
        let key: SecureCookieKey?
        do {
            key = FileManager.default.fileExists(atPath: configuration.secureCookieKeyPath)
                ? try SecureCookieKey.load(from: configuration.secureCookieKeyPath) : nil
        } catch {
            fail("\(error)", status: 2)
        }
        let store: any RegistryStore
        do {
            let context = PluginContext(configuration, key: key, logger: Logger(label: "drover"))
            store = try PluginCatalog.builtin.registryStore(for: configuration.database).make(config: configuration.database, context: context)
        } catch {
            fail("\(error)", status: 2)
        }
        do {
            try await store.migrate()
        } catch {
            fail("\(error)", status: 1)
        }
        return RegistryAccess(configuration: configuration, key: key, store: store)
    }
}
