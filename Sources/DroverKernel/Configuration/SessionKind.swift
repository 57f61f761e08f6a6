import Foundation

/// One kind of session a user may start: a program (JupyterLab, Jupyter Notebook, the demo …),
/// how Drover reaches it, and who may start it. Read from `kinds/<name>.conf` in the
/// configuration directory (README, "Session kinds"); `session-command` in `rserver.conf` is the
/// kind named `default`.
///
/// A kind file is `key=value` lines like every other file:
/// ```
/// label=JupyterLab
/// command=["/opt/jupyter/bin/jupyter-lab", "--no-browser", "--ServerApp.sock={socket}", "--ServerApp.base_url={base-path}"]
/// endpoint=unix-socket
/// ready-path={base-path}api/status
/// start-timeout=60
/// base-path=keep
/// groups=analysts, staff
/// env.JUPYTER_CONFIG_DIR={state-dir}/jupyter
/// memory-limit=4G
/// cpu-limit=2
/// activity=jupyter
/// ```
public struct SessionKind: Sendable, Equatable, Codable {
    /// How droverd reaches the program.
    public enum Endpoint: String, Sendable, Codable, CaseIterable {
        /// A listening Unix socket the guard binds in a folder only droverd can enter, handed to
        /// the program as descriptor 3 (blocking), as Drover's own sessions expect.
        case inherited
        /// The same socket, by systemd's socket-activation convention: descriptor 3,
        /// `LISTEN_FDS=1`, `LISTEN_PID` the program's pid, the descriptor non-blocking.
        case systemd = "systemd-socket"
        /// A Unix socket the program binds itself at `{socket}`, in a per-session folder of the
        /// user's in a tree other users cannot list; droverd connects with the user's rights and
        /// checks the listener's credentials before it sends a byte.
        case unixSocket = "unix-socket"
        /// A loopback TCP port `{port}` Drover picks; on every connection droverd checks that the
        /// listener is a process of the session before it sends a byte.
        case tcpPort = "tcp-port"
    }

    /// Whether the program is sent `/s/<id>/…` as it is, or with `/s/<id>` taken off.
    public enum BasePath: String, Sendable, Codable {
        case keep, strip
    }

    /// What counts as activity for the idle timeout (`session-timeout-minutes`).
    public enum ActivitySource: String, Sendable, Codable, CaseIterable {
        /// Every request the client sends, and every WebSocket frame it sends.
        case client
        /// Jupyter's own view of its work (`api/kernels`, `api/terminals`): a kernel busy
        /// running code counts as activity for as long as it runs, and so do the kernels' and
        /// terminals' last activity and the client's writes (a save, a kernel started). The
        /// client's reads do not: an open Lab polls the server every few seconds.
        case jupyter
    }

    /// The placeholders a kind's command, environment and ready path may hold.
    public enum Placeholder: String, CaseIterable, Sendable {
        case sessionID = "session-id"
        /// The session's user name.
        case user
        /// `/s/<id>/`.
        case basePath = "base-path"
        /// The socket the program binds (`unix-socket` only).
        case socket
        /// The loopback port the program listens on (`tcp-port` only).
        case port
        /// `~/.local/share/drover/sessions/<id>`: the session's saved state, in the user's home.
        case stateDirectory = "state-dir"
        /// A file (mode 0600, the user's) holding the session's secret, for a program that
        /// checks one (`secret-header`).
        case secretFile = "secret-file"

        public var token: String { "{\(rawValue)}" }
    }

    public static let directoryName = "kinds"
    /// The kind `session-command` defines.
    public static let legacyName = SessionKindNames.legacy
    static let keys: Set<String> = ["label", "command", "endpoint", "ready-path", "start-timeout", "base-path", "groups",
                                    "secret-header", "trust-local-users", "memory-limit", "cpu-limit", "activity"]

    public var name: String
    public var label: String
    /// The argument vector, placeholders not yet filled in. Never a shell line, except for
    /// the legacy `session-command` (``shellLine``).
    public var command: [String]
    /// `session-command`: a line for `/bin/sh -c`, run as before (no login shell).
    public var shellLine: String?
    public var endpoint: Endpoint
    /// The path of the readiness check (placeholders filled in at start).
    public var readyPath: String
    /// Seconds the program has to answer its readiness check.
    public var startTimeout: Int
    public var basePath: BasePath
    /// Unix groups whose members may start it; empty: everyone.
    public var groups: [String]
    /// Extra environment (placeholders filled in at start), in the file's order.
    public var environment: [EnvironmentEntry]
    /// The header droverd adds to each request, with the session's secret as its value.
    public var secretHeader: String?
    /// The memory and CPU a session of this kind may take (its cgroup's limits); none by default.
    public var limits: SessionLimits = SessionLimits()
    /// What keeps a session of this kind from its idle timeout.
    public var activity: ActivitySource = .client
    /// The file it was read from (for messages).
    public var file: String

