import Foundation

/// The PostgreSQL server that `scripts/test.sh` starts, described by `DROVER_TEST_PG_*`
/// variables. Tests that need it fail (never skip) under `CI=true` when it is absent.
public struct PostgresTestServer: Sendable {
    public var host: String
    public var port: Int
    public var user: String
    /// The server's `bin` folder (createdb, psql, pg_ctl).
    public var binDirectory: String
    public var dataDirectory: String
    /// The OS user to run pg_ctl as (`postgres` when tests run as root), or nil for ourselves.
    public var runAs: String?
    /// The network namespace the server runs in (a ``NetworkLab`` host), nil for the machine's.
    public var networkNamespace: String?
    /// Where createdb and psql reach the server when not at `host`: its Unix socket folder,
    /// for a server in a namespace the tests' own cannot reach.
    public var adminHost: String?
    /// The CA certificate the server's TLS certificate (for 127.0.0.1 and localhost) is signed
    /// by, when scripts/test.sh started it with TLS (`DROVER_TEST_PG_CA`).
    public var certificateAuthority: String? = nil
    /// Variables the server's programs run with (`VAR=value`), as a libfaketime preload.
    public var environment: [String] = []

    /// The server from the environment, or nil when the test command did not start one.
    public static var current: PostgresTestServer? {
        let env = ProcessInfo.processInfo.environment
        guard let host = env["DROVER_TEST_PG_HOST"], let port = env["DROVER_TEST_PG_PORT"].flatMap(Int.init),
              let user = env["DROVER_TEST_PG_USER"], let bin = env["DROVER_TEST_PG_BIN"], let data = env["DROVER_TEST_PG_DATA"] else {
            return nil
        }
        let runAs = env["DROVER_TEST_PG_RUN_AS"].flatMap { $0.isEmpty ? nil : $0 }
        var server = PostgresTestServer(host: host, port: port, user: user, binDirectory: bin, dataDirectory: data, runAs: runAs)
        server.certificateAuthority = env["DROVER_TEST_PG_CA"].flatMap { $0.isEmpty ? nil : $0 }
        return server
    }

    /// Whether PostgreSQL tests run: always in CI (where a missing server then fails them),
    /// elsewhere only when a server was started.
    public static var shouldRun: Bool {
        ProcessInfo.processInfo.environment["CI"] == "true" || current != nil
    }

    /// The server, or an error that says how to get one.
    public static func required() throws -> PostgresTestServer {
        guard let current else {
            throw TestFailure("PostgreSQL tests need the server started by scripts/test.sh (DROVER_TEST_PG_* unset)")
        }
        return current
    }

    /// Creates a fresh, empty database and returns its name.
    public func createDatabase(prefix: String = "drover_test") async throws -> String {
        let name = "\(prefix)_\(UInt64.random(in: 0...UInt64.max) % 1_000_000_000_000)"
        let result = try await Executable.run(binDirectory + "/createdb", ["-h", adminHost ?? host, "-p", String(port), "-U", user, name])
        guard result.status == 0 else { throw TestFailure("createdb failed: \(result.stderr)") }
        return name
    }

    /// Runs SQL through psql in `database`; returns its unaligned output.
    @discardableResult
    public func psql(_ database: String, _ sql: String) async throws -> String {
        let result = try await Executable.run(binDirectory + "/psql", ["-h", adminHost ?? host, "-p", String(port), "-U", user, "-d", database,
                                                                 "-v", "ON_ERROR_STOP=1", "-At", "-c", sql])
        guard result.status == 0 else { throw TestFailure("psql failed: \(result.stderr)") }
        return result.stdout
    }

    /// `database.conf` text for `database` on this server.
    public func databaseConf(_ database: String, extra: String = "") -> String {
        "provider=postgresql\nhost=\(host)\nport=\(port)\ndatabase=\(database)\nusername=\(user)\nconnection-timeout-seconds=5\n\(extra)"
    }

    /// Restarts the server (fast shutdown: connections are cut) and waits until it accepts
    /// connections again.
    public func restart() async throws {
        try await pgctl(["restart", "-m", "fast", "-w", "-t", "60"])
    }

