public import DroverKernel
public import DroverCluster
import Foundation
import NIOCore
import NIOHTTP1
import Synchronization

/// Who a request comes from, and whether a state-changing request is genuine.
public struct Authentication: Sendable {
    let key: SecureCookieKey
    /// `auth-none=1`: every visitor is the daemon's own user.
    let authNone: Bool
    let daemonUser: String
    let pam: PAMAuthenticator
    /// The node serves https.
    let secure: Bool
    /// Drover's cookies are `Secure` and `__Host-` (`www-secure-cookies`; by default when the
    /// node serves https).
    let secureCookies: Bool
    /// How long a sign-in lasts.
    let lifetime: TimeInterval = 12 * 3600
    /// Cookies whose signature checked out, with their user and expiry: a browser sends the
    /// same cookie with every request, and checking its HMAC each time cost the proxy about a
    /// third of its throughput. A cookie's signature never changes its verdict while the node
    /// runs (the key is fixed until restart), and the expiry is still checked on every hit.
    let verified = VerifiedCookies()

    /// Failed sign-ins per client address and user name.
    let throttle: SignInThrottle
    /// The node's clock (``NodeClock``): cookie expiry and the throttle's windows read it.
    let clock: NodeClock

    /// With `auth-none`, the names a browser may reach this node by besides an address
    /// (lower case): `localhost`, the machine's host name, `www-host-name`.
    let ownNames: Set<String>
    /// `Host` values already found to be this node's, as sent: a browser sends the same one
    /// with every request, and parsing it as an address each time was a visible part of the
    /// proxy's cost per request.
    let knownOwnHosts = KnownOwnHosts()

    /// Revoked sign-ins (sign-out, `drover revoke-user`), kept current by the node.
    let revocations: RevocationList
    /// Where sessions are served (`www-session-domain`).
    let origins: SessionOrigins
    /// The WebSocket tunnels open with each cookie, closed when it is revoked.
    let tunnels = CookieTunnels()

    public init(key: SecureCookieKey, authNone: Bool, pamService: String, minimumUserID: Int = 1000, secure: Bool,
                hostNames: [String] = [], revocations: RevocationList = RevocationList(), clock: NodeClock = .system,
                origins: SessionOrigins = SessionOrigins(), secureCookies: Bool? = nil) {
        self.key = key
        self.secureCookies = secureCookies ?? secure
        self.origins = origins
        self.clock = clock
        throttle = SignInThrottle(wall: { clock.wall().timeIntervalSince1970 })
        self.revocations = revocations
        let (tunnels, lifetime) = (self.tunnels, self.lifetime)
        revocations.onChange { [revocations] in
            tunnels.close { signIn in signIn.isRevoked(in: revocations, lifetime: lifetime) }
        }
        self.authNone = authNone
        var names: Set<String> = ["localhost"]
        var buffer = [UInt8](repeating: 0, count: 256)
        if gethostname(&buffer, buffer.count) == 0 {
            names.insert(String(decoding: buffer.prefix { $0 != 0 }, as: UTF8.self).lowercased())
        }
        for name in hostNames { names.insert(name.lowercased()) }
        if let main = origins.mainHost { names.insert(main) }
        ownNames = names
        daemonUser = getpwuid(geteuid()).map { String(cString: $0.pointee.pw_name) } ?? "root"
        pam = PAMAuthenticator(service: pamService, minimumUserID: UInt32(clamping: minimumUserID))
        self.secure = secure
    }

    /// With `auth-none`, a request whose `Host` is a name that is not this node's is refused:
    /// a page of another site whose name was made to resolve to this node (DNS rebinding)
    /// would otherwise act as droverd's user. An address is always accepted (a browser sends
    /// one only when it was given one), as is a request without `Host` (HTTP/1.0 tools).
    /// - Returns: the refusal, or nil.
    func refusesHost(_ headers: HTTPHeaders) -> HTTPResponse? {
        guard authNone, let host = headers.first(name: "Host"), !isOwnHost(host) else { return nil }
        return .text(.misdirectedRequest, "this node does not answer to the name in Host (\(host.prefix(100))) with auth-none: "
            + "reach it by its address, localhost or www-host-name\n")
    }

    func isOwnHost(_ host: String) -> Bool {
        if knownOwnHosts.contains(host) { return true }
        // A session's own origin (`<id>.localhost` in the quick start) is the node's too.
        if origins.isSessionHost(host) { return true }
        guard Self.isOwnHost(host, names: ownNames) else { return false }
        knownOwnHosts.insert(host)
        return true
    }

