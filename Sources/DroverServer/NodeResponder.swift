public import DroverCluster
import DroverKernel
import Foundation
import Logging
import NIOCore
public import NIOHTTP1
import Synchronization
#if DROVER_TEST_NEXT_RELEASE
import DroverVersion
#endif

/// Routes requests to the node's own endpoints: the health check, the status endpoint and the
/// signed internal API under `/load-balancer/`.
public struct NodeResponder: HTTPResponder {
    let membership: ClusterMembership
    let sessions: SessionManager
    let userAPI: UserAPI
    let dashboard: AdminDashboard
    /// Signing in to sessions' own origins (``SessionSignIn``).
    let sessionSignIn: SessionSignIn
    /// Refusals are logged (and counted) at most once a minute per address, so a flood of them
    /// cannot flood the log.
    let refusals: RateLimitedReports

    /// - Parameters:
    ///   - membership: the cluster this node belongs to.
    ///   - sessions: the node's sessions, with how users authenticate.
    public init(membership: ClusterMembership, sessions: SessionManager, authentication: Authentication) {
        self.membership = membership
        self.sessions = sessions
        let refusals = membership.runtime.refusalReports
        self.refusals = refusals
        userAPI = UserAPI(sessions: sessions, auth: authentication, refusals: refusals)
        dashboard = AdminDashboard(sessions: sessions, membership: membership, auth: authentication,
                                   adminGroup: membership.runtime.configuration.server.adminGroup)
        sessionSignIn = SessionSignIn(auth: authentication, origins: authentication.origins, sessions: sessions)
    }

    /// The health check is answered on the event loop, never behind the node's other async
    /// work: a peer probing a busy node (say, one starting a hundred sessions) must find it
    /// alive, not time out and mark it Unreachable.
    /// So is readiness (``NodeEndpoint/ready``), from the node's own state.
    public func immediateResponse(to head: HTTPRequestHead) -> HTTPResponse? {
        guard head.method == .GET || head.method == .HEAD else { return nil }
        func isPath(_ path: String) -> Bool { head.uri == path || head.uri.hasPrefix(path + "?") }
        if isPath(NodeEndpoint.healthCheck) { return .text(.ok, "ok\n") }
        guard isPath(NodeEndpoint.ready) else { return nil }
        let runtime = membership.runtime
        if runtime.isStopping { return .text(.serviceUnavailable, "not ready: the node is stopping\n") }
        if runtime.offlineMode { return .text(.serviceUnavailable, "not ready: offline mode (drover offline or drover drain; drover online ends it)\n") }
        if runtime.isCutOff { return .text(.serviceUnavailable, "not ready: the node reaches neither the registry nor any peer\n") }
        return .text(.ok, "ready\n")
    }

    public func respond(to request: HTTPRequest) async -> HTTPResponse {
        if let immediate = immediateResponse(to: request.head) { return immediate }
        let path = request.path
        // A session's own origin serves nothing of Drover's but its sign-in's end.
        if userAPI.auth.origins.areSeparate, let host = request.head.headers.first(name: "Host"), userAPI.auth.origins.isSessionHost(host),
           let response = await atSessionOrigins(request, path: String(path)) {
            return response
        }
        if request.head.method == .GET, path == NodeEndpoint.status {
            return await status(request)
        }
        if request.head.method == .GET, path == NodeEndpoint.metrics {
            return metrics(request)
        }
        if path.hasPrefix(NodeEndpoint.internalPrefix) {
            return await internalCall(request)
        }
        if let refusal = userAPI.auth.refusesHost(request.head.headers) { return refusal }
        if userAPI.auth.origins.areSeparate, let response = await atSessionOrigins(request, path: String(path)) {
            return response
        }
        if let response = await dashboard.respond(to: request) {
            return response
        }
        if let response = await userAPI.respond(to: request) {
            return response
        }
        return .text(.notFound, "not found\n")
    }

