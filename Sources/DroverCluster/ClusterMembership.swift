public import DroverKernel
import DroverVersion
import Foundation
import Logging
import NIOHTTP1

/// A reason the node must not come online, with the exit status and the operator's fix.
public struct MembershipError: Error, CustomStringConvertible {
    public var description: String
    public var exitStatus: Int32
}

/// The node's life in the cluster: joining (the cluster check), heartbeats, reloads, leaving,
/// and telling peers about each.
public struct ClusterMembership: Sendable {
    public let runtime: NodeRuntime
    /// The Drover release this build is (the VERSION file), as every node's row records it.
    public static var currentVersion: String { DroverVersion.release }

    public init(runtime: NodeRuntime) {
        self.runtime = runtime
    }

    var logger: Logger { runtime.logger }

    // MARK: joining

    /// Registers this node and checks it against the cluster's definition (docs/ARCHITECTURE.md):
    /// no cluster defines one; a matching key hash and protocol joins; a mismatch while another
    /// node is online and fresh refuses (recording why on this node's row); a mismatch with no
    /// node online redefines the cluster.
    public func join() async throws -> NodeRecord {
        try await join(isRecheck: false)
    }

    /// - Parameter isRecheck: the second pass, after another node defined the cluster first.
    private func join(isRecheck: Bool) async throws -> NodeRecord {
        let store = runtime.store
        let config = runtime.configuration
        let address = runtime.address
        let dbNow = try await store.now()
        let skew = Date().timeIntervalSince(dbNow)
        if abs(skew) > 1 {
            runtime.events.emit(.clockSkew(seconds: skew))
        }
        let interval = runtime.loadBalancer.heartbeatInterval
        // The definition before the rows: a node registers its row before it defines the
        // cluster, so a definition seen here comes with its definer's row in the read below.
        // (Read the other way round, a node defining meanwhile was missed and its definition
        // taken for one left by a cluster with no node online, and overwritten.)
        let cluster = try await store.cluster()
        let read = try await store.nodesWithClock()
        let others = read.nodes.filter {
            !($0.host == address.host && $0.port == address.port) && $0.status == .online
                && !$0.isUnreachable(now: read.now, heartbeatInterval: interval)
        }
        // Before any row is written: a node of another machine must not write the file at all.
        if let oneMachine = OneMachineRegistry(config.registry) {
            if let refusal = oneMachine.refusal(online: others) { throw MembershipError(description: refusal, exitStatus: 2) }
            oneMachine.claim()
        }
        let keyHash = runtime.key.clusterHash
        var status: NodeStatus = runtime.offlineMode ? .offlineMode : .online
        var refusal: String?
        var define = false
        if let other = others.first(where: { !DroverVersion.acceptsPeer(protocol: $0.protocolVersion) }) {
            status = .versionMismatch
            refusal = Self.protocolRefusal(other: other)
        } else if address.ipv4 == nil {
            status = .failedToResolve
            refusal = "\(address.host) (from \(address.source.rawValue)) does not resolve to an IPv4 address; fix www-host-name in load-balancer or the name service"
        } else if let cluster {
            let keyMatches = cluster.keyHash == keyHash
            let protocolMatches = cluster.protocol == runtime.clusterProtocol
            if !(keyMatches && protocolMatches) {
                if others.isEmpty {
                    define = true
                    runtime.events.emit(.clusterRedefined(differs: keyMatches ? "protocol" : "secure cookie key"))
                } else if !keyMatches {
                    status = .invalidSecureCookieKey
                    refusal = "this node's secure cookie key (\(config.secureCookieKeyPath)) differs from the cluster's, which \(others.count) online node(s) use "
                        + "(e.g. \(others[0].host):\(others[0].port)); copy the cluster's secure-cookie-key file to this node, or stop every node to redefine the cluster"
                } else {
                    status = .protocolMismatch
                    refusal = "this node speaks \(runtime.clusterProtocol.rawValue) but the cluster uses \(cluster.protocol.rawValue) "
                        + "(ssl-enabled in rserver.conf, verify-ssl-certs in load-balancer); make them match on every node, or stop every node to redefine the cluster"
                }
            }
        } else {
            define = true
        }
        let node = try await store.registerNode(registration(status: status))
        runtime.update { $0.nodeID = node.id }
        if let refusal {
            runtime.events.emit(.nodeRefused(node: node.id, status: status.rawValue))
            throw MembershipError(description: refusal, exitStatus: 1)
        }
        if define {
            let ours = ClusterRecord(keyHash: keyHash, protocol: runtime.clusterProtocol, definedAt: try await store.now(), definedByNode: node.id)
            if cluster == nil {
                // Defined once even when two first nodes start at the same moment: the second
                // finds the first's definition and is checked against it like any later node.
                let inForce = try await store.defineClusterIfAbsent(ours)
                guard inForce.definedByNode == node.id else {
                    guard !isRecheck else { throw MembershipError(description: "the cluster was defined again while this node joined; start it again", exitStatus: 1) }
                    return try await join(isRecheck: true)
                }
            } else {
                try await store.defineCluster(ours)
            }
            runtime.events.emit(.clusterDefined(node: node.id, protocol: runtime.clusterProtocol.rawValue))
        }
        runtime.events.emit(.joined(node: node.id, address: address.endpoint, status: status.rawValue))
        // The seed lets the address keys differ between nodes; anything else should not.
        let outliers = (others + [node]).consistencyOutliers()
        if outliers.configuration.contains(node.id) { runtime.events.emit(.configurationDiffers(node: node.id, what: "configuration")) }
        if outliers.launcher.contains(node.id) { runtime.events.emit(.configurationDiffers(node: node.id, what: "launcher keys")) }
        // The first heartbeat now, so the row carries a real load from the start; and the
        // view, so the peers can be told.
        await heartbeat()
        await refreshView()
        await notifyPeers(.nodeJoined(.init(id: node.id, host: address.host, port: address.port)))
        #if DROVER_TEST_NEXT_RELEASE
        await askPeersTheirBuild()
        #endif
        return node
    }

