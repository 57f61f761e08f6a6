public import DroverKernel
import DroverCluster
import Foundation
import NIOHTTP1

/// Where sessions are served (README, "Session origins"). Without `www-session-domain`, at
/// `/s/<id>/` on Drover's own origin, where a session's pages (a notebook's output, an HTML
/// file, an extension) can script Drover's pages and the user's other sessions. With it, each
/// session at `<id>.<domain>`, an origin of its own, still under `/s/<id>/` there, so the
/// programs' base path does not change.
public struct SessionOrigins: Sendable {
    /// `www-session-domain`, lower case, without a trailing dot; nil: sessions share Drover's origin.
    public let domain: String?
    /// `www-main-host`: the host of Drover's own pages, where sessions' origins send users to sign in.
    public let mainHost: String?
    /// `.<domain>`.
    private let suffix: String?
    /// Its bytes, for ``sessionID(host:)``.
    private let suffixBytes: [UInt8]

    public init(domain: String? = nil, mainHost: String? = nil) {
        self.domain = domain
        self.mainHost = mainHost
        suffix = domain.map { "." + $0 }
        suffixBytes = Array((suffix ?? "").utf8)
    }

    public init(_ server: ServerConfiguration) {
        self.init(domain: server.sessionDomain, mainHost: server.mainHost)
    }

    /// Whether each session has an origin of its own.
    public var areSeparate: Bool { domain != nil }

    /// The session whose origin `host` (a `Host` value, any case, with or without a port and a
    /// trailing dot) is. Read on the header's bytes, without a copy: this runs several times for
    /// every request at a session's origin (a lower-cased copy and `Substring` scans cost the
    /// proxy 34,000 instructions a request).
    func sessionID(host: String) -> String? {
        guard suffix != nil else { return nil }
        var host = host
        return host.withUTF8 { bytes -> String? in
            guard isSessionHost(bytes) else { return nil }
            return String(unsafeUninitializedCapacity: 32) { id in
                for index in 0..<32 { id[index] = Self.lower(bytes[index]) }
                return 32
            }
        }
    }

    /// Whether `host` is session `id`'s origin (``sessionID(host:)`` without making a string).
    func isHost(_ host: String, ofSession id: String) -> Bool {
        guard suffix != nil else { return false }
        var (host, id) = (host, id)
        return host.withUTF8 { bytes in
            id.withUTF8 { id in
                id.count == 32 && isSessionHost(bytes) && (0..<32).allSatisfy { Self.lower(bytes[$0]) == id[$0] }
            }
        }
    }

    /// Whether `host` is some session's origin (``sessionID(host:)`` without making a string).
    func isSessionHost(_ host: String) -> Bool {
        guard suffix != nil else { return false }
        var host = host
        return host.withUTF8 { isSessionHost($0) }
    }

