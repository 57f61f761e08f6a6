public import DroverCluster
import DroverKernel
import Foundation
public import NIOCore
public import NIOHTTP1
public import NIOSSL

/// Sends `/s/<id>/…` to the session: to its Unix socket on this node, or to the node that
/// owns it (which then does the same). Only the session's user gets through; anyone else gets
/// 404, as if it did not exist.
public struct SessionProxyResolver: ProxyResolver {
    let sessions: SessionManager
    let auth: Authentication
    /// TLS for hops to other nodes, per the cluster's protocol; nil for http.
    let peerTLS: NIOSSLContext?
    /// Marks another node's opening of a session hop (``HopOpening``).
    static let hopHeader = SessionHopOpening.hopHeader
    /// The user the opening node authenticated; trusted only with a valid signature.
    static let hopUserHeader = SessionHopOpening.userHeader
    /// On a node's refusal of an opening: it no longer has the session (it moved while the
    /// request was on its way), so the opening node asks again where it is.
    static let hopMovedHeader = "X-Drover-Hop-Moved"
    /// On a node's refusal of an opening: the session's listener is gone (it is being suspended
    /// or moved), so the opening node asks again where it is, after a moment, as for a session
    /// of its own (``ProxyConnectionStateMachine``'s resending).
    static let hopGoneHeader = "X-Drover-Hop-Gone"
    // Every header of the hop is named `X-Drover-…`: what a client sends under such names is
    // dropped, and none reaches a session (``ForwardedRequest``).

    /// Who a proxied request is from.
    enum Requester: Equatable {
        case user(String)
        /// Another node's verified ``HopOpening`` for this user's session (its nonce now used).
        case opening(String)
        case anonymous
        /// Hop headers on anything but a verified opening: refused.
        case forgedHop(String)
        /// A verified opening beyond what the replay table keeps for its user (or at all): 503.
        case busyHop(String)
        /// With `auth-none`, a `Host` that is not this node's (``Authentication/refusesHost(_:)``).
        case misdirected
    }

    /// Another node's opening of a session hop (``HopOpening``) is trusted on the node-to-node
    /// signature over its target and user (so the user's cookie need not travel, and is not
    /// trusted on the second node), signed for that purpose alone and accepted once; anything
    /// else on its sign-in cookie. A hop header on anything but an opening is refused.
    func requester(_ head: HTTPRequestHead) -> Requester {
        guard head.headers.contains(name: Self.hopHeader) else { return client(head) }
        guard Self.isOpening(head) else { return .forgedHop("not an opening (Connection: upgrade, Upgrade: \(HopOpening.protocolName))") }
        guard let user = head.headers.first(name: Self.hopUserHeader) else { return .forgedHop("no user") }
        do {
            let verified = try InternalRequestSignature.verify(method: head.method.rawValue, path: head.uri, body: Self.openingBody(user),
                                                               header: { head.headers.first(name: $0) }, key: sessions.runtime.key,
                                                               isOwnDestination: sessions.runtime.isOwnDestination)
            switch sessions.runtime.replayGuard.acceptOpening(nonce: verified.nonce, timestamp: verified.timestamp, user: user) {
            case .accepted: return .opening(user)
            case .replayed: return .forgedHop("\(InternalRequestSignature.Refusal.replayed)")
            case .ownerFull: return .busyHop("\(user) opened too many session hops on this node in the last two minutes")
            case .full: return .busyHop("this node has too many session hop openings in the last two minutes")
            }
        } catch {
            return .forgedHop("\(error)")
        }
    }

    /// Who a request that is not a hop is from: its sign-in cookie, or on a session's own origin
    /// that session's cookie (with `auth-none`, the daemon's user, when its `Host` is this node's).
    private func client(_ head: HTTPRequestHead) -> Requester {
        if auth.refusesHost(head.headers) != nil { return .misdirected }
        // The browser's own `Host` names the session (``schemeAndHost(_:browserOrigin:)``).
        if origins.areSeparate, let host = head.headers.first(name: "Host"), let session = origins.sessionID(host: host) {
            return auth.sessionUser(headers: head.headers, session: session).map(Requester.user) ?? .anonymous
        }
        return auth.user(headers: head.headers).map(Requester.user) ?? .anonymous
    }

    static func openingBody(_ user: String) -> [UInt8] { SessionHopOpening.signedBody(user: user) }

