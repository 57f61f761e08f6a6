import Foundation

/// The `database.conf` file: which registry store holds cluster state, and how to reach it.
///
/// Keys (default): `provider` (`sqlite`), `directory` (the `server-data-dir`), `host`
/// (`localhost`), `port` (5432), `database` (`drover`), `username` (the connecting OS user),
/// `password` (none; plain, or encrypted by `drover encrypt-password`), `connection-uri` (none;
/// overrides host, port, database, username), `connection-timeout-seconds` (10), `pool-size` (4),
/// `sslmode` (libpq's default, `prefer`) and `sslrootcert` (libpq's default, `~/.postgresql/root.crt`).
public struct DatabaseConfiguration: Sendable, Equatable {
    public static let fileName = "database.conf"
    static let keys = ["provider", "directory", "host", "port", "database", "username", "password",
                       "connection-uri", "connection-timeout-seconds", "pool-size", "sslmode", "sslrootcert"]
    /// libpq's `sslmode` values.
    public static let sslModes = ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]

    /// `provider`: the registry store plugin.
    public var provider = "sqlite"
    /// `directory`: where the SQLite store keeps `<database>.sqlite`.
    public var directory: String
    /// `host`: the PostgreSQL server.
    public var host = "localhost"
    /// `port`: the PostgreSQL port.
    public var port = 5432
    /// `database`: the database name (and the SQLite file's base name).
    public var database = "drover"
    /// `username`: the PostgreSQL role.
    public var username: String?
    /// `password`: the role's password, possibly encrypted.
    public var password: DatabasePassword?
    /// `connection-uri`: a libpq connection URI used instead of the separate keys.
    public var connectionURI: String?
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
        host = try reader.string("host") ?? host
        port = try reader.integer("port", default: port, in: 1...65535)
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
        if database.contains("/"), let entry = reader.entry("database") {
            throw reader.error(entry, "'database' is a name, not a path; use 'directory' for the SQLite file's folder")
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
