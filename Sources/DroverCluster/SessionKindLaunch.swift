public import DroverKernel
import DroverSessionProtocol
import Foundation

/// How a session of one kind is started on this node: its guard's spec, and the endpoint
/// droverd reaches it at (README, "Session kinds").
struct SessionLaunchPlan: Sendable {
    var spec: SessionGuardProtocol.Spec
    var endpoint: SessionEndpoint
    /// The readiness check's path, placeholders filled in.
    var readyPath: String
    var startTimeout: Double
}

extension SessionManager {
    /// The kinds `username` may start: offered by this node or another it knows online, with
    /// their groups checked.
    public func kinds(for username: String) async -> [SessionKind] {
        let offered = Set(runtime.offeredKinds).union(runtime.view.filter { $0.status == .online }.flatMap(\.kinds))
        let kinds = runtime.configuration.kinds.kinds.filter { offered.contains($0.name) }
        guard kinds.contains(where: { !$0.groups.isEmpty }) else { return kinds }
        let groups = await SessionProcess.lookUpGroups(username)
        return kinds.filter { $0.groups.isEmpty || !Set($0.groups).isDisjoint(with: groups) }
    }

    /// The kind a start of `username` gets: `asked`, else the configured default. An unknown
    /// kind is 400 naming the kinds; one the user's groups may not use is 403.
    public func admitKind(_ asked: String?, for username: String) async throws -> SessionKind {
        let configured = runtime.configuration.kinds
        if configured.kinds.isEmpty {
            // The operator's to fix, not the client's.
            throw SessionError.launchFailed("no session kind is configured on this node; add kinds/NAME.conf or session-command to rserver.conf")
        }
        guard let name = asked ?? configured.defaultKind else {
            throw SessionError.unknownKind("name a kind: {\"kind\": …} with one of \(configured.names.joined(separator: ", ")) (there is no default-session-kind)")
        }
        guard let kind = configured[name] else {
            throw SessionError.unknownKind("there is no session kind '\(Self.shown(name))'; the kinds are \(configured.names.joined(separator: ", "))")
        }
        try await checkGroups(kind, username)
        return kind
    }

    func checkGroups(_ kind: SessionKind, _ username: String) async throws {
        guard !kind.groups.isEmpty else { return }
        let groups = await SessionProcess.lookUpGroups(username)
        guard !Set(kind.groups).isDisjoint(with: groups) else {
            throw SessionError.kindForbidden("\(username) may not start '\(kind.name)' sessions: only members of \(kind.groups.joined(separator: ", ")) may")
        }
    }

    /// A kind name from a client or the registry, cut and escaped for a message.
    static func shown(_ name: String) -> String {
        String(name.prefix(40).unicodeScalars.map { $0.value >= 0x20 && $0.value < 0x7f ? String($0) : "?" }.joined())
    }

