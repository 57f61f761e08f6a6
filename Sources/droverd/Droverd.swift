import ArgumentParser
import DroverCluster
import DroverKernel
import DroverSessionProtocol
import DroverPlugins
import DroverServer
import DroverVersion
import Foundation
import Logging
import Metrics
import Prometheus
import ServiceLifecycle

/// The Drover node daemon.
@main
struct Droverd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "droverd",
        abstract: "Run a Drover node: the HTTP server, and cluster membership when load-balancer exists.",
        version: DroverVersion.versionLine)

    static func main() async {
        do {
            var command = try parseAsRoot()
            if var async = command as? any AsyncParsableCommand {
                try await async.run()
            } else {
                try command.run()
            }
        } catch {
            // Bad usage exits 2 like bad configuration, not ArgumentParser's 64.
            guard exitCode(for: error) == .validationFailure else { exit(withError: error) }
            FileHandle.standardError.write(Data((fullMessage(for: error) + "\n").utf8))
            Foundation.exit(2)
        }
    }

    /// Raises the soft limit of open files (often 1024) so that `www-max-connections` client
    /// connections, each with its connection to a session, fit, with room for the rest.
    /// - Returns: a warning when the hard limit is too low for that.
    static func raiseOpenFileLimit(for maxConnections: Int) -> String? {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return nil }
        let wanted = rlim_t(2 * maxConnections + 256)
        let target = min(max(limit.rlim_cur, wanted), limit.rlim_max)
        if target > limit.rlim_cur {
            limit.rlim_cur = target
            _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        }
        guard target < wanted else { return nil }
        return "the open-file limit (\(target)) is below what www-max-connections=\(maxConnections) needs (\(wanted)); "
            + "raise LimitNOFILE (systemd) or ulimit -n, or lower www-max-connections in rserver.conf"
    }

    @Option(name: .long, help: "Configuration directory (default: $DROVER_CONFIG_DIR, else /etc/drover).")
    var configDir: String?

    func run() async throws {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = ProcessInfo.processInfo.environment["DROVER_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .info
            return handler
        }
        let logger = Logger(label: "droverd")
        // The node's metrics (GET /metrics); libraries that report through swift-metrics land
        // in the same registry.
        let metrics = NodeMetrics()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: metrics.registry))
        let stops = StopRequests()
        let signals = await stops.install()
        defer { signals.cancel() }
        let setup: NodeSetup
        do {
            setup = try NodeSetup(configDirectory: DroverConfiguration.directory(option: configDir),
                                  catalog: .builtin, createKeyIfMissing: true, logger: logger)
        } catch {
            FileHandle.standardError.write(Data("droverd: \(error)\n".utf8))
            throw ExitCode(2)
        }
        let config = setup.configuration
        let events = EventLog(logger: logger, diagnostics: setup.diagnostics)
        for warning in config.warnings { events.emit(.configurationWarning("\(warning)")) }
        if setup.generatedKey { events.emit(.keyGenerated(file: setup.key.path)) }
        do {
            try FileManager.default.createDirectory(atPath: config.server.dataDirectory, withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o750])
        } catch {
            FileHandle.standardError.write(Data("droverd: cannot create server-data-dir \(config.server.dataDirectory) (\(error.localizedDescription)); create it or set server-data-dir in rserver.conf\n".utf8))
            throw ExitCode(1)
        }

        if let warning = Self.raiseOpenFileLimit(for: config.server.maxConnections) { events.emit(.configurationWarning(warning)) }
        if let warning = AdminDashboard.startWarning(adminGroup: config.server.adminGroup, authNone: config.server.authNone) { events.emit(.configurationWarning(warning)) }

        // Kinds with limits: on cgroup v2 droverd moves into a leaf of its cgroup so that the
        // sessions' cgroups beside it may have the memory and cpu controllers.
        let limits = config.kinds.kinds.map(\.limits)
        let controllers = (limits.contains { $0.memoryBytes != nil } ? [CgroupController.memory] : [])
            + (limits.contains { $0.cpuQuotaMicroseconds != nil } ? [CgroupController.cpu] : [])
        if !controllers.isEmpty {
            for problem in CgroupHost.prepareForSessions(controllers: controllers) { events.emit(.configurationWarning(problem)) }
        }

        // SIGHUP means "reload" (ReloadService); until that service runs it must not kill us.
        signal(SIGHUP, SIG_IGN)
        let node: NodeAssembly
        do {
            node = try await NodeAssembly.make(setup: setup, logger: logger, metrics: metrics)
        } catch let error as NodeAssembly.Failure {
            FileHandle.standardError.write(Data("droverd: \(error.message)\n".utf8))
            throw ExitCode(error.status)
        }
        let services: [ServiceGroupConfiguration.ServiceConfiguration] = node.services.map { .init(service: $0) }
        let group = ServiceGroup(configuration: .init(services: services, logger: logger))
        stops.attach(group)
        events.emit(.nodeStarting(address: "\(config.server.wwwAddress):\(config.server.wwwPort)"))
        do {
            try await group.run()
        } catch {
            FileHandle.standardError.write(Data("droverd: \(error)\n".utf8))
            node.removePidFile()
            throw ExitCode(1)
        }
        node.removePidFile()
        events.emit(.nodeStopped)
    }
}