    static func isOwnHost(_ host: String, names ownNames: Set<String>) -> Bool {
        var name = Substring(host.lowercased())
        if name.hasPrefix("[") {
            // [v6]:port
            guard let close = name.firstIndex(of: "]") else { return false }
            name = name[name.index(after: name.startIndex)..<close]
        } else if let colon = name.lastIndex(of: ":") {
            name = name[..<colon]
        }
        if name.hasSuffix(".") { name = name.dropLast() }
        var ipv4 = in_addr()
        var ipv6 = in6_addr()
        let text = String(name)
        if inet_pton(AF_INET, text, &ipv4) == 1 || inet_pton(AF_INET6, text, &ipv6) == 1 { return true }
        return ownNames.contains(text)
    }

    /// The signed-in user, or nil.
    func user(_ request: HTTPRequest) -> String? {
        user(headers: request.head.headers)
    }

    func user(headers: HTTPHeaders) -> String? {
        if authNone { return daemonUser }
        guard let value = cookie(headers: headers) else { return nil }
        let now = clock.wall()
        if let known = verified.entry(for: value, now: now), known.session == nil {
            return revocations.isRevoked(digest: known.digest, user: known.user, issuedAt: known.expiry - lifetime) ? nil : known.user
        }
        guard let user = try? SignInCookie.verify(value, key: key, now: now), let expiry = SignInCookie.expiry(of: value) else { return nil }
        let digest = SignInCookie.digest(of: value)
        verified.remember(value, user: user, expiry: expiry, digest: digest)
        return revocations.isRevoked(digest: digest, user: user, issuedAt: expiry - lifetime) ? nil : user
    }

    /// The main sign-in cookie's name: `__Host-` over https, so that no other host (a session's
    /// origin, a sibling subdomain) can set one over it; the browser sends it to this host only.
    var cookieName: String { secureCookies ? "__Host-" + SignInCookie.name : SignInCookie.name }

    /// On session `id`'s own origin (``SessionOrigins``): the user its cookie (``SessionCookie``)
    /// was issued to, if it is genuine, for this session, unexpired and its sign-in not revoked.
    /// The main sign-in cookie never reaches this origin, and counts for nothing here.
    func sessionUser(headers: HTTPHeaders, session id: String) -> String? {
        if authNone { return daemonUser }
        guard let value = SignInCookie.value(named: SessionCookie.name(secure: secureCookies), inHeader: headers.first(name: "Cookie")) else { return nil }
        let now = clock.wall()
        if let known = verified.entry(for: value, now: now), let session = known.session {
            guard session == id else { return nil }
            return revocations.isRevoked(digest: known.digest, user: known.user, issuedAt: known.expiry - lifetime) ? nil : known.user
        }
        guard let grant = SessionCookie.verify(value, key: key, now: now) else { return nil }
        verified.remember(value, user: grant.user, expiry: grant.signIn.expiry, digest: grant.signIn.digest, session: grant.session)
        guard grant.session == id else { return nil }
        return grant.signIn.isRevoked(in: revocations, lifetime: lifetime) ? nil : grant.user
    }

    /// The sign-in a request's cookie stands for: the main cookie's, or on a session's origin
    /// the one its session cookie was issued from (what revoking closes its tunnels by).
    func signIn(headers: HTTPHeaders, session: String?) -> SignInIdentity? {
        if let session {
            guard let value = SignInCookie.value(named: SessionCookie.name(secure: secureCookies), inHeader: headers.first(name: "Cookie")),
                  let grant = SessionCookie.verify(value, key: key, now: clock.wall()), grant.session == session else { return nil }
            return grant.signIn
        }
        return cookie(headers: headers).flatMap(SignInIdentity.init(cookie:))
    }

    /// The revocation of one cookie, kept as long as the cookie would have been valid.
    func revocation(of cookie: String, user: String) -> CookieRevocation {
        let expiry = SignInCookie.expiry(of: cookie) ?? clock.wall().timeIntervalSince1970 + lifetime
        return CookieRevocation(cookieDigest: SignInCookie.digest(of: cookie), username: user, issuedUpTo: expiry - lifetime, expiresAt: expiry)
    }

    func cookie(_ request: HTTPRequest) -> String? {
        cookie(headers: request.head.headers)
    }

    /// The sign-in cookie's value in a request's headers. Over https a cookie of the name used
    /// before `__Host-` (`drover-auth`) still counts while sessions share Drover's origin, so an
    /// upgrade (rolling, node by node) signs no one out; with session origins it does not, since
    /// a session's page could set it.
    func cookie(headers: HTTPHeaders) -> String? {
        let header = headers.first(name: "Cookie")
        if let value = SignInCookie.value(named: cookieName, inHeader: header) { return value }
        guard secureCookies, !origins.areSeparate else { return nil }
        return SignInCookie.value(named: SignInCookie.name, inHeader: header)
    }

