import DroverCluster
import DroverKernel
import Foundation
import NIOCore
import NIOHTTP1

/// The user-facing HTTP API and home page (README, "Sessions").
struct UserAPI: Sendable {
    let sessions: SessionManager
    let auth: Authentication
    /// Throttled sign-ins are logged once a minute per address, like the node's other refusals.
    let refusals: RateLimitedReports

    static func json(_ status: HTTPResponseStatus, _ value: some Encodable, headers: HTTPHeaders = [:]) -> HTTPResponse {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        // The API's types are plain structs of strings and numbers: encoding cannot fail.
        let data = (try? encoder.encode(value)) ?? Data()
        var all = headers
        all.add(name: "Content-Type", value: "application/json")
        return HTTPResponse(status: status, headers: all, body: ByteBuffer(bytes: data))
    }

    static func error(_ status: HTTPResponseStatus, _ message: String, retryAfter: Int? = nil) -> HTTPResponse {
        json(status, APIError(error: message), headers: retryAfter.map { ["Retry-After": String($0)] } ?? [:])
    }

    /// Failed sign-ins past the free attempts: refused at once, saying when to try again.
    static func tooManySignIns(_ seconds: Int) -> HTTPResponse {
        error(.tooManyRequests, "too many failed sign-ins from this address or for this user; try again in \(seconds) s", retryAfter: seconds)
    }

    /// The answer to a failed session operation, as JSON (``sessionFailure(_:)``).
    static func failure(_ error: any Error) -> HTTPResponse {
        let (status, headers) = sessionFailure(error)
        return json(status, APIError(error: "\(error)"), headers: headers)
    }

    static func redirect(_ location: String, cookie: String? = nil, cookies: [String] = []) -> HTTPResponse {
        var headers: HTTPHeaders = ["Location": location]
        for cookie in (cookie.map { [$0] } ?? []) + cookies { headers.add(name: "Set-Cookie", value: cookie) }
        return HTTPResponse(status: .seeOther, headers: headers)
    }

