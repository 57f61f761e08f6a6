import DroverKernel
import Foundation

/// Finding a session for the proxy ("where is session S of user U?"), the cluster's side: each
/// step is ``SessionRouting``'s decision on the row, the nodes with the database's clock and this
/// node's copy, carried out here — serve here, forward to the owner, free a row, wait, or place
/// it again and start it (a suspended session starts on use; one whose node is gone moves).
/// ``SessionManager/route(_:username:startingHeld:request:)`` answers from its route cache first.
struct SessionFinding: SessionManagerPart {
    let sessions: SessionManager

    func route(_ id: String, username: String, startingHeld: Bool, request: SessionManager.ClientActivity) async throws -> SessionRoute? {
        // Ended a moment ago (lease lost, exited): free its row now rather than at the next
        // sweep, so this request starts it again instead of meeting a dead socket.
        if supervisor.hasEnded(id) { await sessions.stops.reapExited() }
        // A session being suspended (its node stopping, say), started or moved is waited for,
        // not answered with an error: as long as the proxy waits for a session's answer.
        let deadline = runtime.clock.now() + .seconds(runtime.configuration.server.sessionResponseTimeout)
        repeat {
            let session = try await store.session(id)
            let read = try await store.nodesWithClock()
            let facts = SessionRouting.Facts(
                session: session, username: username, nodes: read.nodes, now: read.now, heartbeatInterval: runtime.loadBalancer.heartbeatInterval,
                selfID: runtime.nodeID, runsLocalCopy: liveEndpoint(id) != nil, request: request,
                kindCountsOnlyWrites: session.map { sessions.countsOnlyWrites(kind: $0.kind) } ?? false, startingHeld: startingHeld)
            switch SessionRouting.next(facts) {
            case .notFound:
                return nil
            case .refuseHeld(let reason):
                throw SessionError.held(reason)
            case .refuseSuspendedRead:
                throw SessionError.suspended("session \(id) is suspended; open its page again (reload it) to start it")
            case .serveLocally:
                if let endpoint = liveEndpoint(id) { return remembered(.local(endpoint), session!) }
            case .forward(let node):
                return remembered(.remote(host: node.ipv4 ?? node.host, port: node.port, name: NodeClient.tlsName(of: node)), session!)
            case .free(let ownership):
                // Ours in the registry but not running here (a previous life of this node).
                _ = try await store.transitionSession(id, from: ownership, to: SessionOwnership(node: nil, state: .suspended))
            case .retry(let pause):
                try await Task.sleep(for: pause)
            case .place(let ownership, let nodeGone):
                if let nodeGone { runtime.events.emit(.sessionRePlaced(session: id, nodeStatus: nodeGone)) }
                if let route = try await resume(session!, from: ownership) { return remembered(route, session!) }
            }
        } while runtime.clock.now() < deadline
        throw SessionError.unavailable("session \(id) keeps moving; try again")
    }

    func remembered(_ route: SessionRoute, _ session: SessionRecord) -> SessionRoute {
        routes.remember(session.id, route, username: session.username, kind: session.kind)
        return route
    }

    /// The endpoint of a session this node runs (or is finishing starting), unless it ended.
    func liveEndpoint(_ id: String) -> SessionEndpoint? {
        supervisor.session(id).flatMap { $0.state.isOver ? nil : $0.endpoint }
    }

    /// Places a suspended (or orphaned) session again and starts it; nil when another node got
    /// there first (the caller looks again).
    func resume(_ session: SessionRecord, from expected: SessionOwnership) async throws -> SessionRoute? {
        // Clear answers, not a loop of failed starts: a kind removed from the configuration, a
        // user who has left the kind's groups.
        guard let kind = runtime.configuration.kinds[session.kind] else {
            throw SessionError.kindUnavailable("session \(session.id) is a '\(SessionManager.shown(session.kind))' session, and that kind is no longer configured; "
                + "quit it (its files stay in your home) and start another kind")
        }
        try await sessions.checkGroups(kind, session.username)
        guard let (placed, _) = try await sessions.engine().placeExisting(session, from: expected) else { return nil }
        // A move when its row still named a node (gone, or unreachable); a resume otherwise.
        let action = expected.node == nil ? "session-resume" : "session-move"
        let reason = expected.node.map { "its node \($0) was gone (\(expected.state.rawValue) there)" } ?? ""
        let running: SessionRecord
        do {
            running = try await sessions.starts.launchOnOwnerOrFree(placed)
        } catch SessionError.stopping {
            // Its row is suspended again; the stopping node has left placement: look again.
            return nil
        } catch SessionError.moved {
            // Another request or node started or freed it meanwhile: look again.
            return nil
        } catch {
            runtime.audit(.user(session.username), action, session.id, user: session.username, node: placed.ownership.node,
                          result: "failed", reason: "\(error)")
            throw error
        }
        runtime.audit(.user(session.username), action, session.id, user: session.username, node: running.ownership.node, reason: reason)
        guard running.ownership.state == .running, let owner = running.ownership.node else { return nil }
        if owner == runtime.nodeID { return liveEndpoint(session.id).map { .local($0) } }
        guard let node = (try await store.nodes()).first(where: { $0.id == owner }) else { return nil }
        return .remote(host: node.ipv4 ?? node.host, port: node.port, name: NodeClient.tlsName(of: node))
    }
}