    public struct EnvironmentEntry: Sendable, Equatable, Codable {
        public var name: String
        public var value: String
    }

    /// Whether the program checks a per-session secret that droverd injects.
    public var usesSecret: Bool { secretHeader != nil }

    /// The kind `session-command` defines: the program Drover's own sessions are (it serves
    /// HTTP on descriptor 3).
    public static func legacy(command: String, file: String) -> SessionKind {
        SessionKind(name: legacyName, label: "Default session", command: [], shellLine: command, endpoint: .inherited,
                    readyPath: Placeholder.basePath.token, startTimeout: 30, basePath: .keep, groups: [], environment: [],
                    secretHeader: nil, file: file)
    }

    public init(name: String, label: String, command: [String], shellLine: String? = nil, endpoint: Endpoint, readyPath: String,
                startTimeout: Int, basePath: BasePath, groups: [String], environment: [EnvironmentEntry],
                secretHeader: String?, file: String) {
        self.name = name
        self.label = label
        self.command = command
        self.shellLine = shellLine
        self.endpoint = endpoint
        self.readyPath = readyPath
        self.startTimeout = startTimeout
        self.basePath = basePath
        self.groups = groups
        self.environment = environment
        self.secretHeader = secretHeader
        self.file = file
    }

    /// Whether `name` can name a kind: lower-case letters, digits and dashes, a letter first, at
    /// most 32 characters (it appears in file names, metrics labels and the registry).
    public static func isValidName(_ name: String) -> Bool {
        guard let first = name.unicodeScalars.first, ("a"..."z").contains(first), name.count <= 32 else { return false }
        return name.unicodeScalars.allSatisfy { ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "-" }
    }