    // MARK: running

    /// Re-reads the node rows.
    public func refreshView() async {
        do {
            let nodes = try await runtime.store.nodes()
            runtime.update { $0.view = nodes }
        } catch {
            runtime.events.emit(.nodeListUnreadable(error: "\(error)"))
        }
    }

    /// One heartbeat: `last_seen` (database clock) and load per CPU; failures are logged and
    /// the next beat tries again.
    public func heartbeat() async {
        guard let id = runtime.nodeID else { return }
        let started = ContinuousClock.now
        defer { runtime.metrics.heartbeatLatency.record(.now - started) }
        do {
            var loads = [Double](repeating: 0, count: 3)
            let cpus = Double(max(1, ProcessInfo.processInfo.activeProcessorCount))
            if getloadavg(&loads, 3) != 3 { loads = [0, 0, 0] }
            let load = LoadAverage(one: loads[0] / cpus, five: loads[1] / cpus, fifteen: loads[2] / cpus)
            if try await !runtime.store.heartbeat(node: id, load: load) {
                runtime.events.emit(.rowRemoved)
                _ = try await rejoinAfterRemoval()
            }
            runtime.registryAnswered()
            // Only what must be on time: reading the node list (the view) is the failure
            // detector's, so a registry line full of ordinary calls cannot delay the next beat.
            await applyOfflineFlag()
        } catch {
            runtime.events.emit(.heartbeatFailed(node: id, error: "\(error)"))
        }
    }

    /// Failure detection, faster than waiting for a row to go stale for three intervals: a peer
    /// whose heartbeat is more than an interval and a second late is asked for `/health-check`;
    /// if it cannot be reached it is marked unreachable in the registry, so every node, the
    /// status endpoint and `drover list-nodes` show it `Unreachable` at once and its sessions
    /// are re-placed. A node that is merely slow to write its heartbeat still answers and is
    /// left alone; its next heartbeat clears a mark.
    public func detectFailedPeers() async {
        guard let selfID = runtime.nodeID else { return }
        let interval = runtime.loadBalancer.heartbeatInterval
        let silentFor = Double(interval) + 1
        let read: NodesWithClock
        do {
            read = try await runtime.store.nodesWithClock()
        } catch {
            runtime.events.emit(.nodeListUnreadable(error: "\(error)"))
            return
        }
        runtime.registryAnswered()
        let (nodes, now) = (read.nodes, read.now)
        // The node's view of the cluster comes from this read, twice per interval.
        runtime.update { $0.view = nodes }
        runtime.loadHistory.record(nodes)
        let late = nodes.filter {
            $0.id != selfID && $0.status == .online && $0.unreachableSince == nil && now.timeIntervalSince($0.lastSeen) > silentFor
        }
        guard !late.isEmpty else { return }
        let marked = await withTaskGroup(of: Bool.self) { group in
            for peer in late {
                group.addTask {
                    // Any answer: alive, only late writing its heartbeat.
                    guard let failure = await probe(peer) else { return false }
                    do {
                        guard try await runtime.store.markUnreachable(node: peer.id, silentFor: silentFor) else { return false }
                    } catch {
                        runtime.events.emit(.markUnreachableFailed(node: peer.id, error: "\(error)"))
                        return false
                    }
                    runtime.events.emit(.peerUnreachable(node: peer.id, silentSeconds: now.timeIntervalSince(peer.lastSeen), error: failure,
                                                         address: "\(peer.host):\(peer.port)"))
                    return true
                }
            }
            return await group.contains(true)
        }
        if marked { await refreshView() }
    }