    /// Whether the bytes of a `Host` value are `<32 hex digits><suffix>[.][:port]`, in any case.
    private func isSessionHost(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        var end = bytes.count
        // `:port`: digits after the last colon.
        var digit = end
        while digit > 0, bytes[digit - 1] >= UInt8(ascii: "0"), bytes[digit - 1] <= UInt8(ascii: "9") { digit -= 1 }
        if digit > 0, digit < end, bytes[digit - 1] == UInt8(ascii: ":") { end = digit - 1 }
        if end > 0, bytes[end - 1] == UInt8(ascii: ".") { end -= 1 }
        guard end == 32 + suffixBytes.count else { return false }
        for index in 0..<suffixBytes.count where Self.lower(bytes[32 + index]) != suffixBytes[index] { return false }
        for index in 0..<32 {
            let byte = Self.lower(bytes[index])
            guard (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")) || (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "f")) else { return false }
        }
        return true
    }

    private static func lower(_ byte: UInt8) -> UInt8 {
        byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") ? byte + 32 : byte
    }

    /// Whether `text` has Drover's form of a session id: 32 lower-case hex digits.
    static func isSessionID(_ text: some StringProtocol) -> Bool {
        text.utf8.count == 32 && text.utf8.allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) }
    }

    /// `host` without its port or a trailing dot, in lower case.
    static func hostName(_ host: String) -> String {
        var name = Substring(host.lowercased())
        if !name.hasPrefix("["), let colon = name.lastIndex(of: ":") { name = name[..<colon] }
        if name.hasSuffix(".") { name = name.dropLast() }
        return String(name)
    }

    /// `:port` of a `Host` value, or nothing.
    static func portSuffix(_ host: String) -> String {
        guard !host.hasSuffix("]"), let colon = host.lastIndex(of: ":") else { return "" }
        let port = host[host.index(after: colon)...]
        return !port.isEmpty && port.allSatisfy(\.isASCII) && port.allSatisfy(\.isNumber) ? ":" + port : ""
    }

    /// `scheme://<id>.<domain>[:port]`, the port being the one the browser used (`host`).
    func origin(ofSession id: String, scheme: String, host: String) -> String {
        "\(scheme)://\(id).\(domain ?? "")\(Self.portSuffix(host))"
    }

    /// `scheme://<www-main-host>[:port]`, the port being the one the browser used (`host`).
    func mainOrigin(scheme: String, host: String) -> String {
        "\(scheme)://\(mainHost ?? Self.hostName(host))\(Self.portSuffix(host))"
    }

    /// Fetch metadata (`Sec-Fetch-*`), as browsers send it: whether `head` came from a page of
    /// another origin (a sibling subdomain included) and is not a top-level navigation by `GET`
    /// or `HEAD`. Such a request is a page driving the user's browser at this origin (a fetch,
    /// a WebSocket, an embedded frame, a form posted to it). Clients that send no `Sec-Fetch-Site`
    /// are not browsers, and are let through.
    static func isForeignNonNavigation(_ head: HTTPRequestHead) -> Bool {
        guard let site = head.headers.first(name: "Sec-Fetch-Site") else { return false }
        if site == "same-origin" || site == "none" { return false }
        let navigation = head.headers.first(name: "Sec-Fetch-Mode") == "navigate"
            && (head.headers.first(name: "Sec-Fetch-Dest").map { $0 == "document" } ?? true)
        return !(navigation && (head.method == .GET || head.method == .HEAD))
    }

    /// What a session's origin refuses: ``isForeignNonNavigation(_:)`` or ``isForeignWrite(_:own:)``.
    /// The own origin is `scheme://host`, built only when a write's `Origin` is compared.
    static func isForeign(_ head: HTTPRequestHead, own scheme: String, host: String) -> Bool {
        if isForeignNonNavigation(head) { return true }
        guard ![.GET, .HEAD, .OPTIONS].contains(head.method) else { return false }
        return isForeignWrite(head, own: scheme + "://" + host)
    }

    /// Without fetch metadata (browsers that do not send it), a write whose `Origin` is not
    /// `own` (`scheme://host`): a page of another origin posting to this one.
    static func isForeignWrite(_ head: HTTPRequestHead, own: String) -> Bool {
        guard !head.headers.contains(name: "Sec-Fetch-Site"), ![.GET, .HEAD, .OPTIONS].contains(head.method),
              let origin = head.headers.first(name: "Origin") else { return false }
        return origin.lowercased() != own.lowercased()
    }

    /// A host inside the sessions' domain that is no session's (`login.<domain>`, the domain
    /// itself): refused, so that nothing of Drover's is served same-site with every session.
    func refusesInsideDomain(_ host: String) -> HTTPResponse? {
        guard let domain, let suffix else { return nil }
        let name = Self.hostName(host)
        guard name == domain || name.hasSuffix(suffix), name != mainHost else { return nil }
        return .text(.misdirectedRequest, "misdirected: \(name.prefix(100)) is inside www-session-domain and is no session's origin\n")
    }

    static func foreignRefusal(_ head: HTTPRequestHead, of what: String) -> HTTPResponse {
        .text(.forbidden, "forbidden: a request to \(what) from a page of another site (Sec-Fetch-Site: "
              + "\(head.headers.first(name: "Sec-Fetch-Site")?.prefix(40) ?? "")) that is not a top-level navigation\n",
              headers: ["Cache-Control": "no-store"])
    }
}

