import DroverKernel
@testable import DroverServer
import Foundation
import NIOHTTP1
import Testing

/// Issue 37: the pieces of session origins that need no node — which `Host` is which session's
/// origin, fetch metadata, the session cookie and the ticket, and Drover's cookies kept from
/// sessions. The hand-off itself runs against real nodes in `SessionOriginTests`.
@Suite struct SessionOriginsTests {
    static let id = "0123456789abcdef0123456789abcdef"
    let origins = SessionOrigins(domain: "sessions.example.com", mainHost: "drover.example.com")
    let key = SecureCookieKey(bytes: Array("session-origin-test-key-012345".utf8))
    let now = Date(timeIntervalSince1970: 1_800_000_000)

    @Test(arguments: [
        ("\(id).sessions.example.com", id),
        ("\(id).sessions.example.com:8443", id),
        ("\(id.uppercased()).Sessions.Example.COM", id),
        ("\(id).sessions.example.com.", id),
        ("\(id).sessions.example.com.:443", id),
        // Not a session's origin: another domain, a name that only ends like one, a label of
        // the wrong form, a deeper name, Drover's own host.
        ("\(id).sessions.example.com.evil.test", nil),
        ("x\(id).sessions.example.com", nil),
        ("a.\(id).sessions.example.com", nil),
        ("\(id)sessions.example.com", nil),
        ("\(id.dropLast()).sessions.example.com", nil),
        ("0123456789abcdef0123456789abcdeg.sessions.example.com", nil),
        ("drover.example.com", nil),
        ("sessions.example.com", nil),
        ("", nil),
    ] as [(String, String?)])
    func theSessionIsTheLabelInFrontOfTheDomain(host: String, expected: String?) {
        #expect(origins.sessionID(host: host) == expected)
        #expect(SessionOrigins().sessionID(host: host) == nil, "without a session domain no host is a session's")
        // The forms that make no string agree with it.
        #expect(origins.isSessionHost(host) == (expected != nil))
        #expect(origins.isHost(host, ofSession: Self.id) == (expected == Self.id))
        #expect(!origins.isHost(host, ofSession: String(Self.id.reversed())))
    }

    @Test func originsKeepThePortTheBrowserUsed() {
        #expect(origins.origin(ofSession: Self.id, scheme: "https", host: "drover.example.com:8443") == "https://\(Self.id).sessions.example.com:8443")
        #expect(origins.origin(ofSession: Self.id, scheme: "https", host: "drover.example.com") == "https://\(Self.id).sessions.example.com")
        #expect(origins.mainOrigin(scheme: "http", host: "\(Self.id).sessions.example.com:8080") == "http://drover.example.com:8080")
        #expect(origins.mainOrigin(scheme: "https", host: "\(Self.id).sessions.example.com:80x") == "https://drover.example.com", "not a port: dropped")
    }

    static func head(_ method: HTTPMethod = .GET, _ fetch: [(String, String)]) -> HTTPRequestHead {
        HTTPRequestHead(version: .http1_1, method: method, uri: "/s/\(id)/", headers: HTTPHeaders(fetch))
    }

    @Test(arguments: [
        // Not a browser, or the page's own origin, or typed into the address bar: let through.
        ([], HTTPMethod.GET, false),
        ([("Sec-Fetch-Site", "same-origin"), ("Sec-Fetch-Mode", "cors")], .POST, false),
        ([("Sec-Fetch-Site", "none"), ("Sec-Fetch-Mode", "navigate")], .GET, false),
        // A link or redirect from another site, opened as a page.
        ([("Sec-Fetch-Site", "cross-site"), ("Sec-Fetch-Mode", "navigate"), ("Sec-Fetch-Dest", "document")], .GET, false),
        ([("Sec-Fetch-Site", "same-site"), ("Sec-Fetch-Mode", "navigate"), ("Sec-Fetch-Dest", "document")], .HEAD, false),
        // Another site's page driving this one: a fetch, a WebSocket, a frame, a posted form.
        ([("Sec-Fetch-Site", "same-site"), ("Sec-Fetch-Mode", "cors")], .GET, true),
        ([("Sec-Fetch-Site", "same-site"), ("Sec-Fetch-Mode", "websocket")], .GET, true),
        ([("Sec-Fetch-Site", "cross-site"), ("Sec-Fetch-Mode", "no-cors")], .GET, true),
        ([("Sec-Fetch-Site", "same-site"), ("Sec-Fetch-Mode", "navigate"), ("Sec-Fetch-Dest", "iframe")], .GET, true),
        ([("Sec-Fetch-Site", "same-site"), ("Sec-Fetch-Mode", "navigate"), ("Sec-Fetch-Dest", "document")], .POST, true),
    ] as [([(String, String)], HTTPMethod, Bool)])
    func fetchMetadataRefusesOtherSitesPagesButNotNavigations(headers: [(String, String)], method: HTTPMethod, refused: Bool) {
        #expect(SessionOrigins.isForeignNonNavigation(Self.head(method, headers)) == refused)
    }

    var signIn: SignInIdentity { SignInIdentity(user: "alice", expiry: now.timeIntervalSince1970 + 3600, digest: String(repeating: "ab", count: 32)) }

