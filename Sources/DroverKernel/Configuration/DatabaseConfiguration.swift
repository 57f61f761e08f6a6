import Foundation

/// The `database.conf` file: which registry store holds cluster state, and how to reach it.
///
/// Keys (default): `provider` (`sqlite`), `directory` (the `server-data-dir`), `host`
/// (`localhost`; a comma-separated list names a primary and its standbys), `port` (5432; one
/// for every host, or one per host), `database` (`drover`), `username` (the connecting OS user),
/// `password` (none; plain, or encrypted by `drover encrypt-password`), `connection-uri` (none;
/// overrides host, port, database, username; may name several hosts), `target_session_attrs`
/// (libpq's; `read-write` when several hosts are named), `connection-timeout-seconds` (10),
/// `pool-size` (4), `sslmode` (libpq's default, `prefer`) and `sslrootcert` (libpq's default,
/// `~/.postgresql/root.crt`).
public struct DatabaseConfiguration: Sendable, Equatable {
    public static let fileName = "database.conf"
    static let keys = ["provider", "directory", "host", "port", "database", "username", "password",
                       "connection-uri", "target_session_attrs", "connection-timeout-seconds", "pool-size", "sslmode", "sslrootcert"]
    /// libpq's `sslmode` values.
    public static let sslModes = ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]
    /// The `target_session_attrs` values a registry can use: it writes, so libpq's `read-only`,
    /// `standby` and `prefer-standby` are refused.
    public static let targetSessionAttributeValues = ["read-write", "primary", "any"]

    /// `provider`: the registry store plugin.
    public var provider = "sqlite"
    /// `directory`: where the SQLite store keeps `<database>.sqlite`.
    public var directory: String
    /// `host`: the PostgreSQL servers, tried in order (libpq's multi-host list).
    public var hosts = ["localhost"]
    /// `port`: one port for every host, or one per host.
    public var ports = [5432]
    /// `database`: the database name (and the SQLite file's base name).
    public var database = "drover"
    /// `username`: the PostgreSQL role.
    public var username: String?
    /// `password`: the role's password, possibly encrypted.
    public var password: DatabasePassword?
    /// `connection-uri`: a libpq connection URI used instead of the separate keys.
    public var connectionURI: String?
    /// `target_session_attrs` as written (in the file, else in `connection-uri`); nil: libpq's
    /// `any` for one host, ``targetSessionAttributes`` says what is used.
    public var targetSessionAttributesSetting: String?
    /// `connection-timeout-seconds`: how long to wait for a connection.
    public var connectionTimeoutSeconds = 10
    /// `pool-size`: the most connections a node keeps open.
    public var poolSize = 4
    /// `sslmode`: libpq's; nil leaves libpq's default (`prefer`) or the URI's.
    public var sslMode: String?
    /// `sslrootcert`: the CA certificates (PEM) a server's certificate is verified against.
    public var sslRootCertificate: String?

    /// Where the keys were read from.
    public var source = ConfigSource(file: Self.fileName)

    public init(defaultDirectory: String) {
        directory = defaultDirectory
    }

    public init(file: ConfigFile, baseDirectory: String, defaultDirectory: String) throws(ConfigurationError) {
        let reader = ConfigReader(file, baseDirectory: baseDirectory)
        source = reader.source
        try reader.rejectUnknownKeys(known: Self.keys)
        provider = try reader.string("provider") ?? provider
        directory = try reader.path("directory") ?? defaultDirectory
        if let list = try reader.string("host"), let entry = reader.entry("host") {
            hosts = list.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
            if hosts.contains(where: \.isEmpty) {
                throw reader.error(entry, "'host' has an empty name in '\(list)'; give host names separated by commas (e.g. db1.example.com,db2.example.com)")
            }
        }
        if let list = try reader.string("port"), let entry = reader.entry("port") {
            ports = try list.split(separator: ",", omittingEmptySubsequences: false).map { item throws(ConfigurationError) in
                let text = item.trimmingCharacters(in: .whitespaces)
                let context = list.contains(",") ? " in '\(list)' (one port, or one per host)" : ""
                guard let port = Int(text) else { throw reader.error(entry, "'port' must be a whole number, found '\(text)'" + context) }
                guard (1...65535).contains(port) else { throw reader.error(entry, "'port' must be from 1 to 65535, found \(port)" + context) }
                return port
            }
            if ports.count > 1, ports.count != hosts.count {
                throw reader.error(entry, "'port' names \(ports.count) ports for \(hosts.count) host\(hosts.count == 1 ? "" : "s"); give one port for every host, or one per host in the same order")
            }
        }
        database = try reader.string("database") ?? database
        username = try reader.string("username")
        password = try reader.string("password").map(DatabasePassword.init(configValue:))
        connectionURI = try reader.string("connection-uri")
        connectionTimeoutSeconds = try reader.integer("connection-timeout-seconds", default: connectionTimeoutSeconds, in: 1...3600)
        poolSize = try reader.integer("pool-size", default: poolSize, in: 1...1000)
        sslMode = try reader.string("sslmode")
        if let mode = sslMode, !Self.sslModes.contains(mode), let entry = reader.entry("sslmode") {
            throw reader.error(entry, "sslmode must be one of \(Self.sslModes.joined(separator: ", ")) (verify-full checks the server's certificate and name)")
        }
        sslRootCertificate = try reader.path("sslrootcert")
        if let root = sslRootCertificate, let entry = reader.entry("sslrootcert"), !FileManager.default.isReadableFile(atPath: root) {
            throw reader.error(entry, "sslrootcert \(root) cannot be read; give the PEM file of the CA that signed the database server's certificate")
        }
        if let uri = connectionURI, let entry = reader.entry("connection-uri"),
           !(uri.hasPrefix("postgresql://") || uri.hasPrefix("postgres://")) {
            throw reader.error(entry, "'connection-uri' must start with postgresql:// (e.g. postgresql://drover@db.example.com:5432/drover)")
        }
        if let entry = reader.entry("target_session_attrs") {
            targetSessionAttributesSetting = try reader.string("target_session_attrs")
            if let value = targetSessionAttributesSetting, !Self.targetSessionAttributeValues.contains(value) {
                throw reader.error(entry, Self.unknownTargetSessionAttributes(value))
            }
        } else if let uri = connectionURI, let value = Self.queryParameter("target_session_attrs", in: uri) {
            if !Self.targetSessionAttributeValues.contains(value), let entry = reader.entry("connection-uri") {
                throw reader.error(entry, "in 'connection-uri': " + Self.unknownTargetSessionAttributes(value))
            }
            targetSessionAttributesSetting = value
        }
        if database.contains("/"), let entry = reader.entry("database") {
            throw reader.error(entry, "'database' is a name, not a path; use 'directory' for the SQLite file's folder")
        }
    }

    /// The PostgreSQL servers named, as `host:port`, in the order libpq tries them.
    public var servers: [String] {
        if let uri = connectionURI { return Self.uriServers(uri) }
        return hosts.enumerated().map { index, host in "\(host):\(ports.count == 1 ? ports[0] : ports[index])" }
    }

    /// What libpq is asked for: the setting, else `read-write` when several servers are named
    /// (a standby or a demoted primary must never be taken for the registry), else nil (libpq's
    /// `any`).
    public var targetSessionAttributes: String? {
        targetSessionAttributesSetting ?? (servers.count > 1 ? "read-write" : nil)
    }

    static func unknownTargetSessionAttributes(_ value: String) -> String {
        "target_session_attrs must be one of \(targetSessionAttributeValues.joined(separator: ", ")), found '\(value)' "
            + "(the registry writes, so it needs the primary; read-write is the default when several hosts are named)"
    }

    /// The value of `name` in a URI's query, percent-decoded; nil when absent.
    static func queryParameter(_ name: String, in uri: String) -> String? {
        guard let query = uri.split(separator: "?", maxSplits: 1).dropFirst().first else { return nil }
        for pair in query.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1)
            if parts.count == 2, parts[0] == name { return String(parts[1]).removingPercentEncoding ?? String(parts[1]) }
        }
        return nil
    }

    /// The `host:port` list of a libpq URI (`postgresql://user@a:1,b:2/db`); a host without a
    /// port has libpq's default, 5432.
    static func uriServers(_ uri: String) -> [String] {
        guard let schemeEnd = uri.range(of: "://") else { return [] }
        var authority = uri[schemeEnd.upperBound...].prefix { $0 != "/" && $0 != "?" }
        if let at = authority.lastIndex(of: "@") { authority = authority[authority.index(after: at)...] }
        // libpq also takes the hosts as parameters: `postgresql:///drover?host=a,b&port=1,2`.
        if authority.isEmpty, let hosts = queryParameter("host", in: uri) {
            let names = hosts.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
            let ports = (queryParameter("port", in: uri) ?? "5432").split(separator: ",").map(String.init)
            return names.enumerated().map { index, host in "\(host):\(ports.count == names.count ? ports[index] : ports.first ?? "5432")" }
        }
        return authority.split(separator: ",", omittingEmptySubsequences: false).map { item in
            let host = item.isEmpty ? "localhost" : String(item)
            // A port follows the last colon, unless that colon is inside an IPv6 literal's brackets.
            if let colon = host.lastIndex(of: ":"), !host[colon...].contains("]") { return host }
            return "\(host):5432"
        }
    }

    public init(parsing text: String, path: String, baseDirectory: String, defaultDirectory: String) throws(ConfigurationError) {
        try self.init(file: ConfigFile(parsing: text, path: path), baseDirectory: baseDirectory, defaultDirectory: defaultDirectory)
    }
}

/// A database password as written in `database.conf`: plain, or encrypted under the secure cookie
/// key. Its description never shows the secret.
public enum DatabasePassword: Sendable, Equatable, CustomStringConvertible {
    case plain(String)
    /// The encrypted form, without its prefix.
    case encrypted(String)

    /// Encrypted passwords are written with this prefix by `drover encrypt-password`.
    public static let encryptedPrefix = "encrypted:"

    public init(configValue: String) {
        if configValue.hasPrefix(Self.encryptedPrefix) {
            self = .encrypted(String(configValue.dropFirst(Self.encryptedPrefix.count)))
        } else {
            self = .plain(configValue)
        }
    }

    public var description: String { "<redacted>" }
}