    /// Reads `kinds/<name>.conf`.
    public init(file: ConfigFile, name: String, baseDirectory: String) throws(ConfigurationError) {
        let reader = ConfigReader(file, baseDirectory: baseDirectory)
        for entry in file.entries where !Self.keys.contains(entry.key) && !entry.key.hasPrefix("env.") {
            throw reader.error(entry, "unknown key '\(entry.key)'; a kind takes \(Self.keys.sorted().joined(separator: ", ")) and env.NAME=value")
        }
        self.name = name
        self.file = file.path
        shellLine = nil
        label = try reader.string("label") ?? name

        guard let commandEntry = file.entries.first(where: { $0.key == "command" }) else {
            throw ConfigurationError(file: file.path, #"has no command; add a line like command=["/usr/local/bin/jupyter-lab", "--ServerApp.sock={socket}"]"#)
        }
        guard let parsed = try? JSONDecoder().decode([String].self, from: Data(commandEntry.value.utf8)), !parsed.isEmpty,
              parsed.allSatisfy({ !$0.isEmpty && !$0.contains("\0") }) else {
            throw reader.error(commandEntry, #"'command' is the program and its arguments as a JSON array of non-empty strings, like ["/usr/bin/streamlit", "run", "app.py", "--server.port={port}"], not a shell line"#)
        }
        command = parsed

        guard let endpointEntry = reader.entry("endpoint") else {
            throw ConfigurationError(file: file.path, "has no endpoint; add endpoint=unix-socket (the program binds {socket}), tcp-port (it listens on 127.0.0.1:{port}), "
                + "inherited (it serves on descriptor 3) or systemd-socket (descriptor 3 by LISTEN_FDS)")
        }
        guard let endpoint = Endpoint(rawValue: endpointEntry.value) else {
            throw reader.error(endpointEntry, "'endpoint' must be one of \(Endpoint.allCases.map(\.rawValue).joined(separator: ", ")), found '\(endpointEntry.value)'")
        }
        self.endpoint = endpoint
        readyPath = try reader.string("ready-path") ?? Placeholder.basePath.token
        startTimeout = try reader.integer("start-timeout", default: 30, in: 1...3600)
        if let entry = reader.entry("base-path") {
            guard let value = BasePath(rawValue: entry.value) else {
                throw reader.error(entry, "'base-path' must be keep (the program is sent /s/<id>/… and serves under it) or strip (it is sent /…), found '\(entry.value)'")
            }
            basePath = value
        } else {
            basePath = .keep
        }
        groups = (try reader.string("groups")).map { $0.split(whereSeparator: { $0 == "," || $0 == " " }).map(String.init) } ?? []
        secretHeader = try reader.string("secret-header")
        limits = SessionLimits()
        if let entry = reader.entry("memory-limit") {
            guard let bytes = SessionLimits.parseBytes(entry.value) else {
                throw reader.error(entry, "'memory-limit' is a size like 512M, 4G or 1.5G (K, M, G, T are powers of 1024), found '\(entry.value)'")
            }
            guard bytes >= SessionLimits.minimumMemory else {
                throw reader.error(entry, "'memory-limit' must be at least 32M (no program starts in less), found '\(entry.value)'")
            }
            limits.memoryBytes = bytes
        }
        if let entry = reader.entry("cpu-limit") {
            guard let cpus = Double(entry.value), cpus.isFinite, cpus >= 0.01, cpus <= 4096 else {
                throw reader.error(entry, "'cpu-limit' is a number of CPUs from 0.01 to 4096, like 0.5 or 2, found '\(entry.value)'")
            }
            limits.cpus = cpus
        }
        if let entry = reader.entry("activity") {
            guard let source = ActivitySource(rawValue: entry.value) else {
                throw reader.error(entry, "'activity' must be one of \(ActivitySource.allCases.map(\.rawValue).joined(separator: ", ")) (what keeps a session from session-timeout-minutes), found '\(entry.value)'")
            }
            activity = source
        } else {
            activity = .client
        }
        environment = file.entries.filter { $0.key.hasPrefix("env.") }.map { EnvironmentEntry(name: String($0.key.dropFirst(4)), value: $0.value) }

        // Every placeholder is one this kind can fill in.
        var uses = Set<Placeholder>()
        func scan(_ text: String, _ entry: ConfigFile.Entry) throws(ConfigurationError) {
            var rest = Substring(text)
            while let open = rest.firstIndex(of: "{") {
                guard let close = rest[open...].firstIndex(of: "}") else {
                    throw reader.error(entry, "'\(entry.key)' has a '{' without its '}'; placeholders are \(Self.placeholderList)")
                }
                let name = String(rest[rest.index(after: open)..<close])
                guard let placeholder = Placeholder(rawValue: name) else {
                    throw reader.error(entry, "unknown placeholder '{\(name)}' in '\(entry.key)'; the placeholders are \(Self.placeholderList)")
                }
                uses.insert(placeholder)
                rest = rest[rest.index(after: close)...]
            }
        }
        for argument in command { try scan(argument, commandEntry) }
        for entry in file.entries where entry.key.hasPrefix("env.") {
            let variable = String(entry.key.dropFirst(4))
            guard !variable.isEmpty, variable.unicodeScalars.allSatisfy({ $0 == "_" || ("A"..."Z").contains($0) || ("a"..."z").contains($0) || ("0"..."9").contains($0) }),
                  !("0"..."9").contains(variable.unicodeScalars.first!) else {
                throw reader.error(entry, "'\(entry.key)' does not name an environment variable; write env.NAME=value with NAME of letters, digits and _")
            }
            guard !variable.hasPrefix("DROVER_"), !["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"].contains(variable) else {
                throw reader.error(entry, "'\(entry.key)' is set by Drover itself; remove the line")
            }
            try scan(entry.value, entry)
        }
        if let entry = reader.entry("ready-path") {
            let used = uses
            try scan(entry.value, entry)
            uses = used
            guard entry.value.hasPrefix("/") || entry.value.hasPrefix(Placeholder.basePath.token) else {
                throw reader.error(entry, "'ready-path' is a path on the program's server, like {base-path}api/status or /healthz")
            }
            for placeholder in [Placeholder.secretFile, .socket, .port, .stateDirectory] where entry.value.contains(placeholder.token) {
                throw reader.error(entry, "'ready-path' may hold {base-path} and {session-id}, not \(placeholder.token)")
            }
        }

        // Combinations that cannot work.
        switch endpoint {
        case .unixSocket where !uses.contains(.socket):
            throw reader.error(endpointEntry, "endpoint=unix-socket needs {socket} in the command or an env.NAME line: that is where the program must bind")
        case .tcpPort where !uses.contains(.port):
            throw reader.error(endpointEntry, "endpoint=tcp-port needs {port} in the command or an env.NAME line: that is the port the program must listen on")
        case .inherited, .systemd, .tcpPort:
            if uses.contains(.socket) {
                throw reader.error(endpointEntry, "{socket} is only for endpoint=unix-socket; with endpoint=\(endpoint.rawValue) remove it")
            }
            if endpoint != .tcpPort, uses.contains(.port) {
                throw reader.error(endpointEntry, "{port} is only for endpoint=tcp-port; with endpoint=\(endpoint.rawValue) remove it")
            }
        case .unixSocket:
            if uses.contains(.port) {
                throw reader.error(endpointEntry, "{port} is only for endpoint=tcp-port; with endpoint=unix-socket remove it")
            }
        }
        if let entry = reader.entry("secret-header") {
            guard uses.contains(.secretFile) else {
                throw reader.error(entry, "'\(entry.key)' needs {secret-file} in the command or an env.NAME line, so that the program can read the secret it checks")
            }
            guard endpoint == .tcpPort else {
                throw reader.error(entry, "'\(entry.key)' is for endpoint=tcp-port, where other local users can reach the port; with endpoint=\(endpoint.rawValue) only droverd reaches the program: remove it")
            }
            guard Self.isToken(entry.value) else {
                throw reader.error(entry, "'\(entry.key)' must be a header name (letters, digits, - and _), found '\(entry.value)'")
            }
        } else if uses.contains(.secretFile) {
            throw ConfigurationError(file: file.path, "uses {secret-file} but has no secret-header=NAME, so droverd would not send the secret")
        } else if endpoint == .tcpPort, !(try reader.boolean("trust-local-users", default: false)) {
            // Every local user can connect to a loopback port; only a secret keeps them out.
            throw reader.error(endpointEntry, "endpoint=tcp-port lets every local user of the node connect to the session's port: give the program a secret "
                + "it checks (secret-header=NAME and {secret-file}), or, on nodes where users have no shell, say trust-local-users=1")
        }
        if let header = secretHeader?.lowercased(), ["authorization", "cookie", "host", "content-length", "transfer-encoding", "connection"].contains(header) {
            throw ConfigurationError(file: file.path, "secret-header=\(secretHeader!) would replace a header the client or the proxy needs; pick a header of the program's own (a token header)")
        }
    }

    static var placeholderList: String { Placeholder.allCases.map(\.token).joined(separator: ", ") }

    static func isToken(_ text: String) -> Bool {
        !text.isEmpty && text.unicodeScalars.allSatisfy { $0 == "-" || $0 == "_" || ("A"..."Z").contains($0) || ("a"..."z").contains($0) || ("0"..."9").contains($0) }
    }

    /// `text` with its placeholders filled in from `values`.
    public static func fill(_ text: String, _ values: [Placeholder: String]) -> String {
        var result = text
        for (placeholder, value) in values { result = result.replacingOccurrences(of: placeholder.token, with: value) }
        return result
    }
}

/// Every kind in a configuration directory.
public struct SessionKinds: Sendable, Equatable {
    /// By name, sorted.
    public var kinds: [SessionKind]
    /// The kind `POST /api/sessions` starts when the body names none.
    public var defaultKind: String?

    public init(kinds: [SessionKind], defaultKind: String?) {
        self.kinds = kinds.sorted { $0.name < $1.name }
        self.defaultKind = defaultKind
    }

    public subscript(name: String) -> SessionKind? { kinds.first { $0.name == name } }

    public var names: [String] { kinds.map(\.name) }

    /// Reads `kinds/*.conf` and `session-command`.
    /// - Parameter settings: receives one line per setting, for the configuration's fingerprint.
    static func load(directory: String, server: ServerConfiguration, settings: inout [String]) throws(ConfigurationError) -> SessionKinds {
        var kinds: [SessionKind] = []
        let serverFile = ConfigReader.resolve(ServerConfiguration.fileName, against: directory)
        if let command = server.sessionCommand {
            kinds.append(.legacy(command: command, file: serverFile))
        }
        let folder = ConfigReader.resolve(SessionKind.directoryName, against: directory)
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).sorted()
        for fileName in names where !fileName.hasPrefix(".") {
            let path = folder + "/" + fileName
            guard fileName.hasSuffix(".conf") else {
                throw ConfigurationError(file: path, "kind files are named NAME.conf; rename it or move it out of \(folder)")
            }
            let name = String(fileName.dropLast(5))
            guard SessionKind.isValidName(name) else {
                throw ConfigurationError(file: path, "'\(name)' cannot name a kind: use lower-case letters, digits and dashes, a letter first, at most 32 characters")
            }
            guard name != SessionKind.legacyName || server.sessionCommand == nil else {
                throw ConfigurationError(file: path, "the kind 'default' is session-command in \(serverFile); remove one of the two")
            }
            guard let text = try DroverConfiguration.readFile(path) else { continue }
            let file = try ConfigFile(parsing: text, path: path)
            for entry in file.entries { settings.append("kinds/\(fileName)\t\(entry.key)\t\(entry.value)") }
            kinds.append(try SessionKind(file: file, name: name, baseDirectory: directory))
        }
        var defaultKind: String?
        if let chosen = server.defaultSessionKind {
            guard kinds.contains(where: { $0.name == chosen }) else {
                let known = kinds.isEmpty ? "none is configured" : "the kinds are " + kinds.map(\.name).sorted().joined(separator: ", ")
                throw ConfigurationError(file: serverFile, "default-session-kind=\(chosen) names no kind (\(known)); add \(folder)/\(chosen).conf or pick another")
            }
            defaultKind = chosen
        } else if server.sessionCommand != nil {
            defaultKind = SessionKind.legacyName
        } else if kinds.count == 1 {
            defaultKind = kinds[0].name
        }
        return SessionKinds(kinds: kinds, defaultKind: defaultKind)
    }
}
