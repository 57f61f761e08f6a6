import ArgumentParser
import DroverCluster
import DroverKernel
import DroverSessionProtocol
import DroverPlugins
import Foundation
import Logging
import DroverVersion

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
        // Session kinds this node can run; one it cannot is not offered (a warning, not a failure).
        if config.kinds.kinds.isEmpty { print("warn  no session kind: add kinds/NAME.conf or session-command to rserver.conf") }
        for availability in SessionKindCheck.check(config) {
            let notes = availability.notes.isEmpty ? "" : " (" + availability.notes.joined(separator: "; ") + ")"
            if availability.offered {
                pass("session kind \(availability.kind)\(availability.kind == config.kinds.defaultKind ? ", the default" : "")\(notes)")
            } else {
                print("warn  session kind \(availability.kind) is not offered by this node\(notes)")
            }
        }
        reportCgroups(config)
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
        if let lb = config.loadBalancer, config.server.sslEnabled, lb.verifySSLCerts {
            guard let address = NodeAddressResolver.resolve(wwwHostName: lb.wwwHostName, wwwAddress: config.server.wwwAddress,
                                                            wwwPort: config.server.wwwPort) else {
                print("FAIL  address: this node's address cannot be determined; set www-host-name in load-balancer")
                throw ExitCode(2)
            }
            do {
                if let problem = try CertificateSelfCheck.problem(config, address: address) {
                    print("FAIL  certificate: \(config.server.sslCertificate ?? "?") would be refused by the other nodes, which check it "
                        + "against \(CertificateSelfCheck.checkedName(address)): \(problem)")
                    throw ExitCode(2)
                }
                pass("certificate \(config.server.sslCertificate ?? "?") is valid for \(CertificateSelfCheck.checkedName(address)), as the other nodes check it")
            } catch let exit as ExitCode {
                throw exit
            } catch {
                throw failed("certificate", error)
            }
        }
        guard checkSessionOrigins(config) else { throw ExitCode(2) }
        if config.isClustered, await !checkCluster(config) {
            throw ExitCode(2)
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

    /// Which cgroup controllers this node's sessions can use, and what happens to the kinds
    /// whose limits need one it lacks: they are not offered (placed elsewhere), never run
    /// unlimited. As seen from this command's own cgroup; droverd's (its unit's) is alike when
    /// both run as root on the same host.
    func reportCgroups(_ config: DroverConfiguration) {
        let host = CgroupHost.current()
        if let unified = host.sessionsParentV2() {
            print("ok    cgroups: each session in a cgroup v2 folder below \(unified) (every process ended together)")
        } else if let freezer = host.v1Hierarchy("freezer") {
            print("ok    cgroups: each session in a cgroup v1 freezer folder below \(freezer.ownFolder)/\(CgroupHost.sessionsFolder) (every process ended together)")
        } else {
            print("warn  cgroups: none mounted; a session's processes are held by their process group only, which one that calls setsid leaves")
        }
        for controller in CgroupController.allCases {
            let key = controller == .memory ? "memory-limit" : "cpu-limit"
            let limited = config.kinds.kinds.filter { $0.limits.controllers.contains(controller) }.map(\.name)
            let support = host.support(controller)
            let named = limited.isEmpty ? "no kind sets \(key)" : "kinds with \(key): \(limited.joined(separator: ", "))"
            if support.isUsable {
                print("ok    cgroup controller \(controller.rawValue): \(support); \(key) is enforced (\(named))")
            } else {
                print("warn  cgroup controller \(controller.rawValue) \(support); a kind with \(key) is not offered by this node, never run unlimited (\(named))")
            }
        }
    }

    /// Which database server answered, whether there is another to fail over to, and whether
    /// a failover can lose commits (README, "Database high availability").
    func reportServer(_ server: RegistryServerReport, targetSessionAttributes: String?) {
        if server.named.count > 1 {
            print("ok    registry server: \(server.answered) answered as primary, of \(server.named.count) named (\(server.named.joined(separator: ", "))); "
                + "target_session_attrs=\(targetSessionAttributes ?? "any")")
        } else {
            print("ok    registry server: \(server.answered), the one host named (no standby to fail over to; README, Database high availability)")
        }
        if server.synchronousStandbyNames.isEmpty {
            let line = "registry: synchronous replication is off (synchronous_standby_names is empty)"
            if server.named.count > 1 {
                print("warn  \(line): a failover can lose the last commits; set synchronous_standby_names = 'ANY 1 (standby1, standby2)' on the primary (README, Database high availability)")
            } else {
                print("ok    \(line)")
            }
        } else {
            let connected = server.synchronousStandbys > 0 ? "\(server.synchronousStandbys) synchronous standby(s) connected"
                : "no synchronous standby seen (none connected, or this role lacks pg_monitor to see them)"
            print("ok    registry: synchronous replication is on (synchronous_standby_names = '\(server.synchronousStandbyNames)'; \(connected))")
        }
    }

    /// Compares this node's configuration with the cluster's rows; differences are warnings,
    /// what would make the cluster refuse the node (another version; a SQLite registry that
    /// another machine's nodes use) fails.
    /// - Returns: false when a check failed.
    func checkCluster(_ config: DroverConfiguration) async -> Bool {
        let nodes: [NodeRecord]
        let security: String
        let databaseNow: Date
        let server: RegistryServerReport?
        do {
            (nodes, security, databaseNow, server) = try await RegistryAccess.using(options) {
                (try await $0.store.nodes(), try await $0.store.connectionSecurity(), try await $0.store.now(), try await $0.store.serverReport())
            }
        } catch {
            print("warn  registry: cannot read the node list (\(error))")
            return true
        }
        print("ok    registry reachable (\(nodes.count) node rows); connection \(security)")
        if let server { reportServer(server, targetSessionAttributes: config.registry.targetSessionAttributes) }
        let skew = Date().timeIntervalSince(databaseNow)
        if abs(skew) > 1 {
            print("warn  this machine's clock is \(String(format: "%.1f", skew)) s away from the database's; synchronise clocks (e.g. chrony): "
                + "node-to-node calls more than 60 s off are refused, and cross-node locks depend on the clocks")
        }
        // Online rows of other nodes than this one (its own row may be Online if it runs).
        let own = try? String(contentsOfFile: config.nodeIDFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        let online = nodes.filter { $0.status == .online && String($0.id) != own }
        var passed = true
        if let refusal = OneMachineRegistry(config.registry)?.refusal(online: online) {
            print("FAIL  registry: \(refusal)")
            passed = false
        }
        if let other = online.first(where: { !DroverVersion.acceptsPeer(protocol: $0.protocolVersion) }) {
            print("FAIL  version: \(ClusterMembership.protocolRefusal(other: other))")
            passed = false
        } else if let other = online.first(where: { $0.version != DroverVersion.release }) {
            print("warn  version: the cluster mixes releases (this node \(DroverVersion.release), \(other.host):\(other.port) \(other.version)); "
                + "within one protocol version that is a rolling upgrade in progress: finish it (README, Upgrading)")
        }
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
        return passed
    }

    /// Where sessions are served: at their own origins (`www-session-domain`), with a certificate
    /// that names them over https; or a warning that sessions share Drover's origin where users
    /// sign in with PAM (README, "Session origins").
    /// - Returns: false when the certificate fails.
    func checkSessionOrigins(_ config: DroverConfiguration) -> Bool {
        let server = config.server
        guard let domain = server.sessionDomain else {
            if let warning = server.sharedOriginWarning { print("warn  " + warning) }
            return true
        }
        print("ok    session origins: each session at <id>.\(domain), Drover's own pages at \(server.mainHost ?? "?")")
        guard server.sslEnabled, let certificate = server.sslSessionCertificate ?? server.sslCertificate else { return true }
        let probe = String(repeating: "0", count: 32) + "." + domain
        switch Crypto.certificate(atPath: certificate, matchesHost: probe) {
        case true?:
            print("ok    certificate \(certificate) is valid for the sessions' origins (*.\(domain))")
            return true
        case false?:
            print("FAIL  certificate \(certificate) does not name the sessions' origins: it needs *.\(domain) (ssl-session-certificate)")
        case nil:
            print("FAIL  certificate \(certificate) cannot be read as PEM")
        }
        return false
    }
}
