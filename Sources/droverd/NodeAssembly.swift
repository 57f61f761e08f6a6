import DroverCluster
import DroverKernel
import DroverServer
import Foundation
import Logging
import ServiceLifecycle

/// Builds a node from its checked setup: the registry store, the address, cluster membership
/// and the HTTP server, in the order DESIGN.md section 5 gives.
struct NodeAssembly {
    struct Failure: Error {
        var message: String
        var status: Int32
    }

    let services: [any Service]
    let pidFile: String?

    static func make(setup: NodeSetup, logger: Logger) async throws -> NodeAssembly {
        let config = setup.configuration
        var membership: ClusterMembership?
        var store: (any RegistryStore)?
        if config.isClustered {
            let context = PluginContext(configDirectory: config.directory, dataDirectory: config.server.dataDirectory,
                                        secureCookieKey: setup.key, logger: logger)
            do {
                store = try setup.catalog.registryStore(for: config.database).make(config: config.database, context: context)
            } catch {
                throw Failure(message: "\(error)", status: 2)
            }
            let lb = config.effectiveLoadBalancer
            guard let address = NodeAddressResolver.resolve(wwwHostName: lb.wwwHostName, wwwAddress: config.server.wwwAddress,
                                                            wwwPort: config.server.wwwPort) else {
                throw Failure(message: "cannot determine this node's address by any strategy; set www-host-name in load-balancer", status: 1)
            }
            do {
                try await store!.migrate()
                membership = ClusterMembership(runtime: try NodeRuntime(setup: setup, store: store!, address: address, logger: logger))
            } catch {
                throw Failure(message: "\(error)", status: 1)
            }
        }

        let server: HTTPServer
        do {
            let tls = try config.server.sslEnabled
                ? HTTPServer.tlsContext(certificate: config.server.sslCertificate!, key: config.server.sslCertificateKey!) : nil
            server = try await HTTPServer(host: config.server.wwwAddress, port: config.server.wwwPort,
                                          responder: NodeResponder(membership: membership), tls: tls, logger: logger)
        } catch {
            throw Failure(message: "\(error)", status: 1)
        }

        guard let membership else {
            return NodeAssembly(services: [server], pidFile: writePidFile(config))
        }
        do {
            _ = try await membership.join()
        } catch let error as MembershipError {
            throw Failure(message: error.description, status: error.exitStatus)
        } catch {
            throw Failure(message: "cannot join the cluster: \(error)", status: 1)
        }
        return NodeAssembly(services: [HeartbeatService(membership: membership), ReloadService(membership: membership), server],
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