    @Test func aSessionCookieIsForItsSessionItsUserAndNoLongerThanItsSignIn() {
        let grant = SessionCookie.Grant(user: "alice", session: Self.id, signIn: signIn)
        let cookie = SessionCookie.issue(grant, key: key)
        #expect(SessionCookie.verify(cookie, key: key, now: now) == grant)
        #expect(SessionCookie.verify(cookie, key: SecureCookieKey(bytes: Array("another-cluster-key-0123456789".utf8)), now: now) == nil)
        #expect(SessionCookie.verify(cookie, key: key, now: now.addingTimeInterval(3600)) == nil, "expires with the sign-in")
        // Any change to what it says breaks its signature: another user, another session.
        let bob = cookie.replacingOccurrences(of: SignedFields.encode("alice"), with: SignedFields.encode("bob"))
        let other = cookie.replacingOccurrences(of: Self.id, with: String(Self.id.reversed()))
        #expect(SessionCookie.verify(bob, key: key, now: now) == nil)
        #expect(SessionCookie.verify(other, key: key, now: now) == nil)
        // A ticket or a main sign-in cookie is not a session cookie, though signed by the same key.
        let ticket = SessionTicket.issue(user: "alice", session: Self.id, state: "s", signIn: signIn, key: key, now: now)
        #expect(SessionCookie.verify(ticket, key: key, now: now) == nil)
        #expect(SessionCookie.verify(SignInCookie.issue(username: "alice", lifetime: 3600, key: key, now: now), key: key, now: now) == nil)
        #expect(SessionCookie.name(secure: true) == "__Host-drover-session" && SessionCookie.name(secure: false) == "drover-session")
    }

    @Test func aTicketSaysWhoWhichSessionAndWhichBrowserForAMinute() throws {
        let state = String(repeating: "5", count: 32)
        let ticket = SessionTicket.issue(user: "alice", session: Self.id, state: state, signIn: signIn, key: key, now: now)
        let claims = try SessionTicket.verify(ticket, key: key, now: now.addingTimeInterval(59))
        #expect(claims.user == "alice" && claims.session == Self.id && claims.state == state && claims.signIn == signIn)
        #expect(claims.nonce.count == 32)
        #expect(throws: SessionTicket.Refusal.expired) { try SessionTicket.verify(ticket, key: key, now: now.addingTimeInterval(61)) }
        #expect(throws: SessionTicket.Refusal.malformed) {
            try SessionTicket.verify(ticket.replacingOccurrences(of: state, with: String(repeating: "6", count: 32)), key: key, now: now)
        }
        let twice = SessionTicket.issue(user: "alice", session: Self.id, state: state, signIn: signIn, key: key, now: now)
        #expect(try SessionTicket.verify(twice, key: key, now: now).nonce != claims.nonce, "each ticket is used once: its own nonce")
    }

    @Test func droverCookiesNeverReachASession() {
        let header = "a=1; drover-auth=x; __Host-drover-auth=y; __Host-drover-session=z; drover-state=s; drover-other=q; droverish=2; __Host-b=3"
        #expect(SignInCookie.removingDroverCookies(fromHeader: header) == "a=1; droverish=2; __Host-b=3")
        #expect(SignInCookie.hasDroverCookie(inHeader: header))
        #expect(!SignInCookie.hasDroverCookie(inHeader: "a=1; droverish=2; __Host-x=1"))
        #expect(SignInCookie.removingDroverCookies(fromHeader: "__Host-drover-session=z") == nil)
        let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: "/s/\(Self.id)/", headers: ["Host": "h", "Cookie": header])
        let outgoing = ForwardedRequest.head(for: head, clientAddress: "127.0.0.9", isTLS: true, adding: [], upgrade: false)
        #expect(outgoing.headers["Cookie"] == ["a=1; droverish=2; __Host-b=3"])
    }

    @Test func afterSigningInTheBrowserGoesOnlyWhereItShould() {
        #expect(SessionSignIn.next("/s/\(Self.id)/lab?x=1", session: Self.id) == "/s/\(Self.id)/lab?x=1")
        #expect(SessionSignIn.next("/s/\(Self.id)", session: Self.id) == "/s/\(Self.id)")
        for elsewhere in ["//evil.test/", "https://evil.test/", "/s/\(Self.id)x", "/admin", "/s/\(Self.id)/a b", "/s/\(Self.id)/\\evil", ""] {
            #expect(SessionSignIn.next(elsewhere, session: Self.id) == "/s/\(Self.id)/", "\(elsewhere)")
        }
        #expect(UserAPI.afterSignIn("/_drover/ticket?session=\(Self.id)&state=s") != nil)
        for elsewhere in ["//evil.test", "/_drover/ticketx", "/admin", "https://evil.test/_drover/ticket?", "/_drover/ticket?a\r\nb", nil] {
            #expect(UserAPI.afterSignIn(elsewhere) == nil, "\(elsewhere ?? "nil")")
        }
        #expect(SessionSignIn.query("/x?session=a&state=b%20c&session=z") == ["session": "a", "state": "b c"])
    }
}
