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

    /// Opens the configured store, runs `body` with it, and closes it whatever `body` does.
    /// - Parameter shared: open `database.conf`'s store even while load balancing is off
    ///   (``DroverConfiguration/registry`` is the node's own SQLite store then).
    /// - Throws: ``CommandFailure`` with status 2 (bad configuration) or 1 (database
    ///   unreachable), or what `body` throws.
    static func using<T>(_ options: ConfigOptions, shared: Bool = false, migrating: Bool = true,
                         _ body: (RegistryAccess) async throws -> T) async throws -> T {
        let access = try await open(options, shared: shared, migrating: migrating)
        do {
            let result = try await body(access)
            await access.store.close()
            return result
        } catch {
            await access.store.close()
            throw error
        }
    }

    /// - Parameter migrating: runs the schema's pending expansions first (as a node's start
    ///   does); `migrate-db --status` looks without changing anything.
    private static func open(_ options: ConfigOptions, shared: Bool, migrating: Bool) async throws -> RegistryAccess {
        let configuration = try options.load()
        let key: SecureCookieKey?
        do {
            key = FileManager.default.fileExists(atPath: configuration.secureCookieKeyPath)
                ? try SecureCookieKey.load(from: configuration.secureCookieKeyPath) : nil
        } catch {
            throw CommandFailure("\(error)", status: 2)
        }
        let store: any RegistryStore
        do {
            let context = PluginContext(configuration, key: key, logger: Logger(label: "drover"))
            store = try PluginCatalog.builtin.makeRegistryStore(shared ? configuration.database : configuration.registry, context: context)
        } catch {
            throw CommandFailure("\(error)", status: 2)
        }
        do {
            if migrating { try await store.migrate() }
        } catch {
            await store.close()
            throw CommandFailure("\(error)", status: 1)
        }
        return RegistryAccess(configuration: configuration, key: key, store: store)
    }
}
