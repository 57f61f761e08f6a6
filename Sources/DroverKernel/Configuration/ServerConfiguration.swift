import Foundation
/// The `rserver.conf` file: the node's own HTTP server, storage and sign-in.
///
/// Keys (default): `www-address` (`0.0.0.0`), `www-port` (8787), `secure-cookie-key-file`
/// (`secure-cookie-key` in the configuration directory), `server-shared-storage-path` (none;
/// required when clustering), `server-data-dir` (`/var/lib/drover`), `ssl-enabled` (0),
/// `ssl-certificate`, `ssl-certificate-key` (both required with `ssl-enabled=1`),
/// `session-command` (none), `session-response-timeout` (60), `max-starting-sessions` (128),
/// `auth-none` (0), `auth-pam-service` (`drover`), `www-header-timeout` (30),
/// `www-keep-alive-timeout` (75), `www-max-connections` (4096), `auth-minimum-user-id` (1000),
/// `auth-none-allow-anyone-on-the-network` (0), `www-allowed-origins` (none),
/// `metrics-allowed-addresses` (none), `audit-retention-days` (90), `admin-group` (none), `max-sessions-per-user` (0: no limit),
/// `session-timeout-minutes` (0: never), `www-session-domain` (none: sessions at `/s/<id>/` on
/// Drover's own origin), `www-main-host` (required with `www-session-domain`, except `localhost`),
/// `ssl-session-certificate`, `ssl-session-certificate-key` (default: `ssl-certificate` serves both).
public struct ServerConfiguration: Sendable, Equatable {
    public static let fileName = "rserver.conf"
    static let keys = ["www-address", "www-port", "secure-cookie-key-file", "server-shared-storage-path",
                       "server-data-dir", "ssl-enabled", "ssl-certificate", "ssl-certificate-key",
                       "session-command", "session-response-timeout", "max-starting-sessions", "auth-none", "auth-pam-service",
                       "www-header-timeout", "www-keep-alive-timeout", "www-max-connections", "auth-minimum-user-id",
                       "auth-none-allow-anyone-on-the-network", "www-allowed-origins", "metrics-allowed-addresses",
                       "audit-retention-days", "admin-group", "max-sessions-per-user", "session-timeout-minutes",
                       "default-session-kind", "session-run-dir", "www-body-timeout", "www-max-connections-per-address", "www-trusted-proxies", "www-proxy-protocol",
                       "www-session-domain", "www-main-host", "ssl-session-certificate", "ssl-session-certificate-key",
                       "www-secure-cookies"]