    static func form(_ request: HTTPRequest) -> [String: String] {
        let text = String(buffer: request.body)
        var fields: [String: String] = [:]
        for pair in text.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1).map {
                String($0).replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? String($0)
            }
            if parts.count == 2 { fields[parts[0]] = parts[1] }
        }
        return fields
    }

    /// Answers the request, or nil when the path is not the API's.
    func respond(to request: HTTPRequest) async -> HTTPResponse? {
        let path = String(request.path)
        let method = request.head.method
        switch (method, path) {
        case (.GET, "/"):
            return await homePage(request)
        case (.POST, "/sign-in"):
            return await signIn(request)
        case (.POST, "/sign-out"):
            return await signOut(request)
        case (.GET, "/api/me"):
            guard let user = auth.user(request) else { return Self.error(.unauthorized, "sign in first (POST /sign-in)") }
            return Self.json(.ok, Me(user: user, csrf: auth.csrfToken(request)))
        default:
            break
        }
        if method == .GET, path == "/api/kinds" {
            guard let user = auth.user(request) else { return Self.error(.unauthorized, "sign in first (POST /sign-in)") }
            let defaultKind = sessions.runtime.configuration.kinds.defaultKind
            return Self.json(.ok, await sessions.kinds(for: user).map { KindDescription($0, isDefault: $0.name == defaultKind) })
        }
        let isAPI = path.hasPrefix("/api/sessions")
        let isForm = path == "/sessions" || path.hasPrefix("/sessions/")
        guard isAPI || isForm else { return nil }
        guard let user = auth.user(request) else {
            return isAPI ? Self.error(.unauthorized, "sign in first (POST /sign-in)") : Self.redirect("/")
        }
        let form = isForm ? Self.form(request) : [:]
        if method != .GET, !auth.isGenuine(request, formToken: form["csrf"]) {
            return Self.error(.forbidden, "missing or wrong CSRF token: send the X-CSRF-Token header from GET /api/me")
        }
        let parts = path.split(separator: "/").map(String.init)
        do {
            switch (method, isAPI, parts.count) {
            case (.GET, true, 2):
                return Self.json(.ok, try await list(user).map(SessionDescription.init))
            case (.POST, true, 2):
                let asked: NewSession
                do {
                    asked = request.body.readableBytes == 0 ? NewSession() : try JSONDecoder().decode(NewSession.self, from: Data(request.body.readableBytesView))
                } catch let error as NewSession.UnknownKey {
                    return Self.error(.badRequest, "unknown key '\(error.key)' in the body; it takes \(NewSession.CodingKeys.allCases.map(\.rawValue).joined(separator: " and "))")
                } catch {
                    return Self.error(.badRequest, #"the body must be empty or JSON like {"kind": "jupyterlab", "label": "my analysis"}"#)
                }
                let session = try await sessions.create(username: user, label: asked.label, kind: asked.kind, by: .user(user))
                return Self.json(.created, CreatedSession(id: session.id, node: session.ownership.node, url: sessionURL(session.id, request)))
            case (.POST, true, 4) where parts[3] == "suspend":
                try await owned(parts[2], by: user)
                try await sessions.suspend(parts[2], by: .user(user))
                return HTTPResponse(status: .accepted)
            case (.POST, true, 4) where parts[3] == "start":
                try await owned(parts[2], by: user)
                _ = try await sessions.restart(parts[2], username: user)
                guard let session = try await sessions.runtime.store.session(parts[2]) else { throw SessionError.notFound }
                return Self.json(.ok, SessionDescription(session))
            case (.DELETE, true, 3):
                try await owned(parts[2], by: user)
                try await sessions.quit(parts[2], by: .user(user))
                return HTTPResponse(status: .noContent)
            case (.POST, false, 1):
                _ = try await sessions.create(username: user, label: form["label"].flatMap { $0.isEmpty ? nil : $0 },
                                              kind: form["kind"].flatMap { $0.isEmpty ? nil : $0 }, by: .user(user))
                return Self.redirect("/")
            case (.POST, false, 3) where parts[2] == "suspend":
                try await owned(parts[1], by: user)
                try await sessions.suspend(parts[1], by: .user(user))
                return Self.redirect("/")
            case (.POST, false, 3) where parts[2] == "start":
                try await owned(parts[1], by: user)
                _ = try await sessions.restart(parts[1], username: user)
                return Self.redirect("/s/\(parts[1])/")
            case (.POST, false, 3) where parts[2] == "quit":
                try await owned(parts[1], by: user)
                try await sessions.quit(parts[1], by: .user(user))
                return Self.redirect("/")
            default:
                return Self.error(.notFound, "no such endpoint")
            }
        } catch {
            return Self.failure(error)
        }
    }

    /// Where the browser opens session `id`: `/s/<id>/`, at the session's own origin when
    /// sessions have theirs (``SessionOrigins``).
    func sessionURL(_ id: String, _ request: HTTPRequest) -> String {
        guard auth.origins.areSeparate else { return "/s/\(id)/" }
        let client = client(request)
        let host = client.host ?? request.head.headers.first(name: "Host") ?? ""
        return auth.origins.origin(ofSession: id, scheme: client.scheme ?? (auth.secure ? "https" : "http"), host: host) + "/s/\(id)/"
    }

    /// Someone else's session is reported as missing, never as forbidden.
    func owned(_ id: String, by user: String) async throws {
        guard let session = try await sessions.runtime.store.session(id), session.username == user else { throw SessionError.notFound }
    }

    func list(_ user: String) async throws -> [SessionRecord] {
        try await sessions.runtime.store.sessions(matching: SessionFilter(username: user))
    }

    /// Signing out needs the CSRF token (a page of another site must not sign the user out),
    /// and revokes the cookie on every node: a revocation in the registry, kept until the
    /// cookie would have expired, the peers told at once, and the cookie's WebSocket tunnels
    /// closed. The browser is told to forget it too.
    func signOut(_ request: HTTPRequest) async -> HTTPResponse {
        guard let cookie = auth.cookie(request) else { return Self.redirect("/", cookies: auth.signOutCookies) }
        guard auth.isGenuine(request, formToken: Self.form(request)["csrf"]) else {
            return Self.error(.forbidden, "missing or wrong CSRF token: send the X-CSRF-Token header from GET /api/me (or the form's csrf field)")
        }
        if let user = auth.user(request) {
            let revocation = auth.revocation(of: cookie, user: user)
            do {
                try await sessions.runtime.store.revoke(revocation, now: Date())
            } catch {
                return Self.failure(error)
            }
            auth.revocations.add(revocation)
            sessions.runtime.events.emit(.signedOut(user: user))
            sessions.runtime.audit(.user(user), "sign-out", user, user: user, reason: "its cookie revoked on every node")
            await ClusterMembership(runtime: sessions.runtime).notifyPeers(.revocationsChanged)
        }
        return Self.redirect("/", cookies: auth.signOutCookies)
    }

    /// Login CSRF: a page of another site must not sign the browser in (as the attacker, to
    /// watch what the victim does). A browser says where a form was posted from (`Origin`, or
    /// failing that `Referer`); a sign-in posted from a page that is not this node's is refused.
    /// Clients that send neither are not browsers.
    func refusesCrossSiteSignIn(_ request: HTTPRequest) -> HTTPResponse? {
        let headers = request.head.headers
        // Behind a trusted TLS terminator, the scheme and host the browser used.
        let client = self.client(request)
        let own = (client.scheme ?? (auth.secure ? "https" : "http")) + "://" + (client.host ?? (headers.first(name: "Host") ?? "").lowercased())
        let from: String
        if let origin = headers.first(name: "Origin") {
            from = origin.lowercased()
        } else if let referer = headers.first(name: "Referer"), let url = URL(string: referer), let scheme = url.scheme, let host = url.host {
            from = "\(scheme)://\(host)\(url.port.map { ":\($0)" } ?? "")".lowercased()
        } else {
            return nil
        }
        guard from != own else { return nil }
        return Self.error(.forbidden, "a sign-in posted from a page of \(from.prefix(200)), not this node's; sign in from this node's own page")
    }

    func signIn(_ request: HTTPRequest) async -> HTTPResponse {
        if let refusal = refusesCrossSiteSignIn(request) { return refusal }
        let form = Self.form(request)
        guard let user = form["username"], !user.isEmpty, let password = form["password"] else {
            return Self.redirect("/?error=missing")
        }
        // What PAM reads is a C string: a NUL ends it early, so `bob%00x` would be counted by the
        // throttle as a name of its own and authenticated as bob. No control character is part
        // of a user name or password typed into a form; refused before the throttle and PAM.
        if Self.hasControlCharacter(user) || Self.hasControlCharacter(password) {
            return Self.error(.badRequest, "a user name or password may not contain control characters (a NUL, a newline …)")
        }
        if auth.authNone {
            return Self.redirect("/")
        }
        // The client's own address, told by a trusted proxy in front of the node when there is one.
        let address = client(request).address
        if let wait = auth.throttle.wait(address: address, user: user) {
            if refusals.shouldReport("sign-in-throttled \(address)") {
                sessions.runtime.events.emit(.signInThrottled(user: user, address: address, seconds: wait))
            }
            return Self.tooManySignIns(wait)
        }
        switch await auth.pam.authenticate(username: user, password: password, remoteHost: address) {
        case .accepted(let account):
            auth.throttle.succeeded(user: user, address: address)
            try? await sessions.runtime.store.clearSignInFailures(username: user)
            return Self.redirect(Self.afterSignIn(form["next"]) ?? "/", cookie: auth.issueCookie(for: account).header)
        case .busy:
            return Self.error(.serviceUnavailable, "too many sign-ins are being checked; try again in a moment", retryAfter: 1)
        case .belowMinimumUserID(let account):
            await countFailure(user: user, address: address)
            sessions.runtime.events.emit(.signInRefused(user: account, address: address, reason: "user id below auth-minimum-user-id"))
            return Self.redirect("/?error=refused")
        case .refused:
            await countFailure(user: user, address: address)
            sessions.runtime.events.emit(.signInRefused(user: user, address: address, reason: "refused by PAM"))
            return Self.redirect("/?error=refused")
        }
    }

    /// A failed sign-in: the pair's and the address's counts here, the name's in the registry for
    /// the whole cluster (here too when the registry cannot be reached).
    func countFailure(user: String, address: String) async {
        let clusterCount = try? await sessions.runtime.store.recordSignInFailure(username: user, now: Date(), window: SignInThrottle.memory)
        auth.throttle.failed(address: address, user: user, countingName: clusterCount == nil)
        if let clusterCount { auth.throttle.nameFailed(user: user, count: clusterCount) }
    }

    /// Who sent `request`: its peer, or the client a trusted proxy names (`www-trusted-proxies`).
    func client(_ request: HTTPRequest) -> TrustedProxies.Client {
        let peer = request.remoteAddress?.ipAddress ?? "unknown"
        let trusted = sessions.runtime.configuration.server.trustedProxies
        return trusted.isEmpty ? TrustedProxies.Client(address: peer) : TrustedProxies(ranges: trusted).client(peer: peer, headers: request.head.headers)
    }

    /// Where a sign-in may send the browser on: only back to a session origin's ticket request
    /// (``SessionSignIn``), never elsewhere (an open redirect).
    static func afterSignIn(_ next: String?) -> String? {
        guard let next, next.hasPrefix(SessionSignIn.ticketPath + "?"),
              next.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value < 0x7f && $0 != "\\" }) else { return nil }
        return next
    }

    /// Whether `text` holds a character below U+0020 or U+007F (DEL).
    static func hasControlCharacter(_ text: String) -> Bool {
        text.unicodeScalars.contains { $0.value < 0x20 || $0.value == 0x7f }
    }

    static func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }

    func homePage(_ request: HTTPRequest) async -> HTTPResponse {
        var headers: HTTPHeaders = ["Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store"]
        var body = "<!doctype html><html><head><meta charset=\"utf-8\"><title>Drover</title></head>"
            + "<body style=\"font-family: sans-serif; max-width: 50em; margin: 2em auto\"><h1>Drover</h1>"
        // A session's origin sent the browser to sign in first (``SessionSignIn``): back there after.
        let next = Self.afterSignIn(SessionSignIn.query(request.head.uri)["next"])
        guard let user = auth.user(request) else {
            let failed = request.head.uri.contains("error=") ? "<p style=\"color: #a00\">Sign-in failed.</p>" : ""
            let hiddenNext = next.map { "<input type=\"hidden\" name=\"next\" value=\"\(Self.escape($0))\">" } ?? ""
            body += failed + """
                <form method="post" action="/sign-in">\(hiddenNext)<p><label>User <input name="username" autocomplete="username"></label></p>
                <p><label>Password <input name="password" type="password" autocomplete="current-password"></label></p>
                <p><button>Sign in</button></p></form></body></html>
                """
            return HTTPResponse(status: .ok, headers: headers, body: ByteBuffer(string: body))
        }
        if let next { return Self.redirect(next) }
        // auth-none visitors get a cookie too, so their forms carry a CSRF token.
        var cookie = auth.cookie(request)
        if cookie == nil || (try? SignInCookie.verify(cookie!, key: auth.key)) == nil {
            let issued = auth.issueCookie(for: user)
            headers.add(name: "Set-Cookie", value: issued.header)
            cookie = issued.value
        }
        let csrf = Self.escape(SignInCookie.csrfToken(for: cookie!, key: auth.key))
        let hidden = "<input type=\"hidden\" name=\"csrf\" value=\"\(csrf)\">"
        body += "<p>Signed in as <strong>\(Self.escape(user))</strong>."
        if !auth.authNone { body += " <form method=\"post\" action=\"/sign-out\" style=\"display:inline\">\(hidden)<button>Sign out</button></form>" }
        let kinds = await sessions.kinds(for: user)
        let defaultKind = sessions.runtime.configuration.kinds.defaultKind
        var picker = ""
        if kinds.count > 1 || (kinds.count == 1 && kinds[0].name != defaultKind) {
            picker = "<select name=\"kind\" aria-label=\"kind\">" + kinds.map { kind in
                "<option value=\"\(Self.escape(kind.name))\"\(kind.name == defaultKind ? " selected" : "")>\(Self.escape(kind.label))</option>"
            }.joined() + "</select> "
        }
        body += "</p><form method=\"post\" action=\"/sessions\">\(hidden)\(picker)<input name=\"label\" placeholder=\"label (optional)\"> <button>Start a session</button></form>"
        let list = (try? await self.list(user)) ?? []
        if list.isEmpty {
            body += "<p>No sessions yet.</p>"
        } else {
            body += "<table cellpadding=\"6\"><tr><th align=\"left\">Session</th><th>Kind</th><th>State</th><th>Node</th><th>Created</th><th></th></tr>"
            for session in list {
                let id = Self.escape(session.id)
                let label = session.label.map { " — " + Self.escape($0) } ?? ""
                let kindLabel = Self.escape(sessions.runtime.configuration.kinds[session.kind]?.label ?? session.kind)
                let state = session.hold.map { "stopped: " + Self.escape($0) } ?? session.ownership.state.rawValue
                body += "<tr id=\"session-\(id)\"><td><a href=\"/s/\(id)/\">\(id.prefix(8))</a>\(label)</td><td>\(kindLabel)</td><td>\(state)</td>"
                    + "<td>\(session.ownership.node.map(String.init) ?? "–")</td><td>\(session.createdAt.formatted(.iso8601))</td><td>"
                    + (session.hold != nil ? "<form method=\"post\" action=\"/sessions/\(id)/start\" style=\"display:inline\">\(hidden)<button>start again</button></form> " : "<a href=\"/s/\(id)/\">open</a> ")
                    + "<form method=\"post\" action=\"/sessions/\(id)/suspend\" style=\"display:inline\">\(hidden)<button>suspend</button></form> "
                    + "<form method=\"post\" action=\"/sessions/\(id)/quit\" style=\"display:inline\">\(hidden)<button>quit</button></form></td></tr>"
            }
            body += "</table>"
        }
        body += "</body></html>"
        return HTTPResponse(status: .ok, headers: headers, body: ByteBuffer(string: body))
    }
}

