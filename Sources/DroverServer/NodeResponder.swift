public import DroverCluster
import DroverKernel
import Foundation
import Logging
import NIOCore
public import NIOHTTP1

/// Routes requests to the node's own endpoints: the health check, the status endpoint and the
/// signed internal API under `/load-balancer/`.
public struct NodeResponder: HTTPResponder {
    let membership: ClusterMembership
    let sessions: SessionManager
    let userAPI: UserAPI

    /// - Parameters:
    ///   - membership: the cluster this node belongs to.
    ///   - sessions: the node's sessions, with how users authenticate.
    public init(membership: ClusterMembership, sessions: SessionManager, authentication: Authentication) {
        self.membership = membership
        self.sessions = sessions
        userAPI = UserAPI(sessions: sessions, auth: authentication)
    }

    static let peerEvents: Set<String> = ["node-joined", "node-left", "node-deleted", "node-status"]

    /// The health check is answered on the event loop, never behind the node's other async
    /// work: a peer probing a busy node (say, one starting a hundred sessions) must find it
    /// alive, not time out and mark it Unreachable.
    public func immediateResponse(to head: HTTPRequestHead) -> HTTPResponse? {
        guard head.method == .GET || head.method == .HEAD,
              head.uri == "/health-check" || head.uri.hasPrefix("/health-check?") else { return nil }
        return .text(.ok, "ok\n")
    }

    public func respond(to request: HTTPRequest) async -> HTTPResponse {
        if let immediate = immediateResponse(to: request.head) { return immediate }
        let path = request.path
        switch (request.head.method, path) {
        case (.GET, "/load-balancer/status"):
            return await status(request)
        default:
            break
        }
        if path.hasPrefix("/load-balancer/") {
            return await internalCall(request)
        }
        if let response = await userAPI.respond(to: request) {
            return response
        }
        return .text(.notFound, "not found\n")
    }

    /// The signed session calls one node makes on another (or `drover suspend-all` on its own).
    func sessionCall(_ name: String, body: [UInt8]) async -> HTTPResponse {
        if name == "suspend-all" {
            let count = await sessions.suspendAll()
            return UserAPI.json(.ok, ["suspended": count])
        }
        guard let fields = (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any], let id = fields["id"] as? String else {
            return .text(.badRequest, "expected {\"id\": \"...\"}\n")
        }
        do {
            switch name {
            case "launch":
                let session = try await sessions.launch(id, isNew: fields["new"] as? Bool ?? false)
                return UserAPI.json(.ok, UserAPI.describe(session))
            case "suspend":
                try await sessions.suspendLocal(id)
            case "quit":
                try await sessions.quitLocal(id)
            default:
                sessions.invalidateRoute(id)
            }
            return HTTPResponse(status: .noContent)
        } catch {
            return .failure(error)
        }
    }

    /// The remote's address as text, without the port.
    static func remoteIP(_ request: HTTPRequest) -> String? {
        request.remoteAddress?.ipAddress
    }

    /// Served only to this machine's loopback (127.0.0.1, ::1) and to the cluster's nodes.
    func status(_ request: HTTPRequest) async -> HTTPResponse {
        let runtime = membership.runtime
        let remote = Self.remoteIP(request) ?? ""
        func allowed() -> Bool {
            remote == "127.0.0.1" || remote == "::1" || remote == "::ffff:127.0.0.1"
                || runtime.view.contains { $0.ipv4 == remote || $0.host == remote }
        }
        if !allowed() {
            await membership.refreshView()
            guard allowed() else {
                runtime.logger.warning("refused /load-balancer/status to \(remote): not loopback and not a cluster node")
                runtime.diagnostics.record("status-refused", ("remote", remote))
                return .text(.forbidden, "forbidden: the status endpoint answers only this machine and the cluster's nodes\n")
            }
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

    /// Verifies the signature (and refuses replays) before any internal handler runs.
    func internalCall(_ request: HTTPRequest) async -> HTTPResponse {
        let runtime = membership.runtime
        let body = Array(request.body.readableBytesView)
        let remote = Self.remoteIP(request) ?? "?"
        let path = String(request.path)
        do {
            let verified = try InternalRequestSignature.verify(method: request.head.method.rawValue, path: path, body: body,
                                                               header: { request.head.headers.first(name: $0) }, key: runtime.key)
            guard runtime.replayGuard.accept(nonce: verified.nonce, timestamp: verified.timestamp) else {
                throw InternalRequestSignature.Refusal.replayed
            }
        } catch {
            runtime.logger.warning("refused internal call", metadata: ["path": "\(path)", "remote": "\(remote)", "reason": "\(error)"])
            runtime.diagnostics.record("internal-call-refused", ("path", path), ("remote", remote), ("reason", "\(error)"))
            return .text(.forbidden, "forbidden: \(error)\n")
        }
        let name = String(path.dropFirst("/load-balancer/".count))
        switch (request.head.method, name) {
        case (.GET, "ping"):
            return .text(.ok, "pong\n")
        case (.POST, let event) where Self.peerEvents.contains(event):
            await membership.received(event, body: body, from: remote)
            return HTTPResponse(status: .noContent)
        case (.POST, "launch"), (.POST, "suspend"), (.POST, "quit"), (.POST, "suspend-all"), (.POST, "session-moved"):
            return await sessionCall(name, body: body)
        default:
            return .text(.notFound, "no internal endpoint \(path)\n")
        }
    }
}