    /// `www-address`: the address the HTTP server binds.
    public var wwwAddress = "0.0.0.0"
    /// `www-port`: the port the HTTP server binds.
    public var wwwPort = 8787
    /// `secure-cookie-key-file`: where the secure cookie key is read, if not the default.
    public var secureCookieKeyFile: String?
    /// `server-shared-storage-path`: storage every node mounts, for cross-node locks.
    public var sharedStoragePath: String?
    /// `server-data-dir`: node-local state (pid file, offline flag, default SQLite file).
    public var dataDirectory = "/var/lib/drover"
    /// `ssl-enabled`: serve https instead of http.
    public var sslEnabled = false
    /// `ssl-certificate`: PEM certificate chain for https.
    public var sslCertificate: String?
    /// `ssl-certificate-key`: PEM private key for https.
    public var sslCertificateKey: String?
    /// `session-command`: the program started for each session.
    public var sessionCommand: String?
    /// `default-session-kind`: the kind a start that names none gets (default: `default`, which
    /// is `session-command`, when that is set; else the only kind, when there is one).
    public var defaultSessionKind: String?
    /// `session-run-dir`: where each session of a `unix-socket` kind (or one with a secret) gets
    /// its own folder. Users must be able to pass through every folder above it; droverd makes it
    /// mode 0711 (no listing). Default: `/run/drover` when droverd runs as root, else `run` in
    /// `server-data-dir`.
    public var sessionRunDirectory: String?
    /// `session-response-timeout`: seconds a session may take to start answering a proxied
    /// request before the client gets 504 (raise it for long-polling sessions).
    public var sessionResponseTimeout = 60
    /// `max-starting-sessions`: sessions this node starts at once; one more start is answered
    /// 429 with `Retry-After` until one of them is up.
    public var maxStartingSessions = 128
    /// `max-sessions-per-user`: sessions one user may have (any state); one more is refused
    /// with 429. 0: no limit.
    public var maxSessionsPerUser = 0
    /// `session-timeout-minutes`: a session without client activity for this long is
    /// suspended; 0: never. Decimals accepted.
    public var sessionTimeoutMinutes: Double = 0
    /// `auth-none`: every visitor is the daemon's own user (single-user machines only).
    public var authNone = false
    /// `auth-pam-service`: the PAM service that authenticates sign-ins.
    public var authPAMService = "drover"
    /// `www-allowed-origins`: origins (`scheme://host[:port]`, separated by commas or spaces)
    /// whose pages may open WebSockets to sessions, besides the node's own.
    public var allowedOrigins: [String] = []
    /// `metrics-allowed-addresses`: addresses and networks (`10.1.2.3`, `10.0.0.0/8`, separated
    /// by commas or spaces) that may read `GET /metrics`, besides this machine and the
    /// cluster's nodes (who may always).
    public var metricsAllowedAddresses: [AddressRange] = []
    /// `audit-retention-days`: audit rows older than this are removed (decimals accepted; 0
    /// keeps them for ever).
    public var auditRetentionDays = 90.0
    /// `admin-group`: members of this group may use the admin dashboard (`/admin`), as in
    /// Workbench. With `auth-none` the daemon's own user may, whatever the group.
    public var adminGroup: String?
    /// `auth-none-allow-anyone-on-the-network`: lets `auth-none` serve on an address that is
    /// not loopback, where anyone who reaches it acts as droverd's user.
    public var authNoneOnNetwork = false
    /// `auth-minimum-user-id`: accounts with a lower user id (root, system accounts) cannot sign
    /// in through PAM, as in Workbench. `auth-none` is unaffected.
    public var authMinimumUserID = 1000
    /// `www-header-timeout`: seconds a client may take to send a request's head, counted from
    /// its first byte (or, on a new connection, from the connection): a slow client (slowloris)
    /// is closed after it.
    public var headerTimeout = 30
    /// `www-keep-alive-timeout`: seconds an idle keep-alive connection stays open between
    /// requests (nginx's default is 75).
    public var keepAliveTimeout = 75
    /// `www-max-connections`: client connections open at once; one more is answered 503 with
    /// `Retry-After` and closed. Each proxied connection also holds one to its session, so the
    /// node raises its open-file limit to at least twice this plus a margin where it may.
    public var maxConnections = 4096
    /// `www-body-timeout`: seconds a request body to the node's own endpoints may take whole, and
    /// the longest pause in a body streamed to a session.
    public var bodyTimeout = 60
    /// `www-max-connections-per-address`: client connections one address (an IPv6 /64) may hold
    /// open; the cluster's nodes and this machine are not counted.
    public var maxConnectionsPerAddress = 256
    /// `www-trusted-proxies`: addresses and networks of the load balancers and TLS terminators
    /// in front of the node, whose `X-Forwarded-For`, `-Proto` and `-Host` (or `Forwarded`) are
    /// believed; everyone else's are ignored.
    public var trustedProxies: [AddressRange] = []
    /// `www-proxy-protocol`: connections from `www-trusted-proxies` start with a PROXY protocol
    /// header (version 1 or 2) naming the client, as TCP load balancers send it.
    public var proxyProtocol = false