/// Signing a browser in to a session's origin without ever sending it the main sign-in cookie,
/// as JupyterHub's OAuth hand-off does for single-user servers:
///
/// 1. the session's origin, for a page opened without its cookie, sets a state cookie (random,
///    host-only) and sends the browser to the main origin's ``ticketPath``;
/// 2. the main origin checks that its signed-in user owns the session and sends the browser back
///    to the session's ``callbackPath`` with a ``SessionTicket`` bound to that state;
/// 3. the session's origin takes the ticket once for the whole cluster (the registry records
///    it), only from the browser holding the state, sets the session's cookie
///    (``SessionCookie``) and answers 303 to the page, the ticket out of the address bar.
///
/// Without the state, an attacker could send a victim their own ticket and sign the victim in
/// to the attacker's session (login CSRF).
struct SessionSignIn: Sendable {
    static let ticketPath = "/_drover/ticket"
    static let callbackPath = "/_drover/callback"
    /// Seconds a state cookie lasts: one sign-in round.
    static let stateLifetime = 600

    let auth: Authentication
    let origins: SessionOrigins
    let sessions: SessionManager

    var stateCookieName: String { auth.secureCookies ? "__Host-drover-state" : "drover-state" }

    /// Step 1, on a session's origin: a page opened without the session's cookie.
    func begin(_ head: HTTPRequestHead, session id: String, scheme: String, host: String) -> HTTPResponse {
        let cookies = head.headers.first(name: "Cookie")
        // A sign-in already under way in another tab keeps its state: both tickets then match.
        let existing = SignInCookie.value(named: stateCookieName, inHeader: cookies).flatMap { Self.isState($0) ? $0 : nil }
        let state = existing ?? Crypto.randomBytes(16).hexString
        let next = Self.next(head.uri, session: id)
        let location = origins.mainOrigin(scheme: scheme, host: host) + Self.ticketPath + "?session=\(id)&state=\(state)&next=" + Self.encoded(next)
        var headers: HTTPHeaders = ["Location": location, "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"]
        if existing == nil {
            headers.add(name: "Set-Cookie", value: auth.setCookie(stateCookieName, state, maxAge: Self.stateLifetime))
        }
        return HTTPResponse(status: .seeOther, headers: headers)
    }

    /// Step 2, on the main origin: `GET /_drover/ticket?session=ID&state=S&next=PATH`.
    func ticket(_ request: HTTPRequest, scheme: String, host: String) async -> HTTPResponse {
        let head = request.head
        guard head.method == .GET else { return .text(.methodNotAllowed, "the ticket endpoint takes GET\n") }
        guard !auth.authNone else { return .text(.badRequest, "with auth-none a session's origin needs no ticket: open the session again\n") }
        // Opened by the browser itself (the session's origin redirected it), never fetched by a page.
        if let mode = head.headers.first(name: "Sec-Fetch-Mode"), mode != "navigate" {
            return .text(.forbidden, "forbidden: a session's sign-in ticket is given to a navigation only\n")
        }
        let query = Self.query(request.head.uri)
        guard let id = query["session"], SessionOrigins.isSessionID(id), let state = query["state"], Self.isState(state) else {
            return .text(.badRequest, "a ticket request names a session (32 hex digits) and a state (32 hex digits)\n")
        }
        guard let cookie = auth.cookie(request), let user = auth.user(request), let signIn = SignInIdentity(cookie: cookie) else {
            // Signed in first, then back here.
            return HTTPResponse(status: .seeOther, headers: ["Location": "/?next=" + Self.encoded(request.head.uri), "Cache-Control": "no-store"])
        }
        do {
            guard let session = try await sessions.runtime.store.session(id), session.username == user else {
                return .text(.notFound, "no such session\n", headers: ["Cache-Control": "no-store"])
            }
        } catch {
            return .failure(error, prefix: "the registry is unavailable: ")
        }
        let ticket = SessionTicket.issue(user: user, session: id, state: state, signIn: signIn, key: auth.key, now: auth.clock.wall())
        let next = Self.next(query["next"] ?? "", session: id)
        let location = origins.origin(ofSession: id, scheme: scheme, host: host) + Self.callbackPath + "?ticket=\(ticket)&next=" + Self.encoded(next)
        return HTTPResponse(status: .seeOther, headers: ["Location": location, "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"])
    }