    /// Whether this node is cut off (``NodeRuntime/isCutOff``): while the registry has not
    /// answered for a heartbeat interval, asks every peer of the last view for
    /// `/health-check`, and records any answer; with no peer that could take its sessions the
    /// node never counts itself cut off (a lone node keeps its sessions through a database
    /// outage). Runs beside the failure detector, whose registry read may hang meanwhile.
    /// Logs the moments the node is cut off and reaches the cluster again.
    /// - Parameter wasCutOff: what the previous check found.
    /// - Returns: what this check found.
    public func checkReachability(wasCutOff: Bool) async -> Bool {
        let interval = runtime.loadBalancer.heartbeatInterval
        if runtime.registrySilence > Double(interval) {
            let selfID = runtime.nodeID
            let peers = runtime.view.filter { $0.id != selfID && ($0.status == .online || $0.status == .offlineMode) }
            if peers.isEmpty {
                runtime.peerAnswered()
            } else {
                let answered = await withTaskGroup(of: Bool.self) { group in
                    for peer in peers {
                        group.addTask { await probe(peer) == nil }
                    }
                    return await group.contains(true)
                }
                if answered { runtime.peerAnswered() }
            }
        } else {
            runtime.peerAnswered()
        }
        let cutOff = runtime.isCutOff
        if cutOff, !wasCutOff {
            runtime.events.emit(.cutOff(node: runtime.nodeID, silentSeconds: runtime.registrySilence))
        } else if !cutOff, wasCutOff {
            runtime.events.emit(.reconnected(node: runtime.nodeID))
        }
        return cutOff
    }

    /// Asks `peer` for `/health-check`, bounded by the heartbeat interval whatever `timeout`
    /// says (0 would wait for ever on a node that is stopped but still accepts connections).
    /// - Returns: nil when it answered (with anything), else why not.
    func probe(_ peer: NodeRecord) async -> String? {
        let client = runtime.client.withTimeout(max(1, runtime.loadBalancer.heartbeatInterval))
        do {
            _ = try await client.send(.GET, NodeEndpoint.healthCheck, to: peer.ipv4 ?? peer.host, port: peer.port, name: NodeClient.tlsName(of: peer))
            return nil
        } catch {
            return "\(error)"
        }
    }

    /// Why this node may not join a cluster whose Online node `other` speaks a protocol outside
    /// the window (``DroverVersion/acceptsPeer(protocol:)``), in one line naming both versions.
    public static func protocolRefusal(other: NodeRecord) -> String {
        let window = DroverVersion.window
        return "this node runs \(DroverVersion.describe(release: DroverVersion.release, protocol: DroverVersion.clusterProtocol)) but the Online node "
            + "\(other.host):\(other.port) runs \(DroverVersion.describe(release: other.version, protocol: other.protocolVersion)); nodes share a cluster "
            + "only within one protocol version of each other (this node: \(window.lowerBound)…\(window.upperBound)): "
            + "upgrade one release at a time (README, Upgrading)"
    }

    /// What this node says about itself when it registers.
    func registration(status: NodeStatus) -> NodeRegistration {
        let config = runtime.configuration
        return NodeRegistration(host: runtime.address.host, ipv4: runtime.address.ipv4, port: runtime.address.port, status: status,
                                cpus: ProcessInfo.processInfo.activeProcessorCount, version: DroverVersion.release,
                                configHash: config.fingerprint, launcherFingerprint: config.launcherFingerprint, kinds: runtime.offeredKinds,
                                protocolVersion: DroverVersion.clusterProtocol, schemaKnown: DroverVersion.registrySchema)
    }

    private func rejoinAfterRemoval() async throws -> NodeRecord {
        let node = try await runtime.store.registerNode(registration(status: runtime.offlineMode ? .offlineMode : .online))
        runtime.update { $0.nodeID = node.id }
        return node
    }