    /// `www-session-domain`: each session is served at its own origin, `<id>.<domain>` (a
    /// wildcard DNS record and certificate), so that its pages cannot script Drover's own pages
    /// or another session. nil: at `/s/<id>/` on Drover's origin.
    public var sessionDomain: String?
    /// `www-main-host`: the name users reach Drover's own pages by (the front load balancer's),
    /// to which a session's origin sends its users to sign in. With `www-session-domain=localhost`
    /// it is `localhost` unless set.
    public var mainHost: String?
    /// `ssl-session-certificate` and `ssl-session-certificate-key`: the certificate served to
    /// browsers asking for a session's origin (by SNI), for `*.<www-session-domain>`; nil:
    /// `ssl-certificate` serves both (it must then name the wildcard too).
    public var sslSessionCertificate: String?
    public var sslSessionCertificateKey: String?
    /// `www-secure-cookies`: Drover's cookies are `Secure` and `__Host-` (sent over https
    /// alone, and no other host can set them). Default: `ssl-enabled`; set it behind a TLS
    /// terminator, where the node serves http but browsers use https.
    public var secureCookies = false

    /// Where the keys were read from.
    public var source = ConfigSource(file: Self.fileName)

    public init() {}

    public init(file: ConfigFile, baseDirectory: String) throws(ConfigurationError) {
        let reader = ConfigReader(file, baseDirectory: baseDirectory)
        source = reader.source
        try reader.rejectUnknownKeys(known: Self.keys)
        wwwAddress = try reader.string("www-address") ?? wwwAddress
        wwwPort = try reader.integer("www-port", default: wwwPort, in: 1...65535)
        secureCookieKeyFile = try reader.path("secure-cookie-key-file")
        sharedStoragePath = try reader.path("server-shared-storage-path")
        dataDirectory = try reader.path("server-data-dir") ?? dataDirectory
        sslEnabled = try reader.boolean("ssl-enabled", default: false)
        sslCertificate = try reader.path("ssl-certificate")
        sslCertificateKey = try reader.path("ssl-certificate-key")
        sessionCommand = try reader.string("session-command")
        defaultSessionKind = try reader.string("default-session-kind")
        sessionRunDirectory = try reader.path("session-run-dir")
        sessionResponseTimeout = try reader.integer("session-response-timeout", default: sessionResponseTimeout, in: 1...86_400)
        maxStartingSessions = try reader.integer("max-starting-sessions", default: maxStartingSessions, in: 1...100_000)
        maxSessionsPerUser = try reader.integer("max-sessions-per-user", default: maxSessionsPerUser, in: 0...100_000)
        sessionTimeoutMinutes = try reader.decimal("session-timeout-minutes", default: sessionTimeoutMinutes, minimum: 0)
        authNone = try reader.boolean("auth-none", default: false)
        authPAMService = try reader.string("auth-pam-service") ?? authPAMService
        authNoneOnNetwork = try reader.boolean("auth-none-allow-anyone-on-the-network", default: false)
        if let origins = try reader.string("www-allowed-origins") {
            allowedOrigins = origins.split(whereSeparator: { $0 == "," || $0 == " " }).map { String($0).lowercased() }
            for origin in allowedOrigins where !(origin.hasPrefix("http://") || origin.hasPrefix("https://")) || origin.dropFirst(8).contains("/") {
                throw ConfigurationError(file: file.path, line: reader.entry("www-allowed-origins")?.line,
                                         "'www-allowed-origins' takes origins like https://app.example.com:8443 (scheme, host and port, no path), found '\(origin)'")
            }
        }
        metricsAllowedAddresses = try Self.addressRanges("metrics-allowed-addresses", reader)
        trustedProxies = try Self.addressRanges("www-trusted-proxies", reader)
        proxyProtocol = try reader.boolean("www-proxy-protocol", default: false)
        if proxyProtocol, trustedProxies.isEmpty {
            throw ConfigurationError(file: file.path, line: reader.entry("www-proxy-protocol")?.line,
                                     "www-proxy-protocol=1 is only believed from www-trusted-proxies, and none is set; add www-trusted-proxies=ADDRESS of the load balancer")
        }
        adminGroup = try reader.string("admin-group")
        auditRetentionDays = try reader.decimal("audit-retention-days", default: auditRetentionDays, minimum: 0)
        if authNone, !authNoneOnNetwork, !Self.isLoopback(wwwAddress) {
            throw ConfigurationError(file: file.path, line: reader.entry("auth-none")?.line,
                                     "auth-none=1 would let anyone who reaches www-address \(wwwAddress) act as the user running droverd; "
                                        + "set www-address=127.0.0.1, or add auth-none-allow-anyone-on-the-network=1 if that is what you want")
        }
        authMinimumUserID = try reader.integer("auth-minimum-user-id", default: authMinimumUserID, in: 0...Int(Int32.max))
        headerTimeout = try reader.integer("www-header-timeout", default: headerTimeout, in: 1...3600)
        keepAliveTimeout = try reader.integer("www-keep-alive-timeout", default: keepAliveTimeout, in: 1...86_400)
        maxConnections = try reader.integer("www-max-connections", default: maxConnections, in: 1...1_000_000)
        bodyTimeout = try reader.integer("www-body-timeout", default: bodyTimeout, in: 1...86_400)
        maxConnectionsPerAddress = try reader.integer("www-max-connections-per-address", default: maxConnectionsPerAddress, in: 1...1_000_000)
        try readSessionOrigins(reader, file: file)
        if sslEnabled {
            let enabledLine = reader.entry("ssl-enabled")?.line
            if sslCertificate == nil {
                throw ConfigurationError(file: file.path, line: enabledLine,
                                         "ssl-enabled=1 needs ssl-certificate=PATH (a PEM certificate chain)")
            }
            if sslCertificateKey == nil {
                throw ConfigurationError(file: file.path, line: enabledLine,
                                         "ssl-enabled=1 needs ssl-certificate-key=PATH (a PEM private key)")
            }
        }
    }