// MARK: the API's bodies (README, "Sessions")

/// `GET /api/kinds`: a kind the user may start.
struct KindDescription: Encodable {
    var name: String
    var label: String
    var `default`: Bool

    init(_ kind: SessionKind, isDefault: Bool) {
        name = kind.name
        label = kind.label
        self.default = isDefault
    }
}

/// `POST /api/sessions`'s body (optional). A key it does not know is refused, not ignored: a
/// `kind` sent to a node that did not know it would otherwise have started the default program.
struct NewSession: Decodable {
    var label: String?
    var kind: String?

    enum CodingKeys: String, CodingKey, CaseIterable { case kind, label }

    struct UnknownKey: Error {
        var key: String
    }

    /// Any key, to find the ones not in ``CodingKeys``.
    private struct AnyKey: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    init() {}

    init(from decoder: any Decoder) throws {
        for key in try decoder.container(keyedBy: AnyKey.self).allKeys where CodingKeys(rawValue: key.stringValue) == nil {
            throw UnknownKey(key: String(key.stringValue.prefix(40)))
        }
        let container = try decoder.container(keyedBy: CodingKeys.self)
        label = try container.decodeIfPresent(String.self, forKey: .label)
        kind = try container.decodeIfPresent(String.self, forKey: .kind)
    }
}

/// `POST /api/sessions`'s answer.
struct CreatedSession: Encodable {
    var id: String
    var node: Int64?
    var url: String

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(id, forKey: .id)
        try container.encode(node, forKey: .node)
        try container.encode(url, forKey: .url)
    }

    enum CodingKeys: String, CodingKey { case id, node, url }
}

/// `GET /api/me`'s answer; `csrf` is null for a user signed in without a cookie.
struct Me: Encodable {
    var user: String
    var csrf: String?

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(user, forKey: .user)
        try container.encode(csrf, forKey: .csrf)
    }

    enum CodingKeys: String, CodingKey { case user, csrf }
}

/// Every error the API answers with.
struct APIError: Encodable {
    var error: String
}
