import ArgumentParser
import DroverKernel
import DroverPlugins
import Foundation
import Logging

struct Verify: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check every configuration file, the secure cookie key and the selected plugins.",
        discussion: "Prints one line per check; exits 2 at the first check that fails.")

    @OptionGroup var options: ConfigOptions

    func run() async throws {
        func pass(_ what: String) { print("ok    \(what)") }
        /// Prints the FAIL line; the command then exits 2.
        func failed(_ what: String, _ error: any Error) -> ExitCode {
            print("FAIL  \(what): \(error)")
            return ExitCode(2)
        }
        let catalog = PluginCatalog.builtin
        let config: DroverConfiguration
        do {
            config = try DroverConfiguration.load(directory: options.directory, pluginKeys: catalog.loadBalancerPluginKeys)
        } catch {
            throw failed("configuration", error)
        }
        pass("configuration directory \(config.directory)")
        for name in [ServerConfiguration.fileName, LoadBalancerConfiguration.fileName, FileLocksConfiguration.fileName, DatabaseConfiguration.fileName] {
            let exists = FileManager.default.fileExists(atPath: config.directory + "/" + name)
            let standalone = " (absent: load balancing is off; this node runs alone, its registry \(config.registry.directory)/\(config.registry.database).sqlite)"
            let note = exists ? "" : (name == LoadBalancerConfiguration.fileName ? standalone : " (absent: defaults)")
            pass("\(name)\(note)")
        }
        for warning in config.warnings { print("warn  \(warning)") }
        let key: SecureCookieKey?
        if !config.isClustered, !FileManager.default.fileExists(atPath: config.secureCookieKeyPath) {
            // A single node makes its own key at its first start; nothing to fix.
            key = nil
            pass("secure cookie key \(config.secureCookieKeyPath) (absent: droverd generates it at its first start, mode 0600)")
        } else {
            do {
                let loaded = try SecureCookieKey.load(from: config.secureCookieKeyPath)
                key = loaded
                pass("secure cookie key \(loaded.path) (mode 0600, cluster hash \(loaded.clusterHash.prefix(12))…)")
            } catch {
                throw failed("secure cookie key", error)
            }
        }
        let lb = config.effectiveLoadBalancer
        do {
            pass("balancer strategy '\(try catalog.balancerStrategy(for: lb).name)'")
            pass("registry store '\(try catalog.registryStore(for: config.registry).name)'")
            if let sink = try catalog.diagnosticsSink(for: lb) {
                pass("diagnostics sink '\(sink.name)'")
            } else {
                pass("diagnostics off")
            }
        } catch {
            throw failed("plugins", error)
        }
        do {
            let locks = try catalog.lockProvider(for: config.fileLocks)
            pass("lock type '\(locks.name)' (refresh \(config.fileLocks.refreshRate) s, timeout \(config.fileLocks.timeoutInterval) s)")
        } catch {
            throw failed("plugins", error)
        }
        if config.isClustered {
            await checkCluster(config)
        }
        if case .encrypted = config.database.password {
            do {
                _ = try config.database.password?.reveal(key: key, source: config.database.source)
                pass("database password decrypts with this key")
            } catch {
                throw failed("database password", error)
            }
        }
    }

    /// Compares this node's configuration with the cluster's rows; differences are warnings.
    func checkCluster(_ config: DroverConfiguration) async {
        let nodes: [NodeRecord]
        do {
            nodes = try await RegistryAccess.using(options) { try await $0.store.nodes() }
        } catch {
            print("warn  registry: cannot read the node list (\(error))")
            return
        }
        print("ok    registry reachable (\(nodes.count) node rows)")
        if let majority = nodes.majorityConfigHash, majority != config.fingerprint {
            print("warn  this node's configuration (\(config.fingerprint)) differs from most nodes' (\(majority)); keep the configuration directory identical on every node")
        }
        let outliers = nodes.consistencyOutliers()
        for node in nodes where outliers.configuration.contains(node.id) {
            print("warn  node \(node.id) (\(node.host):\(node.port)) has a configuration that differs from most nodes'")
        }
        for node in nodes where outliers.launcher.contains(node.id) {
            print("warn  node \(node.id) (\(node.host):\(node.port)) has launcher keys that differ from most nodes'")
        }
    }
}