    /// `www-session-domain`, `www-main-host` and the session certificate, checked together.
    private mutating func readSessionOrigins(_ reader: ConfigReader, file: ConfigFile) throws(ConfigurationError) {
        func refuse(_ key: String, _ message: String) -> ConfigurationError {
            ConfigurationError(file: file.path, line: reader.entry(key)?.line, message)
        }
        secureCookies = try reader.boolean("www-secure-cookies", default: sslEnabled)
        if let domain = try reader.string("www-session-domain")?.lowercased() {
            let name = domain.hasSuffix(".") ? String(domain.dropLast()) : domain
            // A session's host is 32 hex digits and a dot in front of the domain: 253 bytes at most.
            guard Self.isDNSName(name), name.utf8.count <= 253 - 33 else {
                throw refuse("www-session-domain", "'www-session-domain' takes a DNS name like sessions.example.com (no scheme, port or "
                             + "wildcard; at most 220 characters), found '\(domain)'")
            }
            sessionDomain = name
        }
        if let host = try reader.string("www-main-host")?.lowercased() {
            guard Self.isDNSName(host) || Self.isIPv4(host) else {
                throw refuse("www-main-host", "'www-main-host' takes the host name users reach Drover's own pages by, like drover.example.com "
                             + "(no scheme or port), found '\(host)'")
            }
            mainHost = host
        }
        sslSessionCertificate = try reader.path("ssl-session-certificate")
        sslSessionCertificateKey = try reader.path("ssl-session-certificate-key")
        if let domain = sessionDomain {
            if mainHost == nil, domain == "localhost" { mainHost = "localhost" }
            // A main host inside the session domain is the same-site layout README advises against,
            // protected all the same (the `__Host-` cookie, fetch metadata, the tickets' state).
            guard mainHost != nil else {
                throw refuse("www-session-domain", "www-session-domain=\(domain) needs www-main-host=NAME, the name users reach Drover's own "
                             + "pages by (the front load balancer's), where a session's origin sends them to sign in")
            }
            // Over http any sibling origin can set Drover's cookies (no `__Host-` prefix there).
            guard secureCookies || domain == "localhost" else {
                throw refuse("www-session-domain", "www-session-domain=\(domain) needs https, so that no session's page can set Drover's cookies "
                             + "(they are __Host- cookies, which browsers take over https alone): set ssl-enabled=1, or www-secure-cookies=1 "
                             + "behind a TLS terminator")
            }
        }
        if (sslSessionCertificate == nil) != (sslSessionCertificateKey == nil) {
            throw refuse(sslSessionCertificate == nil ? "ssl-session-certificate-key" : "ssl-session-certificate",
                         "ssl-session-certificate and ssl-session-certificate-key go together (the wildcard certificate for the sessions' "
                         + "origins and its key); set both or neither")
        }
        if sslSessionCertificate != nil, sessionDomain == nil || !sslEnabled {
            throw refuse("ssl-session-certificate", "ssl-session-certificate is the certificate for www-session-domain's origins over https: "
                         + "it needs ssl-enabled=1 and www-session-domain")
        }
    }

