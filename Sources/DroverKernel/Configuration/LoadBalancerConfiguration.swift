import Foundation

/// The `load-balancer` file. Its presence turns clustering on; every key has a default, so it may
/// be empty.
///
/// Keys (default): `balancer` (`sessions`), `www-host-name` (none), `timeout` (10 seconds, 0 = the
/// system's own), `verify-ssl-certs` (1), `diagnostics` (off; `tmp` or `stderr`),
/// `diagnostics-file` (`/tmp/drover-load-balancer-diagnostics`), `heartbeat-interval` (5 seconds),
/// `ssl-ca-file` (none: the system's trust store only), `max-sessions-per-node` (0: no limit).
/// Plugins may declare keys of their own (``PluginSettings``).
///
/// The legacy form, with the settings under `[config]` and node names under `[nodes]`, is
/// accepted; the `[nodes]` entries are ignored and reported in ``warnings``.
public struct LoadBalancerConfiguration: Sendable, Equatable {
    public static let fileName = "load-balancer"
    public static let defaultDiagnosticsFile = "/tmp/drover-load-balancer-diagnostics"
    static let keys = ["balancer", "www-host-name", "timeout", "verify-ssl-certs", "diagnostics",
                       "diagnostics-file", "heartbeat-interval", "ssl-ca-file", "max-sessions-per-node"]

    /// `balancer`: the name of the balancer strategy plugin.
    public var balancer: String = "sessions"
    /// `www-host-name`: the address other nodes and users reach this node at.
    public var wwwHostName: String?
    /// `timeout`: seconds to wait for another node; 0 means the system's default.
    public var timeout: Int = 10
    /// `verify-ssl-certs`: whether https peers must present a valid certificate.
    public var verifySSLCerts: Bool = true
    /// `ssl-ca-file`: CA certificates (PEM) trusted for peers' certificates besides the
    /// system's trust store, for a private CA.
    public var sslCAFile: String?
    /// `diagnostics`: the diagnostics sink plugin, or nil for none.
    public var diagnostics: String?
    /// `diagnostics-file`: where the `tmp` sink writes.
    public var diagnosticsFile: String = Self.defaultDiagnosticsFile
    /// `heartbeat-interval`: seconds between a node's heartbeats.
    public var heartbeatInterval: Int = 5
    /// `max-sessions-per-node`: a node running this many sessions is excluded from placement
    /// as "full", whatever the balancer; 0: no limit. The same on every node.
    public var maxSessionsPerNode: Int = 0
    /// Keys declared by plugins, with their values.
    public var pluginSettings: PluginSettings
    /// Non-fatal remarks for the operator (the legacy form's `[nodes]`).
    public var warnings: [String] = []

    /// Where the keys were read from.
    public var source = ConfigSource(file: Self.fileName)

    public init(pluginSettings: PluginSettings = PluginSettings(file: Self.fileName)) {
        self.pluginSettings = pluginSettings
    }

    /// Reads and validates a parsed `load-balancer` file.
    /// - Parameters:
    ///   - pluginKeys: extra keys that plugins read from this file.
    public init(file: ConfigFile, baseDirectory: String, pluginKeys: [String] = []) throws(ConfigurationError) {
        let isLegacy = file.entries.contains { $0.section != nil }
        let reader = ConfigReader(file, baseDirectory: baseDirectory, section: isLegacy ? "config" : nil)
        source = reader.source
        if isLegacy, let stray = file.entries.first(where: { $0.section == nil }) {
            throw ConfigurationError(file: file.path, line: stray.line,
                                     "'\(stray.key)' is outside any section; move it under [config]")
        }
        try reader.rejectUnknownKeys(known: Self.keys + pluginKeys)
        balancer = try reader.string("balancer") ?? balancer
        wwwHostName = try reader.string("www-host-name")
        timeout = try reader.integer("timeout", default: timeout, in: 0...3600)
        verifySSLCerts = try reader.boolean("verify-ssl-certs", default: verifySSLCerts)
        sslCAFile = try reader.path("ssl-ca-file")
        if let caFile = sslCAFile, let entry = reader.entry("ssl-ca-file"), !FileManager.default.isReadableFile(atPath: caFile) {
            throw reader.error(entry, "ssl-ca-file \(caFile) cannot be read; give the PEM file of the CA that signed the nodes' certificates")
        }
        diagnostics = try reader.string("diagnostics")
        diagnosticsFile = try reader.path("diagnostics-file") ?? diagnosticsFile
        heartbeatInterval = try reader.integer("heartbeat-interval", default: heartbeatInterval, in: 1...3600)
        maxSessionsPerNode = try reader.integer("max-sessions-per-node", default: maxSessionsPerNode, in: 0...1_000_000)
        pluginSettings = PluginSettings(reader: reader, keys: pluginKeys)
        let nodes = file.entries.filter { $0.section == "nodes" }
        if !nodes.isEmpty {
            warnings.append("\(file.path): the [nodes] section is ignored (\(nodes.count) entries); "
                + "set www-host-name on each node and drop the [config]/[nodes] headers instead")
        } else if isLegacy {
            warnings.append("\(file.path): the [config] section header is the legacy form; remove it")
        }
    }

    /// Parses the text of a `load-balancer` file.
    public init(parsing text: String, path: String, baseDirectory: String, pluginKeys: [String] = []) throws(ConfigurationError) {
        let file = try ConfigFile(parsing: text, path: path, sections: ["config", "nodes"], listSections: ["nodes"])
        try self.init(file: file, baseDirectory: baseDirectory, pluginKeys: pluginKeys)
    }
}

/// Keys a plugin reads from a file the kernel owns, kept with their line so the plugin reports
/// a bad value as `FILE:LINE: message` like every other key.
public struct PluginSettings: Sendable, Equatable {
    public let file: String
    public let entries: [String: ConfigFile.Entry]

    public init(file: String, entries: [String: ConfigFile.Entry] = [:]) {
        self.file = file
        self.entries = entries
    }

    init(reader: ConfigReader, keys: [String]) {
        var entries: [String: ConfigFile.Entry] = [:]
        for key in keys {
            if let entry = reader.entry(key) { entries[key] = entry }
        }
        self.init(file: reader.file.path, entries: entries)
    }

    /// The raw value of `key`, or nil when the file does not set it.
    public subscript(key: String) -> String? { entries[key]?.value }

    /// An error pointing at the line that set `key`.
    public func error(_ key: String, _ message: String) -> ConfigurationError {
        ConfigurationError(file: file, line: entries[key]?.line, message)
    }
}