    /// With sessions at their own origins: a session's origin serves nothing of Drover's but the
    /// end of its sign-in (``SessionSignIn/callbackPath``; its front page goes to `/s/<id>/`),
    /// and Drover's own endpoints refuse what another site's page (a session's) sends through
    /// the user's browser, unless it is a navigation: fetch metadata, beside the CSRF tokens.
    /// - Returns: the answer, or nil for the main origin's endpoints to answer.
    func atSessionOrigins(_ request: HTTPRequest, path: String) async -> HTTPResponse? {
        let scheme = userAPI.client(request).scheme ?? (userAPI.auth.secure ? "https" : "http")
        // The browser's own `Host` (``SessionProxyResolver/schemeAndHost(_:browserOrigin:)``).
        let host = request.head.headers.first(name: "Host") ?? ""
        let origins = userAPI.auth.origins
        if let id = origins.sessionID(host: host) {
            if SessionOrigins.isForeign(request.head, own: scheme, host: host) {
                return SessionOrigins.foreignRefusal(request.head, of: "a session")
            }
            switch path {
            case SessionSignIn.callbackPath: return await sessionSignIn.callback(request, session: id)
            case "/": return HTTPResponse(status: .found, headers: ["Location": "/s/\(id)/"])
            default:
                return .text(.notFound, "not found: this is a session's own origin; Drover's pages are at \(origins.mainOrigin(scheme: scheme, host: host))/\n")
            }
        }
        if let refusal = origins.refusesInsideDomain(host) { return refusal }
        let guarded = path.hasPrefix("/api/") || path == "/admin" || path.hasPrefix("/admin/") || path == "/sessions" || path.hasPrefix("/sessions/")
            || path == "/sign-out" || path == SessionSignIn.ticketPath
        if guarded, SessionOrigins.isForeignNonNavigation(request.head) { return SessionOrigins.foreignRefusal(request.head, of: "Drover's own pages") }
        if path == SessionSignIn.ticketPath { return await sessionSignIn.ticket(request, scheme: scheme, host: host) }
        return nil
    }

    /// The remote's address as text, without the port.
    static func remoteIP(_ request: HTTPRequest) -> String? {
        request.remoteAddress?.ipAddress
    }

    /// Whether `remote` is this machine's loopback (127.0.0.1, ::1) or an `Online` node of the
    /// node's view (refreshed every heartbeat interval): who may read the status endpoint.
    func isMachineOrPeer(_ remote: String) -> Bool {
        remote == "127.0.0.1" || remote == "::1" || remote == "::ffff:127.0.0.1"
            || membership.runtime.view.contains { $0.status == .online && ($0.ipv4 == remote || $0.host == remote) }
    }

    /// Served only to this machine and the cluster's `Online` nodes (``isMachineOrPeer(_:)``).
    /// A refusal reads nothing from the registry, and its log line is written at most once a
    /// minute per address.
    func status(_ request: HTTPRequest) async -> HTTPResponse {
        let runtime = membership.runtime
        let remote = Self.remoteIP(request) ?? ""
        guard isMachineOrPeer(remote) else {
            if refusals.shouldReport(remote) { runtime.events.emit(.statusRefused(remote: remote)) }
            return .text(.forbidden, "forbidden: the status endpoint answers only this machine and the cluster's Online nodes\n")
        }
        do {
            let sessions = try await runtime.store.sessions(matching: SessionFilter(states: [.running]))
            let read = try await runtime.store.nodesWithClock()
            return .text(.ok, StatusReport.render(nodes: read.nodes, sessions: sessions, now: read.now,
                                                  heartbeatInterval: runtime.loadBalancer.heartbeatInterval))
        } catch {
            return .text(.serviceUnavailable, "the registry is unavailable: \(error)\n")
        }
    }