    /// Stops the server (fast), leaving it down until ``start()``.
    public func stop() async throws { try await pgctl(["stop", "-m", "fast", "-w", "-t", "60"]) }

    public func start() async throws { try await pgctl(["start", "-w", "-t", "60", "-l", dataDirectory + ".log"]) }

    private func pgctl(_ arguments: [String]) async throws {
        try await run(binDirectory + "/pg_ctl", ["-D", dataDirectory] + arguments)
    }

    /// The command line that runs a server program as the server's OS user (in its namespace).
    func asServerUser(_ program: String, _ arguments: [String]) -> (String, [String]) {
        let (program, arguments) = environment.isEmpty ? (program, arguments) : ("/usr/bin/env", environment + [program] + arguments)
        let (command, commandArguments) = runAs.map { ("/usr/sbin/runuser", ["-u", $0, "--", program] + arguments) } ?? (program, arguments)
        guard let networkNamespace else { return (command, commandArguments) }
        return ("/usr/bin/nsenter", ["--net=" + networkNamespace, "--", command] + commandArguments)
    }

    /// Runs a server program as the server's OS user.
    func run(_ program: String, _ arguments: [String]) async throws {
        let (command, commandArguments) = asServerUser(program, arguments)
        let result = try await Executable.run(command, commandArguments)
        guard result.status == 0 else { throw TestFailure("\(program) failed: \(result.stderr)\(result.stdout)") }
    }
}

/// A PostgreSQL server of a test's own, on a free port in a temporary directory, for tests that
/// stop or restart the server. Stopped and removed when the value goes away.
public final class PrivatePostgres: Sendable {
    public let server: PostgresTestServer
    private let root: String

    /// - Parameters:
    ///   - listenAddress: the address it serves on.
    ///   - networkNamespace: the ``NetworkLab`` host namespace it runs in (then createdb and
    ///     psql reach it by its Unix socket).
    public init(listenAddress: String = "127.0.0.1", networkNamespace: String? = nil) async throws {
        let shared = try PostgresTestServer.required()
        root = NSTemporaryDirectory() + "/drover-pg-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        if let runAs = shared.runAs {
            _ = try await Executable.run("/bin/chown", [runAs, root])
        }
        let port = try FreePort.find()
        server = PostgresTestServer(host: listenAddress, port: port, user: shared.user, binDirectory: shared.binDirectory,
                                    dataDirectory: root + "/data", runAs: shared.runAs, networkNamespace: networkNamespace,
                                    adminHost: networkNamespace == nil ? nil : root)
        try await server.run(server.binDirectory + "/initdb", ["-D", server.dataDirectory, "-U", shared.user, "-A", "trust", "--no-sync"])
        let settings = "listen_addresses = '\(listenAddress)'\nport = \(port)\nunix_socket_directories = '\(root)'\nfsync = off\n"
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: server.dataDirectory + "/postgresql.conf"))
        handle.seekToEndOfFile()
        handle.write(Data(settings.utf8))
        try handle.close()
        if networkNamespace != nil {
            // The lab's private network reaches it from its other hosts.
            let hba = try FileHandle(forWritingTo: URL(fileURLWithPath: server.dataDirectory + "/pg_hba.conf"))
            hba.seekToEndOfFile()
            hba.write(Data("host all all 10.231.0.0/24 trust\n".utf8))
            try hba.close()
        }
        try await server.start()
    }

    /// Stops the server and removes its files in a process of its own, never waited for: a
    /// deinit runs on whatever thread let go last, often one of the cooperative pool's two,
    /// which seconds of `pg_ctl` and `rm` would hold from every other suite.
    deinit {
        // Outside any namespace (pg_ctl signals the server; its lab may be gone already).
        var outside = server
        outside.networkNamespace = nil
        let (command, arguments) = outside.asServerUser(server.binDirectory + "/pg_ctl", ["-D", server.dataDirectory, "stop", "-m", "immediate", "-w"])
        let quoted = ([command] + arguments).map { "'" + $0.replacingOccurrences(of: "'", with: "'\\''") + "'" }.joined(separator: " ")
        Executable.launchDetached("/bin/sh", ["-c", "\(quoted) >/dev/null 2>&1; rm -rf '\(root)'"])
    }
}