    /// A state-changing request passes when it echoes the cookie's CSRF token (header or form
    /// field). Without a cookie (only possible with `auth-none`), it must not come from a page
    /// of another origin.
    func isGenuine(_ request: HTTPRequest, formToken: String?) -> Bool {
        if let cookie = cookie(request), !authNone || (try? SignInCookie.verify(cookie, key: key)) != nil {
            let expected = SignInCookie.csrfToken(for: cookie, key: key)
            let given = request.head.headers.first(name: "X-CSRF-Token") ?? formToken ?? ""
            return Crypto.constantTimeEquals(Array(given.utf8), Array(expected.utf8))
        }
        guard authNone else { return false }
        guard let origin = request.head.headers.first(name: "Origin") else { return true }
        let host = request.head.headers.first(name: "Host") ?? ""
        return origin.hasSuffix("://" + host)
    }

    func csrfToken(_ request: HTTPRequest) -> String? {
        csrfToken(headers: request.head.headers)
    }

    func csrfToken(headers: HTTPHeaders) -> String? {
        cookie(headers: headers).map { SignInCookie.csrfToken(for: $0, key: key) }
    }

    /// A fresh cookie for `user`: its value, and the `Set-Cookie` header that carries it.
    func issueCookie(for user: String) -> (value: String, header: String) {
        let value = SignInCookie.issue(username: user, lifetime: lifetime, key: key)
        return (value, setCookie(cookieName, value, maxAge: Int(lifetime)))
    }

    /// A `Set-Cookie` value as every cookie of Drover's is set: host-only, `Path=/`, `HttpOnly`,
    /// `SameSite=Lax`, and `Secure` when cookies are secure (`www-secure-cookies`).
    func setCookie(_ name: String, _ value: String, maxAge: Int) -> String {
        "\(name)=\(value); Path=/; HttpOnly; SameSite=Lax; Max-Age=\(maxAge)" + (secureCookies ? "; Secure" : "")
    }

    /// The `Set-Cookie` values that make the browser forget its sign-in: the cookie, and over
    /// https the name used before `__Host-` too.
    var signOutCookies: [String] {
        let current = setCookie(cookieName, "", maxAge: 0)
        return secureCookies ? [current, setCookie(SignInCookie.name, "", maxAge: 0)] : [current]
    }
}

/// A bounded memory of verified sign-in cookies (see ``Authentication/verified``).
final class VerifiedCookies: Sendable {
    /// Past this many, the memory starts again from empty.
    static let capacity = 10_000
    private let entries = Mutex<[String: Entry]>([:])

    struct Entry {
        var user: String
        var expiry: Double
        /// ``SignInCookie/digest(of:)``, for the revocation check on every hit (of the sign-in
        /// a session cookie was issued from, for one).
        var digest: String
        /// For a session's cookie (``SessionCookie``), its session; nil for a main sign-in cookie.
        var session: String?
    }

    /// A cookie verified before and not yet expired.
    func entry(for cookie: String, now: Date) -> Entry? {
        entries.withLock { entries in
            guard let entry = entries[cookie] else { return nil }
            guard entry.expiry > now.timeIntervalSince1970 else {
                entries[cookie] = nil
                return nil
            }
            return entry
        }
    }

    /// The user of a cookie verified before and not yet expired.
    func user(for cookie: String, now: Date) -> String? {
        entry(for: cookie, now: now)?.user
    }

    func remember(_ cookie: String, user: String, expiry: Double, digest: String, session: String? = nil) {
        entries.withLock { entries in
            if entries.count >= Self.capacity { entries.removeAll(keepingCapacity: true) }
            entries[cookie] = Entry(user: user, expiry: expiry, digest: digest, session: session)
        }
    }
}

/// The WebSocket tunnels this node serves, with the sign-in each was opened with, so that
/// revoking it (sign-out) closes them: a tunnel outlives the request that checked the cookie.
final class CookieTunnels: Sendable {
    private let open = Mutex<[ObjectIdentifier: (channel: any Channel, signIn: SignInIdentity)]>([:])

    func add(_ channel: any Channel, signIn: SignInIdentity) {
        let id = ObjectIdentifier(channel)
        open.withLock { $0[id] = (channel, signIn) }
        channel.closeFuture.whenComplete { _ in self.open.withLock { _ = $0.removeValue(forKey: id) } }
    }

    var count: Int { open.withLock { $0.count } }

    /// Closes every tunnel whose sign-in `revoked` says is revoked.
    func close(where revoked: (SignInIdentity) -> Bool) {
        for (channel, _) in open.withLock({ $0.values.filter { revoked($0.signIn) } }) { channel.close(promise: nil) }
    }
}

/// `Host` values accepted as the node's own (``Authentication/isOwnHost(_:)``), at most
/// ``capacity`` of them: only accepted values are kept, and once full the rest are checked
/// each time, so no client can grow it without bound.
final class KnownOwnHosts: Sendable {
    static let capacity = 64
    private let hosts = Mutex<Set<String>>([])

    func contains(_ host: String) -> Bool {
        hosts.withLock { $0.contains(host) }
    }

    func insert(_ host: String) {
        hosts.withLock { if $0.count < Self.capacity { $0.insert(host) } }
    }
}