    /// Whether `head` asks to open a session hop (``HopOpening``; trusted only once verified):
    /// a `GET` that switches protocols as the framer reads it (so the framer reads no HTTP after
    /// it: the bytes that follow are the session's) to `drover-session`.
    static func isOpening(_ head: HTTPRequestHead) -> Bool {
        head.method == .GET && ClientRequestFramer.switchesProtocols(head)
            && head.headers[canonicalForm: "upgrade"].contains { HeaderName.equals(String($0), HopOpening.protocolName) }
    }

    /// The bytes of an opening from this node to the node at `destination` (`host:port`), for
    /// the session `id` of `user`, signed now.
    static func openingRequest(session id: String, user: String, destination: String, key: SecureCookieKey) -> ByteBuffer {
        ByteBuffer(string: SessionHopOpening.request(session: id, user: user, destination: destination, key: key))
    }

    /// Origins besides the node's own whose pages may open WebSockets (`www-allowed-origins`).
    let allowedOrigins: Set<String>
    /// Where sessions are served: at their own origins or at Drover's.
    var origins: SessionOrigins { auth.origins }
    /// How a browser signs in to a session's own origin.
    let signIn: SessionSignIn

    public init(sessions: SessionManager, authentication: Authentication, peerTLS: NIOSSLContext?, allowedOrigins: [String] = []) {
        self.sessions = sessions
        auth = authentication
        self.peerTLS = peerTLS
        self.allowedOrigins = Set(allowedOrigins.map { $0.lowercased() })
        signIn = SessionSignIn(auth: authentication, origins: authentication.origins, sessions: sessions)
    }

    /// The scheme the browser used (a trusted proxy's, ``browserOrigin``, or the node's own) and
    /// the `Host` it sent. The host is the request's own `Host`, never a forwarded one: it is what
    /// the browser keys its cookies and origins to, and a proxy that passes a client's
    /// `X-Forwarded-Host` on would let a page's script name another session's.
    func schemeAndHost(_ head: HTTPRequestHead, browserOrigin: String?) -> (scheme: String, host: String) {
        let host = head.headers.first(name: "Host") ?? ""
        if let browserOrigin, let range = browserOrigin.range(of: "://") { return (String(browserOrigin[..<range.lowerBound]), host) }
        return (auth.secure ? "https" : "http", host)
    }

    /// With session origins (``SessionOrigins``), what becomes of a request for session `id`
    /// before its user is looked at: nil when it is at the session's own origin and may go on;
    /// else the answer. On Drover's origin it is sent to the session's origin; at another
    /// session's origin it does not exist; from another site's page, unless a navigation, it is
    /// refused; without the session's cookie, a page opened signs in through the main origin
    /// (``SessionSignIn``) and anything else is told to.
    func atSessionOrigin(_ head: HTTPRequestHead, id: String, browserOrigin: String?) -> HTTPResponse? {
        if let refusal = auth.refusesHost(head.headers) { return refusal }
        let (scheme, host) = schemeAndHost(head, browserOrigin: browserOrigin)
        guard let hostSession = origins.sessionID(host: host) else {
            if let refusal = origins.refusesInsideDomain(host) { return refusal }
            let location = origins.origin(ofSession: id, scheme: scheme, host: host) + head.uri
            let status: HTTPResponseStatus = head.method == .GET || head.method == .HEAD ? .found : .temporaryRedirect
            return HTTPResponse(status: status, headers: ["Location": location, "Cache-Control": "no-store"])
        }
        guard hostSession == id else { return .text(.notFound, "no such session\n") }
        if SessionOrigins.isForeign(head, own: scheme, host: host), !isAllowedWebSocket(head) {
            sessions.runtime.reportRefusal(.webSocketOriginRefused(session: id, origin: NodeEvent.bounded(head.headers.first(name: "Origin") ?? "?")),
                                           key: "session-origin-fetch")
            return SessionOrigins.foreignRefusal(head, of: "a session")
        }
        guard case .anonymous = client(head) else { return nil }
        if head.method == .GET, SessionProxyResolver.activity(head) == .write, !head.headers.contains(name: "Upgrade") {
            return signIn.begin(head, session: id, scheme: scheme, host: host)
        }
        return .text(.unauthorized, "sign in first: open this session's page in the browser\n", headers: ["Cache-Control": "no-store"])
    }