    /// What `drover verify` and the admin dashboard warn of when users sign in with PAM and
    /// sessions share Drover's origin (no `www-session-domain`); nil otherwise.
    public var sharedOriginWarning: String? {
        guard sessionDomain == nil, !authNone else { return nil }
        return "session origins: www-session-domain is unset, so sessions are served on Drover's own origin, where a session's pages "
            + "(a notebook's output, an HTML file, an extension) can act on Drover's pages and the user's other sessions; "
            + "set www-session-domain and www-main-host (README, \"Session origins\")"
    }

    /// Whether `name` is a DNS name: dot-separated labels of letters, digits and hyphens, each
    /// 1 to 63 long and neither starting nor ending with a hyphen.
    public static func isDNSName(_ name: String) -> Bool {
        let labels = name.split(separator: ".", omittingEmptySubsequences: false)
        return !name.isEmpty && labels.allSatisfy { label in
            (1...63).contains(label.utf8.count) && label.first != "-" && label.last != "-"
                && label.utf8.allSatisfy { ($0 >= 97 && $0 <= 122) || ($0 >= 48 && $0 <= 57) || $0 == 45 || ($0 >= 65 && $0 <= 90) }
        }
    }

    static func isIPv4(_ text: String) -> Bool {
        var address = in_addr()
        return inet_pton(AF_INET, text, &address) == 1
    }

    /// The addresses and networks of `key` (commas or spaces between them), or none.
    static func addressRanges(_ key: String, _ reader: ConfigReader) throws(ConfigurationError) -> [AddressRange] {
        guard let text = try reader.string(key) else { return [] }
        var ranges: [AddressRange] = []
        for item in text.split(whereSeparator: { $0 == "," || $0 == " " }) {
            guard let range = AddressRange(String(item)) else {
                throw ConfigurationError(file: reader.file.path, line: reader.entry(key)?.line,
                                         "'\(key)' takes IP addresses or networks like 10.0.0.5 or 10.0.0.0/8, found '\(item)'")
            }
            ranges.append(range)
        }
        return ranges
    }

    /// Whether `address` is this machine's loopback only (127.0.0.0/8, ::1, localhost).
    public static func isLoopback(_ address: String) -> Bool {
        let address = address.lowercased()
        if address == "localhost" || address == "::1" || address == "[::1]" { return true }
        var ipv4 = in_addr()
        return inet_pton(AF_INET, address, &ipv4) == 1 && address.hasPrefix("127.")
    }

    public init(parsing text: String, path: String, baseDirectory: String) throws(ConfigurationError) {
        try self.init(file: ConfigFile(parsing: text, path: path), baseDirectory: baseDirectory)
    }
}
