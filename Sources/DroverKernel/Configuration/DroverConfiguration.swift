import Foundation

/// The whole configuration directory, parsed and cross-checked.
///
/// Missing files take their defaults, except `load-balancer`, whose presence turns clustering on.
/// Relative paths inside the files resolve against the directory.
public struct DroverConfiguration: Sendable, Equatable {
    /// The default configuration directory.
    public static let defaultDirectory = "/etc/drover"
    /// The environment variable that overrides ``defaultDirectory``.
    public static let directoryEnvironmentKey = "DROVER_CONFIG_DIR"

    /// The configuration directory, absolute.
    public var directory: String
    /// `load-balancer`, or nil when the file is absent (a single node, no cluster).
    public var loadBalancer: LoadBalancerConfiguration?
    public var server: ServerConfiguration
    public var fileLocks: FileLocksConfiguration
    public var database: DatabaseConfiguration
    /// The session kinds (`kinds/*.conf`, and `session-command` as the kind `default`).
    public var kinds = SessionKinds(kinds: [], defaultKind: nil)
    /// Non-fatal remarks for the operator.
    public var warnings: [String]
    /// A hash of every setting except the address keys (`www-host-name`, `www-address`,
    /// `www-port`), which may differ between nodes; comments and key order do not count.
    /// Nodes of one cluster should all show the same value.
    public var fingerprint: String
    /// A hash of `launcher.pub` and `launcher.pem` (nil when neither exists); they must match
    /// across nodes.
    public var launcherFingerprint: String?

    /// True when `load-balancer` exists.
    public var isClustered: Bool { loadBalancer != nil }

    /// The registry this node and the commands use: `database.conf`'s while load balancing is
    /// on; without `load-balancer` the node runs alone, so its registry is the embedded SQLite
    /// store in `server-data-dir`, whatever `database.conf` names: a node without the file
    /// must not join, heartbeat into or take sessions from a cluster in a shared database.
    public var registry: DatabaseConfiguration {
        isClustered ? database : Self.standaloneRegistry(database, dataDirectory: server.dataDirectory)
    }

    /// The embedded store a node without `load-balancer` keeps its sessions in.
    static func standaloneRegistry(_ database: DatabaseConfiguration, dataDirectory: String) -> DatabaseConfiguration {
        var registry = DatabaseConfiguration(defaultDirectory: dataDirectory)
        registry.connectionTimeoutSeconds = database.connectionTimeoutSeconds
        registry.source = database.source
        return registry
    }

    /// The load-balancer settings in force: the file's, or the defaults for a single node.
    public var effectiveLoadBalancer: LoadBalancerConfiguration { loadBalancer ?? LoadBalancerConfiguration() }

    /// Where the secure cookie key is read: `secure-cookie-key-file`, else `secure-cookie-key` here.
    public var secureCookieKeyPath: String {
        server.secureCookieKeyFile ?? ConfigReader.resolve(SecureCookieKey.defaultFileName, against: directory)
    }

    /// The directory in effect for a command line: the option, else `DROVER_CONFIG_DIR`, else
    /// ``defaultDirectory``.
    public static func directory(option: String?, environment: [String: String]? = nil) -> String {
        option ?? (environment ?? ProcessInfo.processInfo.environment)[directoryEnvironmentKey] ?? defaultDirectory
    }

    /// Reads every file in `directory`.
    /// - Parameters:
    ///   - pluginKeys: extra `load-balancer` keys that plugins read.
    /// - Throws: ``ConfigurationError`` for a missing directory, an unreadable file, or any bad
    ///   line.
    public static func load(directory: String, pluginKeys: [String] = []) throws(ConfigurationError) -> DroverConfiguration {
        let dir = absolute(directory)
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: dir, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw ConfigurationError(file: directory,
                "configuration directory does not exist; pass --config-dir DIR or set \(directoryEnvironmentKey)")
        }
        func path(_ name: String) -> String { ConfigReader.resolve(name, against: dir) }

        var settings: [String] = []
        func parse(_ name: String, sections: Set<String> = [], listSections: Set<String> = [], addressKeys: Set<String>) throws(ConfigurationError) -> ConfigFile? {
            guard let text = try readFile(path(name)) else { return nil }
            let file = try ConfigFile(parsing: text, path: path(name), sections: sections, listSections: listSections)
            for entry in file.entries where !addressKeys.contains(entry.key) && entry.section != "nodes" {
                settings.append("\(name)\t\(entry.key)\t\(entry.value)")
            }
            return file
        }

