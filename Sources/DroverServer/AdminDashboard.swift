import DroverCluster
import DroverKernel
import Foundation
import NIOCore
import NIOHTTP1

/// The admin dashboard at `/admin`, for members of `admin-group` (with `auth-none`, the
/// daemon's own user): every node with its status, load, sessions and a load chart; every
/// session with its user, node, state, age and last activity; and the actions — a node's
/// offline mode on and off, a session suspended, quit or moved to a chosen node. Server-rendered
/// HTML; a few lines of script fetch `/admin/live` every two seconds and swap it in. Every
/// action is a form posted with the CSRF token and recorded in the audit log as the admin's.
public struct AdminDashboard: Sendable {
    let sessions: SessionManager
    let membership: ClusterMembership
    let auth: Authentication
    let adminGroup: String?

    var runtime: NodeRuntime { sessions.runtime }

    /// Answers `/admin` and below, or nil for other paths.
    func respond(to request: HTTPRequest) async -> HTTPResponse? {
        let path = String(request.path)
        guard path == "/admin" || path.hasPrefix("/admin/") else { return nil }
        guard let user = auth.user(request) else { return UserAPI.redirect("/") }
        guard isAdmin(user) else {
            return .text(.forbidden, "forbidden: the dashboard is for members of admin-group"
                         + (adminGroup.map { Self.groupID($0) == nil ? " (\($0)), which is not a group on this machine" : " (\($0))" }
                            ?? ", which rserver.conf does not set") + "\n")
        }
        let method = request.head.method
        if method == .GET, path == "/admin" { return await page(request, user: user) }
        if method == .GET, path == "/admin/live" {
            return HTTPResponse(status: .ok, headers: ["Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store"],
                                body: ByteBuffer(string: await live(csrf: hiddenToken(request))))
        }
        guard method == .POST else { return UserAPI.error(.notFound, "no such page") }
        let form = UserAPI.form(request)
        guard auth.isGenuine(request, formToken: form["csrf"]) else {
            return UserAPI.error(.forbidden, "missing or wrong CSRF token: use the dashboard's own buttons")
        }
        let parts = path.split(separator: "/").map(String.init)
        guard parts.count == 4 else { return UserAPI.error(.notFound, "no such action") }
        do {
            switch (parts[1], parts[3]) {
            case ("nodes", "offline"), ("nodes", "online"):
                guard let node = Int64(parts[2]) else { return UserAPI.error(.badRequest, "not a node id: \(parts[2])") }
                try await setOfflineMode(parts[3] == "offline", node: node, by: user)
            case ("nodes", "drain"):
                guard let node = Int64(parts[2]) else { return UserAPI.error(.badRequest, "not a node id: \(parts[2])") }
                try await drain(node, by: user)
            case ("sessions", "suspend"):
                try await sessions.suspend(parts[2], by: .admin(user))
            case ("sessions", "quit"):
                try await sessions.quit(parts[2], by: .admin(user))
            case ("sessions", "move"):
                guard let node = form["node"].flatMap({ Int64($0) }) else { return UserAPI.error(.badRequest, "choose the node to move the session to") }
                try await sessions.move(parts[2], to: node, by: .admin(user))
            default:
                return UserAPI.error(.notFound, "no such action")
            }
        } catch {
            return UserAPI.failure(error)
        }
        return UserAPI.redirect("/admin")
    }

    /// With `auth-none` every visitor is the daemon's user, who administers the node; else a
    /// member of `admin-group` (primary or supplementary group).
    func isAdmin(_ user: String) -> Bool {
        if auth.authNone { return true }
        guard let group = adminGroup, let gid = Self.groupID(group), let account = SystemAccount.named(user) else { return false }
        return account.groupIDs.contains(gid)
    }

    /// What droverd says at start when nobody could ever open the dashboard: `admin-group`
    /// names a group this machine does not have (with `auth-none` the group is not consulted).
    public static func startWarning(adminGroup: String?, authNone: Bool) -> String? {
        guard !authNone, let group = adminGroup, groupID(group) == nil else { return nil }
        return "admin-group=\(group) is not a group on this machine, so nobody can open /admin; create it (groupadd \(group)) or name an existing group"
    }

    static func groupID(_ name: String) -> gid_t? { SystemGroup.named(name)?.gid }

    /// This node's offline mode is set here; another node's through a signed call.
    func setOfflineMode(_ offline: Bool, node: Int64, by user: String) async throws {
        if node == runtime.nodeID {
            try await membership.setOfflineMode(offline, by: .admin(user))
            return
        }
        guard let record = try await runtime.store.nodes().first(where: { $0.id == node }) else { throw SessionError.notFound }
        do {
            _ = try await runtime.client.call(TypedCall.offlineMode(.init(offline: offline, by: user)), on: record)
        } catch let refusal as PeerRefusal {
            throw SessionError.unavailable("node \(node) answered \(refusal.status): \(refusal.message)")
        }
    }