    /// Prometheus metrics, to whom may read the status endpoint and to
    /// `metrics-allowed-addresses` (a Prometheus server elsewhere). Read from memory only.
    func metrics(_ request: HTTPRequest) -> HTTPResponse {
        let remote = Self.remoteIP(request) ?? ""
        guard isMachineOrPeer(remote) || membership.runtime.configuration.server.metricsAllowedAddresses.contains(where: { $0.contains(remote) }) else {
            if refusals.shouldReport(remote) { membership.runtime.events.emit(.statusRefused(remote: remote)) }
            return .text(.forbidden, "forbidden: /metrics answers this machine, the cluster's Online nodes and metrics-allowed-addresses in rserver.conf\n")
        }
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "text/plain; version=0.0.4; charset=utf-8")
        return HTTPResponse(status: .ok, headers: headers, body: ByteBuffer(bytes: sessions.metricsExposition()))
    }

    /// Verifies the signature (and refuses replays) before any internal handler runs.
    func internalCall(_ request: HTTPRequest) async -> HTTPResponse {
        let runtime = membership.runtime
        let body = Array(request.body.readableBytesView)
        let remote = Self.remoteIP(request) ?? "?"
        let path = String(request.path)
        do {
            let verified = try InternalRequestSignature.verify(method: request.head.method.rawValue, path: path, body: body,
                                                               header: { request.head.headers.first(name: $0) }, key: runtime.key,
                                                               isOwnDestination: runtime.isOwnDestination)
            guard runtime.replayGuard.accept(nonce: verified.nonce, timestamp: verified.timestamp) else {
                throw InternalRequestSignature.Refusal.replayed
            }
        } catch {
            runtime.reportRefusal(.internalCallRefused(path: NodeEvent.bounded(path), remote: remote, reason: NodeEvent.bounded("\(error)")),
                                  key: "internal-call \(remote)")
            return .text(.forbidden, "forbidden: \(error)\n")
        }
        let call: InternalCall
        do {
            call = try InternalCall(method: request.head.method, path: path, body: body)
        } catch {
            let status: HTTPResponseStatus = if case .unknown = error { .notFound } else { .badRequest }
            return .text(status, "\(error)\n")
        }
        return await answer(call, from: remote)
    }

    /// Carries out a verified internal call.
    func answer(_ call: InternalCall, from remote: String) async -> HTTPResponse {
        do {
            switch call {
            case .ping:
                return .text(.ok, "pong\n")
            case .notice(.sessionMoved(let session)):
                sessions.invalidateRoute(session.id)
            case .notice(.nodeJoined(let joined)):
                sessions.forgetRoutes(toHost: joined.host, port: joined.port)
                await membership.received(.nodeJoined(joined), from: remote)
            case .notice(.revocationsChanged):
                await membership.runtime.refreshRevocations()
            case .notice(let notice):
                await membership.received(notice, from: remote)
            case .launch(let session, let isNew):
                return UserAPI.json(.ok, SessionDescription(try await sessions.launch(session.id, isNew: isNew)))
            case .suspend(let session):
                try await sessions.suspendLocal(session.id)
            case .quit(let session):
                try await sessions.quitLocal(session.id)
            case .suspendAll(let by):
                return UserAPI.json(.ok, InternalCall.SuspendAllAnswer(suspended: await sessions.suspendAll(by: .admin(by ?? "unknown"))))
            case .offlineMode(let call):
                try await membership.setOfflineMode(call.offline, by: .admin(call.by))
            case .move(let call):
                return UserAPI.json(.ok, SessionDescription(try await sessions.move(call.id, to: call.to, by: .admin(call.by))))
            case .resources:
                return UserAPI.json(.ok, sessions.resourceReports())
            #if DROVER_TEST_NEXT_RELEASE
            case .build:
                return UserAPI.json(.ok, InternalCall.BuildAnswer(release: DroverVersion.release, protocol: DroverVersion.clusterProtocol))
            #endif
            case .reload:
                switch await membership.reload() {
                case .applied(let settings): return .text(.ok, settings + "\n")
                case .refused(let reason): return .text(.conflict, reason + "\n")
                }
            }
            return HTTPResponse(status: .noContent)
        } catch {
            return .failure(error)
        }
    }
}