    /// The guard's spec and the endpoint for session `id` of `kind`, run as `account`.
    func launchPlan(_ id: String, kind: SessionKind, account: SessionProcess.Account) throws -> SessionLaunchPlan {
        let config = runtime.configuration
        let stateDirectory = account.stateDirectory(id)
        let basePath = "/s/\(id)/"
        let guardSocket = config.server.dataDirectory + "/sessions/" + id + ".sock"
        let runDirectory = config.sessionRunDirectory + "/" + id
        var values: [SessionKind.Placeholder: String] = [.sessionID: id, .user: account.name, .basePath: basePath, .stateDirectory: stateDirectory]
        var environment = [
            "HOME": account.home, "USER": account.name, "LOGNAME": account.name, "SHELL": account.shell,
            "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": ProcessInfo.processInfo.environment["LANG"] ?? "C.UTF-8",
            "DROVER_SESSION_ID": id, "DROVER_SESSION_STATE_DIR": stateDirectory, "DROVER_SESSION_BASE_PATH": basePath,
            "DROVER_SESSION_KIND": kind.name,
        ]
        var address: SessionEndpoint.Address
        var usesRunDirectory = false
        switch kind.endpoint {
        case .inherited, .systemd:
            address = .guardSocket(guardSocket)
            environment["DROVER_SESSION_SOCKET"] = guardSocket
            environment["DROVER_SESSION_LISTEN_FD"] = "3"
        case .unixSocket:
            let socket = runDirectory + "/" + SessionGuardProtocol.Spec.socketFileName
            values[.socket] = socket
            address = .userSocket(socket)
            usesRunDirectory = true
        case .tcpPort:
            let port = try Self.freeLoopbackPort()
            values[.port] = String(port)
            address = .loopbackPort(port)
        }
        var secret: SessionEndpoint.Secret?
        if kind.usesSecret {
            usesRunDirectory = true
            values[.secretFile] = runDirectory + "/" + SessionGuardProtocol.Spec.secretFileName
            // Derived, so every node can inject it without storing it: a hop only splices bytes.
            secret = kind.secretHeader.map { SessionEndpoint.Secret(header: $0, value: sessionSecret(id)) }
        }
        for entry in kind.environment { environment[entry.name] = SessionKind.fill(entry.value, values) }
        let timeoutInterval = config.fileLocks.timeoutInterval
        var spec = SessionGuardProtocol.Spec(
            sessionID: id, configDirectory: config.directory, lockPath: lockDirectory + "/" + id + ".lock",
            lockWait: Double(timeoutInterval) + 5, command: kind.shellLine.map { Self.resolveCommand($0, against: config.directory) } ?? "",
            userName: account.name, uid: account.uid, gid: account.gid,
            home: account.home, socketPath: guardSocket, environment: environment, stopGrace: suspendGrace,
            droverdSilence: SessionGuardProtocol.droverdSilenceBound(timeoutInterval: timeoutInterval),
            testMode: ProcessInfo.processInfo.environment["DROVER_TEST_SESSION_GUARD"].flatMap(SessionGuardProtocol.TestMode.init))
        if kind.shellLine == nil {
            var arguments = kind.command.map { SessionKind.fill($0, values) }
            arguments[0] = Self.resolveProgram(arguments[0], against: config.directory)
            spec.arguments = arguments
            spec.endpoint = kind.endpoint
            spec.loginShell = account.loginShell
            spec.runDirectory = usesRunDirectory ? runDirectory : nil
            spec.secret = secret?.value
        }
        if !kind.limits.isEmpty {
            spec.limits = kind.limits
        }
        spec.locks = SessionGuardProtocol.LockSettings(config.fileLocks)
        let endpoint = SessionEndpoint(address: address, uid: account.uid, gid: account.gid, cgroup: nil,
                                       strippedPrefix: kind.basePath == .strip ? "/s/\(id)" : nil, secret: secret)
        return SessionLaunchPlan(spec: spec, endpoint: endpoint, readyPath: SessionKind.fill(kind.readyPath, values),
                                 startTimeout: Double(kind.startTimeout))
    }

    /// What the node the client reached does to the requests for session `id` (of the kind its
    /// route was found with): the prefix taken off, the secret added. A hop only splices bytes,
    /// so this node does it for a session of another node too.
    public func delivery(_ id: String) -> SessionDelivery {
        guard let entry = routes.fresh(id) else { return SessionDelivery() }
        if case .local(let endpoint) = entry.route { return SessionDelivery(strippedPrefix: endpoint.strippedPrefix, secret: endpoint.secret) }
        guard let kind = runtime.configuration.kinds[entry.kind], kind.basePath == .strip || kind.usesSecret else { return SessionDelivery() }
        return SessionDelivery(strippedPrefix: kind.basePath == .strip ? "/s/\(id)" : nil,
                               secret: kind.secretHeader.map { SessionEndpoint.Secret(header: $0, value: sessionSecret(id)) })
    }

    /// The session's secret: derived from the cluster's key and its id, so no node stores it.
    func sessionSecret(_ id: String) -> String {
        runtime.key.sign(Array(id.utf8), purpose: "session-secret").hexString
    }

    /// A program named by a relative path (with a `/`) runs from the configuration directory;
    /// a bare name is looked up on the user's login `PATH`.
    static func resolveProgram(_ program: String, against directory: String) -> String {
        guard program.contains("/"), !program.hasPrefix("/") else { return program }
        return directory + "/" + program
    }

    /// A loopback port nobody listens on now. Another local user may take it before the program
    /// does; ``SessionConnector`` then refuses to talk to them.
    static func freeLoopbackPort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SessionError.launchFailed("cannot pick a port: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = in_addr_t(UInt32(0x7f00_0001).bigEndian)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard bound else { throw SessionError.launchFailed("cannot pick a port: \(String(cString: strerror(errno)))") }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}
