import DroverCluster
import DroverKernel
import DroverServer
import Foundation
import Logging
import ServiceLifecycle

/// Builds a node from its checked setup: the registry store, the address, cluster membership
/// and the HTTP server, in the order docs/ARCHITECTURE.md describes.
struct NodeAssembly {
    struct Failure: Error {
        var message: String
        var status: Int32
    }

    let services: [any Service]
    let pidFile: String?

    static func make(setup: NodeSetup, logger: Logger, metrics: NodeMetrics) async throws -> NodeAssembly {
        let config = setup.configuration
        let context = PluginContext(config, key: setup.key, logger: logger)
        let store: any RegistryStore
        do {
            store = try setup.catalog.makeRegistryStore(config.registry, context: context)
            // The session guards hold the locks; building the provider here refuses a bad
            // file-locks at start instead of at the first session.
            _ = try setup.catalog.makeLockProvider(config.fileLocks, context: context)
        } catch {
            throw Failure(message: "\(error)", status: 2)
        }
        let lb = config.effectiveLoadBalancer
        guard let address = NodeAddressResolver.resolve(wwwHostName: lb.wwwHostName, wwwAddress: config.server.wwwAddress,
                                                        wwwPort: config.server.wwwPort) else {
            throw Failure(message: "cannot determine this node's address by any strategy; set www-host-name in load-balancer", status: 1)
        }
        let membership: ClusterMembership
        do {
            try await store.migrate()
            membership = ClusterMembership(runtime: try NodeRuntime(setup: setup, store: store, address: address, logger: logger,
                                                                    metrics: metrics))
        } catch {
            throw Failure(message: "\(error)", status: 1)
        }
        let sessions = SessionManager(runtime: membership.runtime)
        for availability in membership.runtime.kindAvailability where !availability.offered || !availability.notes.isEmpty {
            membership.runtime.events.emit(.configurationWarning("session kind \(availability)"))
        }
        if config.server.authNone {
            membership.runtime.events.emit(.authNoneInForce)
        }
        let server: HTTPServer
        do {
            server = try await HTTPServer.node(membership: membership, sessions: sessions, logger: logger)
        } catch {
            throw Failure(message: "\(error)", status: 1)
        }
        let node: NodeRecord
        do {
            node = try await membership.join()
        } catch let error as MembershipError {
            throw Failure(message: error.description, status: error.exitStatus)
        } catch {
            throw Failure(message: "cannot join the cluster: \(error)", status: 1)
        }
        try? Data("\(node.id)\n".utf8).write(to: URL(fileURLWithPath: config.nodeIDFile), options: .atomic)
        await RowRecovery(sessions: sessions).releaseRowsOfPreviousRun()
        // Stopped in reverse (SIGTERM): leave placement first (offline mode, peers told, no new
        // start), then suspend the sessions, then quiesce the HTTP connections (in-flight
        // requests finish, idle keep-alive connections close), and go Offline last.
        return NodeAssembly(services: [HeartbeatService(membership: membership), FailureDetectorService(membership: membership),
                                       ReloadService(membership: membership), server,
                                       SessionService(sessions: sessions), LeavePlacementService(membership: membership)],
                            pidFile: writePidFile(config))
    }

    /// Records our pid in `server-data-dir`, for `drover reload`, `offline` and `online`.
    static func writePidFile(_ config: DroverConfiguration) -> String? {
        let path = config.pidFile
        return (try? Data("\(getpid())\n".utf8).write(to: URL(fileURLWithPath: path), options: .atomic)) == nil ? nil : path
    }

    func removePidFile() {
        if let pidFile { unlink(pidFile) }
    }
}