    /// Step 3, on a session's origin: `GET /_drover/callback?ticket=T&next=PATH`.
    func callback(_ request: HTTPRequest, session id: String) async -> HTTPResponse {
        let refused: (HTTPResponseStatus, String) -> HTTPResponse = { status, why in
            .text(status, why + "; open the session again from Drover's page\n", headers: ["Cache-Control": "no-store", "Referrer-Policy": "no-referrer"])
        }
        guard request.head.method == .GET else { return refused(.methodNotAllowed, "the callback takes GET") }
        let query = Self.query(request.head.uri)
        let now = auth.clock.wall()
        let claims: SessionTicket.Claims
        do {
            claims = try SessionTicket.verify(query["ticket"] ?? "", key: auth.key, now: now)
        } catch {
            return refused(.forbidden, "forbidden: \(error)")
        }
        guard claims.session == id else { return refused(.forbidden, "forbidden: this sign-in link is for another session") }
        // Only the browser that started this sign-in holds its state.
        guard let state = SignInCookie.value(named: stateCookieName, inHeader: request.head.headers.first(name: "Cookie")),
              Crypto.constantTimeEquals(Array(state.utf8), Array(claims.state.utf8)) else {
            return refused(.forbidden, "forbidden: this sign-in link was not started by this browser")
        }
        guard !claims.signIn.isRevoked(in: auth.revocations, lifetime: auth.lifetime) else {
            return refused(.forbidden, "forbidden: the sign-in this link came from has ended")
        }
        do {
            guard try await sessions.runtime.store.consumeTicket(claims.nonce, expiresAt: Date(timeIntervalSince1970: claims.expiry), now: now) else {
                sessions.runtime.reportRefusal(.ticketReplayed(session: id), key: "ticket-replayed")
                return refused(.forbidden, "forbidden: this sign-in link was used already")
            }
        } catch {
            return .failure(error, prefix: "the registry is unavailable: ")
        }
        let grant = SessionCookie.Grant(user: claims.user, session: id, signIn: claims.signIn)
        let value = SessionCookie.issue(grant, key: auth.key)
        let maxAge = max(1, Int(claims.signIn.expiry - now.timeIntervalSince1970))
        var headers: HTTPHeaders = ["Location": Self.next(query["next"] ?? "", session: id), "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"]
        headers.add(name: "Set-Cookie", value: auth.setCookie(SessionCookie.name(secure: auth.secureCookies), value, maxAge: maxAge))
        headers.add(name: "Set-Cookie", value: auth.setCookie(stateCookieName, "", maxAge: 0))
        return HTTPResponse(status: .seeOther, headers: headers)
    }

    /// A state value: 32 hex digits, the form of a session id.
    static func isState(_ text: String) -> Bool { SessionOrigins.isSessionID(text) }

    /// Where to go after signing in: `path` when it is the session's (`/s/<id>` or below it,
    /// printable, no `\`), else the session's front page.
    static func next(_ path: String, session id: String) -> String {
        let base = "/s/\(id)"
        let printable = path.unicodeScalars.allSatisfy { $0.value > 0x20 && $0.value < 0x7f && $0 != "\\" }
        guard printable, path == base || path.hasPrefix(base + "/") || path.hasPrefix(base + "?") else { return base + "/" }
        return path
    }

    static func encoded(_ text: String) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~/")
        return text.addingPercentEncoding(withAllowedCharacters: allowed) ?? ""
    }

    /// The query of `uri`, decoded (the first of a repeated name).
    static func query(_ uri: String) -> [String: String] {
        guard let mark = uri.firstIndex(of: "?") else { return [:] }
        var fields: [String: String] = [:]
        for pair in uri[uri.index(after: mark)...].split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1).map { String($0).replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? "" }
            if parts.count == 2, fields[parts[0]] == nil { fields[parts[0]] = parts[1] }
        }
        return fields
    }
}