    /// Signing out closes the tunnels opened with the cookie. What the client sends through
    /// the tunnel is activity (the idle timeout), noted by the node the client reached.
    public func tunnelOpened(_ channel: any Channel, request head: HTTPRequestHead) -> (@Sendable () -> Void)? {
        let webSockets = sessions.runtime.metrics.webSockets
        webSockets.increment()
        channel.closeFuture.whenComplete { _ in webSockets.decrement() }
        guard !head.headers.contains(name: Self.hopHeader) else { return nil }
        if let signIn = auth.signIn(headers: head.headers, session: origins.areSeparate ? Self.sessionID(head) : nil) {
            auth.tunnels.add(channel, signIn: signIn)
        }
        guard let id = Self.sessionID(head) else { return nil }
        let sessions = self.sessions
        // A kind whose program counts its own activity counts what reaches it through here.
        if sessions.countsOnlyWrites(id) { return nil }
        return { sessions.noteActivity(id) }
    }

    /// Counted by the node the client reached, not again by the owner a hop reaches, so a
    /// cluster's total is the sum over its nodes.
    public func answered(_ head: HTTPRequestHead, status: Int, took: Duration) {
        guard !head.headers.contains(name: Self.hopHeader) else { return }
        sessions.runtime.metrics.proxied(status: status, took: took)
    }

    /// Cross-site WebSocket hijacking: a browser sends the user's cookie with a WebSocket
    /// upgrade from any same-site page (another port of the host, a sibling subdomain), and a
    /// WebSocket is not subject to CORS. An upgrade whose `Origin` is present and is neither
    /// this node's own (the scheme it serves and the `Host` asked for) nor allowed by
    /// `www-allowed-origins` is refused. (A hop from another node was checked there.)
    /// - Returns: the refusal, or nil.
    func refusesOrigin(_ head: HTTPRequestHead, browserOrigin: String? = nil) -> HTTPResponse? {
        guard head.headers.contains(name: "Upgrade"), !head.headers.contains(name: Self.hopHeader),
              let origin = head.headers.first(name: "Origin")?.lowercased() else { return nil }
        // Behind a trusted TLS terminator, the origin the browser used; else the node's own.
        let own = browserOrigin ?? (auth.secure ? "https://" : "http://") + (head.headers.first(name: "Host") ?? "").lowercased()
        if origin == own || allowedOrigins.contains(origin) { return nil }
        return .text(.forbidden, "forbidden: a WebSocket from a page of \(origin.prefix(200)), which is not this node's origin "
            + "nor in www-allowed-origins\n")
    }

    /// A WebSocket upgrade from a page of `www-allowed-origins`: let through at a session's
    /// origin though it comes from another site (what the key is for), then checked as any.
    func isAllowedWebSocket(_ head: HTTPRequestHead) -> Bool {
        guard !allowedOrigins.isEmpty, head.headers.contains(name: "Upgrade"), let origin = head.headers.first(name: "Origin") else { return false }
        return allowedOrigins.contains(origin.lowercased())
    }

    /// The `<id>` of `/s/<id>/…` (up to the next `/` or `?`), read in place: this runs for
    /// every proxied request. nil unless it has Drover's form (32 lower-case hex digits), so
    /// nothing else is ever looked up.
    static func sessionID(_ head: HTTPRequestHead) -> String? {
        sessionID(uri: head.uri)
    }

