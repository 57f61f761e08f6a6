import ArgumentParser
import DroverCluster
import DroverKernel
import Foundation

struct DeleteNode: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "delete-node",
        abstract: "Remove a stopped node from the cluster.",
        discussion: "Refuses a node that is Online and fresh: stop it first. The row goes to Deleting, the other nodes are told, then it is removed.")

    @OptionGroup var options: ConfigOptions
    @Argument(help: "The node's ID, from list-nodes.") var id: Int64

    func run() async throws {
        let id = id
        try await RegistryAccess.using(options) { access in
            let store = access.store
            let interval = access.configuration.effectiveLoadBalancer.heartbeatInterval
            let read = try await store.nodesWithClock()
            let (nodes, now) = (read.nodes, read.now)
            guard let node = nodes.first(where: { $0.id == id }) else {
                throw CommandFailure("no node with ID \(id); see drover list-nodes", status: 1)
            }
            if node.isServing(now: now, heartbeatInterval: interval) {
                throw CommandFailure("node \(id) (\(node.host):\(node.port)) is \(node.status.rawValue), last seen \(Int(now.timeIntervalSince(node.lastSeen))) s ago; "
                     + "stop droverd on it first, or wait until it shows Unreachable", status: 1)
            }
            _ = try await store.setNodeStatus(.deleting, node: id)
            await tellPeers(.nodeDeleted(.init(id: id)), access: access, nodes: nodes.filter { $0.id != id }, now: now)
            _ = try await store.deleteNode(id)
        }
        print("Node \(id) deleted.")
    }
}

struct ResetCluster: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reset-cluster",
        abstract: "Clear the cluster definition; the next node to start (or reload) defines it again.")

    @OptionGroup var options: ConfigOptions

    func run() async throws {
        try await RegistryAccess.using(options) { access in
            try await access.store.resetCluster()
        }
        print("Cluster definition cleared. The next node that starts or reloads defines it again.")
    }
}

/// Tells the nodes that are up about a change made from the command line, with the cluster's
/// key; a node that cannot be told notices at its next heartbeat.
func tellPeers(_ notice: PeerNotice, access: RegistryAccess, nodes: [NodeRecord], now: Date) async {
    guard let key = access.key else { return }
    let lb = access.configuration.effectiveLoadBalancer
    let clusterProtocol = (try? await access.store.cluster())?.protocol
        ?? ClusterProtocol(sslEnabled: access.configuration.server.sslEnabled, verifySSLCerts: lb.verifySSLCerts)
    guard let client = try? NodeClient(key: key, protocol: clusterProtocol, timeoutSeconds: lb.timeout, caFile: lb.sslCAFile) else { return }
    let peers = nodes.filter { $0.isServing(now: now, heartbeatInterval: lb.heartbeatInterval) }
    for (node, reason) in await client.tell(peers, notice) {
        FileHandle.standardError.write(Data("drover: warning: could not tell node \(node.id) (\(reason)); it will notice at its next heartbeat\n".utf8))
    }
}

/// The droverd process running with this configuration, found by its pid file.
enum LocalDaemon {
    static func pid(_ config: DroverConfiguration) -> pid_t? {
        guard let text = try? String(contentsOfFile: config.pidFile, encoding: .utf8),
              let pid = pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines)), pid > 0, kill(pid, 0) == 0 else { return nil }
        // A stale pid file may name an unrelated process that reused the pid.
        let command = (try? String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8)) ?? ""
        return command.contains("droverd") ? pid : nil
    }

    /// Sends SIGHUP (reload); true when a daemon was there to receive it.
    static func reload(_ config: DroverConfiguration) -> Bool {
        guard let pid = pid(config) else { return false }
        return kill(pid, SIGHUP) == 0
    }
}

struct Reload: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Re-read load-balancer in the running daemon (balancer, timeout, diagnostics) and say what it did.",
        discussion: "Exits 1 with the daemon's reason when it refused the file (it keeps its running settings then).")

    @OptionGroup var options: ConfigOptions

    func run() async throws {
        let config = try options.load()
        guard LocalDaemon.pid(config) != nil else {
            throw CommandFailure("no droverd is running with \(config.directory) (no live pid in \(config.pidFile))", status: 1)
        }
        // Asked over the node's own signed API, not by SIGHUP, so the daemon's verdict comes back.
        let answer = try await LocalNode(config).call(.reload) { refusal in
            CommandFailure("droverd refused \(config.directory)/load-balancer and keeps its running settings: \(refusal.message)", status: 1)
        }
        print("Reloaded \(config.directory)/load-balancer: \(answer.settings)")
    }
}

struct Offline: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Stop placing new sessions on this node; its existing sessions keep running.")

    @OptionGroup var options: ConfigOptions

    func run() throws {
        let config = try options.load()
        do {
            try FileManager.default.createDirectory(atPath: config.server.dataDirectory, withIntermediateDirectories: true)
            try Data("offline\n".utf8).write(to: URL(fileURLWithPath: config.offlineFlagFile))
        } catch {
            throw CommandFailure("cannot write \(config.offlineFlagFile) (\(error.localizedDescription))", status: 1)
        }
        let applied = LocalDaemon.reload(config)
        print("This node is in offline mode: it serves its sessions but takes no new ones."
              + (applied ? "" : " (droverd is not running; this applies when it starts.)"))
    }
}

struct Online: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Undo 'offline': take new sessions again.")

    @OptionGroup var options: ConfigOptions

    func run() throws {
        let config = try options.load()
        if unlink(config.offlineFlagFile) != 0, errno != ENOENT {
            throw CommandFailure("cannot remove \(config.offlineFlagFile) (\(String(cString: strerror(errno))))", status: 1)
        }
        let applied = LocalDaemon.reload(config)
        print("This node takes new sessions again." + (applied ? "" : " (droverd is not running; this applies when it starts.)"))
    }
}

struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the load-balancer status of every node, from this node.")

    @OptionGroup var options: ConfigOptions

    func run() async throws {
        let node = try LocalNode(try options.load())
        let response = try await node.get(NodeEndpoint.status)
        guard response.status == 200 else {
            throw CommandFailure("the node at \(node.host):\(node.config.server.wwwPort) answered \(response.status): \(response.text)", status: 1)
        }
        print(response.text, terminator: "")
    }
}

struct RevokeUser: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "revoke-user",
        abstract: "Sign a user out everywhere: every sign-in cookie issued to them until now stops working on every node.",
        discussion: "The revocation is kept in the registry for as long as those cookies would have lasted (12 hours); the nodes that are up are told at once (the others read it within two seconds of starting). Open WebSocket tunnels of those cookies are closed. The user can sign in again.")

    @OptionGroup var options: ConfigOptions
    @Argument(help: "The user name, as signed in.") var user: String

    func run() async throws {
        let user = user
        guard !user.isEmpty, !user.contains(where: \.isNewline) else { throw CommandFailure("give the user name, e.g. drover revoke-user alice", status: 2) }
        try await RegistryAccess.using(options) { access in
            let store = access.store
            let read = try await store.nodesWithClock()
            let now = read.now.timeIntervalSince1970
            try await store.revoke(CookieRevocation(cookieDigest: nil, username: user, issuedUpTo: now, expiresAt: now + 12 * 3600), now: read.now)
            try await store.appendAudit([AuditRecord(actor: .admin(Operator.name), action: "user-revoke", target: user, username: user, node: nil,
                                                     reason: "every sign-in issued until now")])
            await tellPeers(.revocationsChanged, access: access, nodes: read.nodes, now: read.now)
        }
        print("Every sign-in of \(user) issued until now is revoked on every node.")
    }
}