    /// Puts this node in offline mode or takes it out (the dashboard's action, here or through
    /// a peer): the flag file `drover offline` writes, applied at once.
    public func setOfflineMode(_ offline: Bool, by actor: AuditRecord.Actor) async throws {
        let flag = runtime.configuration.offlineFlagFile
        // Whichever applies the flag first (this call or the heartbeat) records it as this admin's.
        runtime.update { $0.offlineModeAskedBy = actor }
        if offline {
            try FileManager.default.createDirectory(atPath: runtime.configuration.server.dataDirectory, withIntermediateDirectories: true)
            try Data("offline\n".utf8).write(to: URL(fileURLWithPath: flag))
        } else if unlink(flag) != 0, errno != ENOENT {
            throw MembershipError(description: "cannot remove \(flag) (\(String(cString: strerror(errno))))", exitStatus: 1)
        }
        await applyOfflineFlag(by: actor)
    }

    /// Applies `drover offline` / `drover online` (the flag file) to this node's row.
    /// - Parameter actor: who asked, for the audit log; nil: the flag file's owner (or the
    ///   daemon, stopping).
    func applyOfflineFlag(by actor: AuditRecord.Actor? = nil) async {
        let flagged = runtime.isStopping || FileManager.default.fileExists(atPath: runtime.configuration.offlineFlagFile)
        // Checked and set in one step: the reload (SIGHUP) and the heartbeat apply the flag at
        // the same moment, and only one of them may record the change.
        let (changed, asked) = runtime.update { state -> (Bool, AuditRecord.Actor?) in
            let changed = state.offlineMode != flagged
            state.offlineMode = flagged
            let asked = state.offlineModeAskedBy
            if changed { state.offlineModeAskedBy = nil }
            return (changed, asked)
        }
        guard let id = runtime.nodeID else { return }
        let wanted: NodeStatus = flagged ? .offlineMode : .online
        let stored = runtime.view.first { $0.id == id }?.status
        guard changed || (stored != nil && stored != wanted && (stored == .online || stored == .offlineMode)) else { return }
        do {
            _ = try await runtime.store.setNodeStatus(wanted, node: id)
            // A row merely put right again (it said otherwise) is not a change of the node's.
            if changed {
                runtime.events.emit(.statusChanged(node: id, offlineMode: flagged))
                // The dashboard's admin, else the flag file's owner (`drover offline`/`online`);
                // a stop is the daemon's.
                let dashboard = actor ?? asked
                let who: AuditRecord.Actor = dashboard
                    ?? (runtime.isStopping ? .daemon : .admin(Self.flagOwner(runtime.configuration.offlineFlagFile)))
                runtime.audit(who, flagged ? "node-offline" : "node-online", "node \(id)",
                              reason: runtime.isStopping ? "the node is stopping (SIGTERM)" : dashboard != nil ? "the admin dashboard"
                                : flagged ? "drover offline" : "drover online")
            }
            await notifyPeers(.nodeStatus(.init(id: id, status: wanted)))
        } catch {
            runtime.events.emit(.statusWriteFailed(status: wanted.rawValue, error: "\(error)"))
        }
    }

    /// Who set or cleared the offline flag: the owner of the flag file, or of the folder it was
    /// removed from (the operator who ran `drover offline`/`online`).
    static func flagOwner(_ path: String) -> String {
        var info = stat()
        let exists = stat(path, &info) == 0 || stat((path as NSString).deletingLastPathComponent, &info) == 0
        guard exists, let account = SystemAccount.withID(info.st_uid) else { return "uid \(exists ? info.st_uid : 0)" }
        return account.name
    }