    /// `drover drain` for node `node`: offline mode, then each of its sessions moved, running,
    /// to the node the balancer picks.
    func drain(_ node: Int64, by user: String) async throws {
        try await setOfflineMode(true, node: node, by: user)
        let running = try await runtime.store.sessions(matching: SessionFilter(node: node, states: [.starting, .running, .suspending]))
        var failed: [String] = []
        for session in running {
            do {
                try await sessions.move(session.id, to: nil, by: .admin(user))
            } catch {
                failed.append("\(session.id.prefix(8)): \(error)")
            }
        }
        guard failed.isEmpty else {
            throw SessionError.unavailable("\(failed.count) of \(running.count) session(s) could not be moved: " + failed.joined(separator: "; "))
        }
    }

    /// The form field carrying the CSRF token (a cookie is issued when the visitor has none).
    func hiddenToken(_ request: HTTPRequest) -> String {
        auth.csrfToken(request).map { "<input type=\"hidden\" name=\"csrf\" value=\"\(UserAPI.escape($0))\">" } ?? ""
    }

    func page(_ request: HTTPRequest, user: String) async -> HTTPResponse {
        var headers: HTTPHeaders = ["Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store"]
        var token = hiddenToken(request)
        if auth.cookie(request) == nil {
            // auth-none: a cookie, so the forms carry a CSRF token.
            let issued = auth.issueCookie(for: user)
            headers.add(name: "Set-Cookie", value: issued.header)
            token = "<input type=\"hidden\" name=\"csrf\" value=\"\(UserAPI.escape(SignInCookie.csrfToken(for: issued.value, key: auth.key)))\">"
        }
        let warning = sessions.runtime.configuration.server.sharedOriginWarning.map {
            "<p id=\"origin-warning\" style=\"background: #fff3cd; padding: .6em; max-width: 72em\">Warning — \(UserAPI.escape($0))</p>"
        } ?? ""
        let body = """
            <!doctype html><html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
            <title>Drover — cluster</title><style>
            body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
            table { border-collapse: collapse; margin-bottom: 1.5em; width: 100%; max-width: 72em; }
            th, td { text-align: left; padding: .3em .6em; border-bottom: 1px solid #ddd; font-size: .92em; }
            th { background: #f4f4f4; } form { display: inline; } button { font-size: .85em; }
            .Online { color: #070; } .Unreachable, .Offline { color: #a00; } svg { vertical-align: middle; }
            </style></head><body>
            <h1>Drover cluster</h1><p>Signed in as <strong>\(UserAPI.escape(user))</strong>, administrator.
            Refreshed every two seconds. <a href="/">Your sessions</a></p>\(warning)
            <div id="live">\(await live(csrf: token))</div>
            <script>
            setInterval(() => fetch('/admin/live', {credentials: 'same-origin'}).then(r => r.ok ? r.text() : null)
              .then(html => { if (html !== null && !document.querySelector('#live select:focus')) document.getElementById('live').innerHTML = html; })
              .catch(() => {}), 2000);
            </script></body></html>
            """
        return HTTPResponse(status: .ok, headers: headers, body: ByteBuffer(string: body))
    }