    static func sessionID(uri: String) -> String? {
        var uri = uri
        return uri.withUTF8 { bytes -> String? in
            let idEnd = 3 + 32
            guard bytes.count >= idEnd, bytes[0] == UInt8(ascii: "/"), bytes[1] == UInt8(ascii: "s"), bytes[2] == UInt8(ascii: "/")
            else { return nil }
            if bytes.count > idEnd, bytes[idEnd] != UInt8(ascii: "/"), bytes[idEnd] != UInt8(ascii: "?") { return nil }
            for index in 3..<idEnd {
                let byte = bytes[index]
                guard (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains(byte)
                else { return nil }
            }
            return String(decoding: UnsafeBufferPointer(rebasing: bytes[3..<idEnd]), as: UTF8.self)
        }
    }

    public func cachedDecision(for head: HTTPRequestHead) -> ProxyDecision? {
        cachedDecision(for: head, origin: nil)
    }

    public func decision(for head: HTTPRequestHead) async -> ProxyDecision {
        await decision(for: head, origin: nil)
    }

    public func cachedDecision(for head: HTTPRequestHead, origin browserOrigin: String?) -> ProxyDecision? {
        // An opening's nonce is used once, by the full decision.
        guard !head.headers.contains(name: Self.hopHeader) else { return nil }
        guard let id = Self.sessionID(head), refusesOrigin(head, browserOrigin: browserOrigin) == nil else { return nil }
        // At a session's own origin, from its own pages: else the full decision answers.
        let user: String
        if origins.areSeparate {
            let (scheme, host) = schemeAndHost(head, browserOrigin: browserOrigin)
            guard origins.isHost(host, ofSession: id), !SessionOrigins.isForeign(head, own: scheme, host: host) || isAllowedWebSocket(head),
                  auth.refusesHost(head.headers) == nil, let sessionUser = auth.sessionUser(headers: head.headers, session: id) else { return nil }
            user = sessionUser
        } else {
            guard case .user(let mainUser) = client(head) else { return nil }
            user = mainUser
        }
        guard let cached = sessions.cachedRouteAndActivity(id, username: user) else { return nil }
        return decision(cached.route, id: id, user: user, head: head, onlyWrites: cached.onlyWrites)
    }

    public func decision(for head: HTTPRequestHead, origin browserOrigin: String?) async -> ProxyDecision {
        guard let id = Self.sessionID(head) else { return .respond(.text(.notFound, "no such session\n")) }
        if origins.areSeparate, !head.headers.contains(name: Self.hopHeader),
           let answer = atSessionOrigin(head, id: id, browserOrigin: browserOrigin) {
            return .respond(answer)
        }
        if let refusal = refusesOrigin(head, browserOrigin: browserOrigin) {
            // The resolver does not know the client's address: one line a minute for all of them.
            sessions.runtime.reportRefusal(.webSocketOriginRefused(session: id, origin: NodeEvent.bounded(head.headers.first(name: "Origin") ?? "")),
                                           key: "websocket-origin")
            return .respond(refusal)
        }
        let user: String
        switch requester(head) {
        case .user(let name), .opening(let name):
            user = name
        case .anonymous:
            return .respond(.text(.unauthorized, "sign in first: open / on this server\n"))
        case .misdirected:
            return .respond(auth.refusesHost(head.headers) ?? .text(.misdirectedRequest, "misdirected\n"))
        case .forgedHop(let reason):
            sessions.runtime.reportRefusal(.hopRefused(reason: NodeEvent.bounded(reason)), key: "hop")
            return .respond(.text(.forbidden, "forbidden: a session hop whose opening does not verify (\(reason))\n"))
        case .busyHop(let reason):
            sessions.runtime.reportRefusal(.hopRefused(reason: NodeEvent.bounded(reason)), key: "hop")
            return .respond(.text(.serviceUnavailable, "503 service unavailable: \(reason); retry in a moment\n", headers: ["Retry-After": "5"]))
        }
        do {
            guard let route = try await sessions.route(id, username: user, request: Self.activity(head)) else { return .respond(.text(.notFound, "no such session\n")) }
            return decision(route, id: id, user: user, head: head, onlyWrites: sessions.countsOnlyWrites(id))
        } catch SessionError.held(let reason) where (head.headers.first(name: "Accept") ?? "").contains("text/html") {
            return .respond(heldPage(id, reason: reason, head: head, browserOrigin: browserOrigin))
        } catch {
            return .respond(.failure(error, prefix: "the session is not available: "))
        }
    }

    /// A write, or a page the browser opens (`Sec-Fetch-Mode: navigate`; from a client that does
    /// not send it, a `GET` that accepts HTML and upgrades nothing) is the user's own doing; any
    /// other `GET`, `HEAD` or `OPTIONS` may be a page's scripts polling.
    static func activity(_ head: HTTPRequestHead) -> SessionManager.ClientActivity {
        guard [.GET, .HEAD, .OPTIONS].contains(head.method) else { return .write }
        if let mode = head.headers.first(name: "Sec-Fetch-Mode") { return mode == "navigate" ? .write : .read }
        let opensPage = !head.headers.contains(name: "Upgrade") && (head.headers.first(name: "Accept") ?? "").contains("text/html")
        return opensPage ? .write : .read
    }

    /// What a browser is shown for a session that was stopped for going over its memory limit:
    /// why, what is kept and lost, and a button that starts it again (a form with the sign-in's
    /// CSRF token). Nothing starts it on its own, so a program that outgrows its limit at once
    /// does not loop.
    func heldPage(_ id: String, reason: String, head: HTTPRequestHead, browserOrigin: String? = nil) -> HTTPResponse {
        let csrf = auth.csrfToken(headers: head.headers).map { "<input type=\"hidden\" name=\"csrf\" value=\"\(UserAPI.escape($0))\">" } ?? ""
        // At a session's own origin, the start button is on Drover's page: this origin holds no
        // CSRF token of the main sign-in, and must not.
        var again = "<form method=\"post\" action=\"/sessions/\(UserAPI.escape(id))/start\">\(csrf)<button id=\"start-again\">Start it again</button></form>"
        var home = "/"
        if origins.areSeparate {
            let (scheme, host) = schemeAndHost(head, browserOrigin: browserOrigin)
            home = origins.mainOrigin(scheme: scheme, host: host) + "/"
            again = "<p><a id=\"start-again\" href=\"\(UserAPI.escape(home))#session-\(UserAPI.escape(id))\">Start it again</a> from your sessions.</p>"
        }
        let html = """
            <!doctype html><html><head><meta charset="utf-8"><title>Session stopped — Drover</title></head>
            <body style="font-family: sans-serif; max-width: 40em; margin: 2em auto"><h1>This session was stopped</h1>
            <p id="reason">It was stopped because \(UserAPI.escape(reason)).</p>
            <p>Its files are kept; what it held only in memory (a kernel's variables, unsaved work) is lost. It does not start again on its own:
            start it again when you are ready, perhaps with less data at once.</p>
            \(again)
            <p><a href="\(UserAPI.escape(home))">Back to your sessions</a></p></body></html>
            """
        return HTTPResponse(status: .conflict, headers: ["Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store"],
                            body: ByteBuffer(string: html))
    }

    /// A request of the session's user, to be sent on: client activity, noted by the node the
    /// client reached (not again by the owner a hop reaches).
    /// - Parameter onlyWrites: the session's kind counts only the client's writes and pages
    ///   opened (``SessionManager/countsOnlyWrites(_:)``); the headers that tell are read only then.
    func decision(_ route: SessionRoute, id: String, user: String, head: HTTPRequestHead, onlyWrites: Bool = false) -> ProxyDecision {
        let sessions = self.sessions
        let isHop = head.headers.contains(name: Self.hopHeader)
        if !isHop, !onlyWrites || Self.activity(head) == .write { sessions.noteActivity(id) }
        let forget: @Sendable () -> Void = { sessions.invalidateRoute(id) }
        switch route {
        case .local(let endpoint):
            if isHop { return .splice(endpoint, onFailure: forget) }
            let delivery = SessionDelivery(strippedPrefix: endpoint.strippedPrefix, secret: endpoint.secret)
            return .forward(.session(endpoint), tls: nil, headers: delivery.headers, stripping: delivery.strippedPrefix, onFailure: forget)
        case .remote(let host, let port, let name):
            if isHop {
                forget()
                // A moment's race with a move (the sender's route was older than the move's
                // notice): the client's retry is routed afresh.
                // The sender asks again where the session is (its request has not left it yet);
                // a client that still gets this may simply retry.
                return .respond(.text(.serviceUnavailable, "503 service unavailable: the session moved while the request was on its way; retry\n",
                                      headers: ["Retry-After": "1", Self.hopMovedHeader: "1"]))
            }
            // The request goes on as it would to a session of this node's, on a connection the
            // owner joins to the session (opened once, signed for this session and user).
            let key = sessions.runtime.key
            let opening = HopOpening(session: id, user: user) {
                Self.openingRequest(session: id, user: user, destination: NodeRuntime.destination(host: host, port: port), key: key)
            }
            let connectTimeout = TimeAmount.seconds(NodeClient.connectSeconds(timeout: sessions.runtime.loadBalancer.timeout))
            // The owner only splices: the prefix and the secret are this node's to apply.
            let delivery = sessions.delivery(id)
            return .forward(.node(host: host, port: port, name: name, connectTimeout: connectTimeout, opening: opening), tls: peerTLS,
                            headers: delivery.headers, stripping: delivery.strippedPrefix, onFailure: forget)
        }
    }
}