    /// Re-reads `load-balancer` and applies `balancer`, `timeout` and `diagnostics` without a
    /// restart; also the offline flag, and defines the cluster again if it was reset. A bad
    /// file is reported and the running settings are kept.
    /// - Returns: what was applied, or why nothing was (for `drover reload` to print).
    @discardableResult
    public func reload() async -> ReloadOutcome {
        let config: DroverConfiguration
        do {
            config = try DroverConfiguration.load(directory: runtime.configuration.directory, pluginKeys: runtime.catalog.loadBalancerPluginKeys)
        } catch {
            runtime.events.emit(.reloadRefused(error: "\(error)"))
            return .refused("\(error)")
        }
        // A key is applied whole or not at all: those that take a restart keep their running
        // value (half-applied, ssl-ca-file changed node calls but not the proxy's hops, and
        // heartbeat-interval this node's failure detector alone) and are named in the answer.
        let running = runtime.loadBalancer
        var lb = config.effectiveLoadBalancer
        var restart: [String] = []
        func keep<T: Equatable>(_ key: String, _ path: WritableKeyPath<LoadBalancerConfiguration, T>) {
            guard lb[keyPath: path] != running[keyPath: path] else { return }
            func shown(_ value: T) -> String { (value as? String?).map { $0 ?? "unset" } ?? "\(value)" }
            restart.append("\(key) (running \(shown(running[keyPath: path])), file \(shown(lb[keyPath: path])))")
            lb[keyPath: path] = running[keyPath: path]
        }
        keep("www-host-name", \.wwwHostName)
        keep("verify-ssl-certs", \.verifySSLCerts)
        keep("ssl-ca-file", \.sslCAFile)
        keep("heartbeat-interval", \.heartbeatInterval)
        let started = runtime.configuration
        for (file, changed) in [(ServerConfiguration.fileName, config.server != started.server), (FileLocksConfiguration.fileName, config.fileLocks != started.fileLocks),
                                (DatabaseConfiguration.fileName, config.database != started.database), (SessionKind.directoryName + "/", config.kinds != started.kinds)]
            where changed {
            restart.append("\(file) (read at start)")
        }
        do {
            let context = PluginContext(config, key: runtime.key, logger: logger)
            let balancer = try runtime.catalog.makeBalancer(lb, context: context)
            runtime.metrics.prepare(strategy: balancer.name)
            let diagnostics = try runtime.catalog.makeDiagnostics(lb, context: context)
            let client = try NodeClient(key: runtime.key, protocol: runtime.clusterProtocol, timeoutSeconds: lb.timeout, caFile: lb.sslCAFile)
            runtime.update {
                $0.loadBalancer = lb
                $0.balancer = balancer
                $0.diagnostics = diagnostics
                $0.client = client
            }
        } catch {
            runtime.events.emit(.reloadRefused(error: "\(error)"))
            return .refused("\(error)")
        }
        runtime.events.emit(.reloaded(balancer: lb.balancer, timeout: lb.timeout, diagnostics: lb.diagnostics ?? "off"))
        await applyOfflineFlag()
        do {
            if try await runtime.store.cluster() == nil, let id = runtime.nodeID {
                let inForce = try await runtime.store.defineClusterIfAbsent(ClusterRecord(keyHash: runtime.key.clusterHash, protocol: runtime.clusterProtocol,
                                                                                          definedAt: try await runtime.store.now(), definedByNode: id))
                if inForce.definedByNode == id { runtime.events.emit(.clusterDefined(node: id, protocol: runtime.clusterProtocol.rawValue)) }
            }
        } catch {
            runtime.events.emit(.clusterCheckFailed(error: "\(error)"))
        }
        let applied = "balancer=\(lb.balancer) timeout=\(lb.timeout) diagnostics=\(lb.diagnostics ?? "off") max-sessions-per-node=\(lb.maxSessionsPerNode)"
        return .applied(restart.isEmpty ? applied : applied + "; changed but applied only after a restart of droverd: " + restart.joined(separator: ", "))
    }

    /// What a reload did.
    public enum ReloadOutcome: Sendable, Equatable {
        /// The settings now in force, as `key=value` pairs.
        case applied(String)
        /// The file was refused (the running settings are kept), and why.
        case refused(String)
    }

    /// Marks the node `Offline` and tells the peers; called once the node stops serving.
    /// The first step of a stop (SIGTERM): leave placement. Offline mode is written to this
    /// node's row and the peers are told, so no node places a session here while this one
    /// suspends its own (with `sessions` it would look the emptiest); from here on a start
    /// placed here before the others knew is refused, and its placer places it again.
    public func leavePlacement() async {
        runtime.update { $0.stopping = true }
        runtime.events.emit(.stopping(node: runtime.nodeID))
        await applyOfflineFlag()
    }

    public func leave() async {
        guard let id = runtime.nodeID else { return }
        do {
            _ = try await runtime.store.setNodeStatus(.offline, node: id)
        } catch {
            runtime.events.emit(.leaveFailed(error: "\(error)"))
        }
        runtime.events.emit(.left(node: id))
        await notifyPeers(.nodeLeft(.init(id: id)))
    }

    // MARK: peers

    /// Tells every other node that is up (Online or in offline mode, not Unreachable).
    public func notifyPeers(_ notice: PeerNotice) async {
        let selfID = runtime.nodeID
        let now = Date()
        let interval = runtime.loadBalancer.heartbeatInterval
        let peers = runtime.view.filter { $0.id != selfID && $0.isServing(now: now, heartbeatInterval: interval) }
        for (peer, reason) in await runtime.client.tell(peers, notice) {
            runtime.events.emit(.peerCallFailed(peer: peer.id, call: notice.name, error: reason, address: "\(peer.host):\(peer.port)"))
        }
    }

    /// A peer told us about a change: re-read the node list at once.
    public func received(_ notice: PeerNotice, from remote: String) async {
        runtime.events.emit(.peerNotice(name: notice.name, details: notice.details, from: remote))
        await refreshView()
    }
}