    /// The part that refreshes: the nodes and the sessions, read now.
    func live(csrf: String) async -> String {
        let read: NodesWithClock
        let all: [SessionRecord]
        let counts: [Int64: Int]
        let changes: [AuditRecord]
        do {
            read = try await runtime.store.nodesWithClock()
            all = try await runtime.store.sessions(matching: .all)
            counts = try await runtime.store.activeSessionCounts()
            changes = try await runtime.store.audit(matching: AuditFilter(limit: 10))
        } catch {
            return "<p style=\"color:#a00\">The registry cannot be read: \(UserAPI.escape("\(error)"))</p>"
        }
        let interval = runtime.loadBalancer.heartbeatInterval
        let usage = await sessions.clusterResourceReports(nodes: read.nodes)
        var html = "<h2>Nodes</h2><table><tr><th>Node</th><th>Address</th><th>Status</th><th>Load per CPU</th><th>Last minutes</th><th>Sessions</th><th></th></tr>"
        for node in read.nodes {
            let status = node.displayStatus(now: read.now, heartbeatInterval: interval)
            let action = node.status == .offlineMode ? "online" : "offline"
            html += "<tr id=\"node-\(node.id)\"><td>\(node.id)\(node.id == runtime.nodeID ? " (this one)" : "")</td>"
                + "<td>\(UserAPI.escape(node.host)):\(node.port)</td><td class=\"\(UserAPI.escape(status.split(separator: " ").first.map(String.init) ?? ""))\">\(UserAPI.escape(status))</td>"
                + "<td>\(String(format: "%.2f", node.load.one)) <small>(\(node.cpus) CPU\(node.cpus == 1 ? "" : "s"))</small></td><td>\(Self.chart(runtime.loadHistory.samples(of: node.id)))</td>"
                + "<td>\(counts[node.id] ?? 0)</td><td>"
            if node.status == .online || node.status == .offlineMode {
                html += "<form method=\"post\" action=\"/admin/nodes/\(node.id)/\(action)\">\(csrf)<button>\(action == "offline" ? "take offline" : "bring online")</button></form> "
                    + "<form method=\"post\" action=\"/admin/nodes/\(node.id)/drain\">\(csrf)<button>drain</button></form>"
            }
            html += "</td></tr>"
        }
        html += "</table>"
        let targets = read.nodes.filter { $0.status == .online && $0.isServing(now: read.now, heartbeatInterval: interval) }
        let timeout = runtime.configuration.server.sessionTimeoutMinutes
        let policy = timeout > 0 ? " <small>— suspended after \(String(format: "%g", timeout)) min without client activity (session-timeout-minutes)</small>" : ""
        html += "<h2>Sessions (\(all.count))\(policy)</h2><table><tr><th>Session</th><th>User</th><th>Kind</th><th>Node</th><th>State</th><th>Age</th><th>Last activity</th><th>Memory</th><th>CPU</th><th></th></tr>"
        for session in all {
            let id = UserAPI.escape(session.id)
            // Use where it runs; the kind's limits otherwise (a suspended session takes nothing).
            let report = usage[session.id] ?? SessionResourceReport(id: session.id, kind: session.kind, usage: .init(),
                                                                    limits: runtime.configuration.kinds[session.kind]?.limits ?? SessionLimits(), cpus: nil)
            let (memory, cpu) = (report.memoryText, report.cpuText)
            let state = session.ownership.state.rawValue + (session.hold.map { " <small>(held: \(UserAPI.escape($0)))</small>" } ?? "")
            html += "<tr id=\"session-\(id)\"><td><code>\(id.prefix(8))</code>\(session.label.map { " " + UserAPI.escape($0) } ?? "")</td>"
                + "<td>\(UserAPI.escape(session.username))</td><td>\(UserAPI.escape(session.kind))</td><td>\(session.ownership.node.map(String.init) ?? "–")</td>"
                + "<td>\(state)</td><td>\(Self.age(read.now.timeIntervalSince(session.createdAt)))</td>"
                + "<td>\(Self.age(read.now.timeIntervalSince(session.lastActive))) ago</td>"
                + "<td class=\"memory\">\(UserAPI.escape(memory))</td><td class=\"cpu\">\(UserAPI.escape(cpu))</td><td>"
            if session.ownership.state == .running {
                html += "<form method=\"post\" action=\"/admin/sessions/\(id)/suspend\">\(csrf)<button>suspend</button></form> "
            }
            html += "<form method=\"post\" action=\"/admin/sessions/\(id)/quit\">\(csrf)<button>quit</button></form> "
            let others = targets.filter { $0.id != session.ownership.node }
            if !others.isEmpty, session.ownership.state == .running || session.ownership.state == .suspended {
                html += "<form method=\"post\" action=\"/admin/sessions/\(id)/move\">\(csrf)<select name=\"node\">"
                    + others.map { "<option value=\"\($0.id)\">node \($0.id)</option>" }.joined() + "</select> <button>move</button></form>"
            }
            html += "</td></tr>"
        }
        html += "</table><h2>Recent changes</h2><table><tr><th>Time</th><th>Actor</th><th>Action</th><th>Target</th><th>Node</th><th>Result</th><th>Reason</th></tr>"
        for change in changes.reversed() {
            html += "<tr><td>\(change.time.map { Self.age(read.now.timeIntervalSince($0)) + " ago" } ?? "")</td><td>\(UserAPI.escape(change.actor))</td>"
                + "<td>\(UserAPI.escape(change.action))</td><td><code>\(UserAPI.escape(String(change.target.prefix(12))))</code></td>"
                + "<td>\(change.node.map(String.init) ?? "–")</td><td>\(UserAPI.escape(change.result))</td><td>\(UserAPI.escape(change.reason))</td></tr>"
        }
        return html + "</table>"
    }

    /// A small line chart of loads per CPU (0 to at least 1), as inline SVG.
    static func chart(_ samples: [Double]) -> String {
        let (width, height) = (120.0, 24.0)
        guard samples.count > 1 else { return "<svg width=\"120\" height=\"24\"></svg>" }
        let top = max(1, samples.max() ?? 1)
        let step = width / Double(LoadHistory.capacity - 1)
        let start = width - step * Double(samples.count - 1)
        let points = samples.enumerated().map { index, load in
            String(format: "%.1f,%.1f", start + step * Double(index), height - load / top * (height - 2) - 1)
        }.joined(separator: " ")
        return "<svg width=\"120\" height=\"24\" role=\"img\" aria-label=\"load\"><rect width=\"120\" height=\"24\" fill=\"#f7f7f7\"/>"
            + "<polyline fill=\"none\" stroke=\"#36c\" stroke-width=\"1.5\" points=\"\(points)\"/></svg>"
    }

    static func age(_ seconds: TimeInterval) -> String {
        let s = max(0, Int(seconds))
        if s < 120 { return "\(s) s" }
        if s < 7200 { return "\(s / 60) min" }
        return "\(s / 3600) h"
    }
}