        var server = ServerConfiguration()
        if let file = try parse(ServerConfiguration.fileName, addressKeys: ["www-address", "www-port"]) {
            server = try ServerConfiguration(file: file, baseDirectory: dir)
        }
        var loadBalancer: LoadBalancerConfiguration?
        if let file = try parse(LoadBalancerConfiguration.fileName, sections: ["config", "nodes"], listSections: ["nodes"],
                                addressKeys: ["www-host-name"]) {
            loadBalancer = try LoadBalancerConfiguration(file: file, baseDirectory: dir, pluginKeys: pluginKeys)
        }
        var fileLocks = FileLocksConfiguration()
        if let file = try parse(FileLocksConfiguration.fileName, addressKeys: []) {
            fileLocks = try FileLocksConfiguration(file: file, baseDirectory: dir)
        }
        var database = DatabaseConfiguration(defaultDirectory: server.dataDirectory)
        if let file = try parse(DatabaseConfiguration.fileName, addressKeys: []) {
            database = try DatabaseConfiguration(file: file, baseDirectory: dir, defaultDirectory: server.dataDirectory)
            try refuseReadableSecret(database, path: path(DatabaseConfiguration.fileName))
        }
        let kinds = try SessionKinds.load(directory: dir, server: server, settings: &settings)
        let launcherFiles = ["launcher.pub", "launcher.pem"].compactMap { name in
            FileManager.default.contents(atPath: path(name)).map { name + ":" + Crypto.sha256($0).hexString }
        }

        if loadBalancer != nil, server.sharedStoragePath == nil {
            throw ConfigurationError(file: path(ServerConfiguration.fileName),
                "server-shared-storage-path is required when \(path(LoadBalancerConfiguration.fileName)) exists; "
                + "set it to a directory every node mounts (e.g. /shared/drover)")
        }
        var warnings = loadBalancer?.warnings ?? []
        let standalone = standaloneRegistry(database, dataDirectory: server.dataDirectory)
        if loadBalancer == nil, database.provider != standalone.provider || database.directory != standalone.directory
            || database.database != standalone.database {
            warnings.append("\(path(DatabaseConfiguration.fileName)): its \(database.provider) registry is not used while load "
                + "balancing is off (\(path(LoadBalancerConfiguration.fileName)) does not exist): this node runs alone and records "
                + "its sessions in \(standalone.directory)/\(standalone.database).sqlite; create load-balancer (it may be empty) to join the cluster")
        }
        return DroverConfiguration(directory: dir, loadBalancer: loadBalancer, server: server, fileLocks: fileLocks,
                                   database: database, kinds: kinds, warnings: warnings,
                                   fingerprint: String(Crypto.sha256(Array(settings.sorted().joined(separator: "\n").utf8)).hexString.prefix(16)),
                                   launcherFingerprint: launcherFiles.isEmpty ? nil
                                       : String(Crypto.sha256(Array(launcherFiles.joined(separator: "\n").utf8)).hexString.prefix(16)))
    }

    /// `session-run-dir` in force.
    public var sessionRunDirectory: String {
        server.sessionRunDirectory ?? (geteuid() == 0 ? "/run/drover" : server.dataDirectory + "/run")
    }

    /// Where a running node keeps its pid (`droverd.pid` in `server-data-dir`).
    public var pidFile: String { server.dataDirectory + "/droverd.pid" }
    /// Where a running node records its row id (`node-id` in `server-data-dir`).
    public var nodeIDFile: String { server.dataDirectory + "/node-id" }
    /// The flag file whose presence puts the node in offline mode (`drover offline`).
    public var offlineFlagFile: String { server.dataDirectory + "/offline" }

    /// A plain-text database password must not be readable by other users; an encrypted one
    /// is safe (its key is mode 0600).
    static func refuseReadableSecret(_ database: DatabaseConfiguration, path: String) throws(ConfigurationError) {
        var holdsSecret = false
        if case .plain = database.password { holdsSecret = true }
        if let uri = database.connectionURI, let at = uri.firstIndex(of: "@"),
           uri[uri.startIndex..<at].split(separator: "/").last?.contains(":") == true {
            holdsSecret = true
        }
        var info = stat()
        guard holdsSecret, stat(path, &info) == 0, info.st_mode & 0o077 != 0 else { return }
        throw ConfigurationError(file: path,
            "holds a plain-text password and may be read by other users (mode \(String(format: "%04o", info.st_mode & 0o777))); "
            + "run: chmod 0600 \(path), or store the password encrypted (drover encrypt-password)")
    }

    /// The file's text, or nil when it does not exist.
    static func readFile(_ path: String) throws(ConfigurationError) -> String? {
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            let reason = FileManager.default.isReadableFile(atPath: path) ? "it could not be read" : "permission denied"
            throw ConfigurationError(file: path, "cannot be read (\(reason)); check its owner and mode")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw ConfigurationError(file: path, "is not valid UTF-8 text")
        }
        return text
    }

    static func absolute(_ path: String) -> String {
        let joined = path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
        return URL(fileURLWithPath: joined).standardizedFileURL.path
    }
}
