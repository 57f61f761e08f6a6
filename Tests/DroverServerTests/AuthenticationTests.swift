import DroverKernel
@testable import DroverServer
import Foundation
import NIOHTTP1
import Testing

@Suite struct AuthenticationTests {
    let key = SecureCookieKey(bytes: Array("authentication-tests-key-0123456789".utf8))

    func headers(_ cookie: String) -> HTTPHeaders {
        HTTPHeaders([("Cookie", "other=1; \(SignInCookie.name)=\(cookie)")])
    }

    @Test func aVerifiedCookieIsRememberedButATamperedOrExpiredOneNever() {
        let auth = Authentication(key: key, authNone: false, pamService: "drover", secure: false)
        let cookie = SignInCookie.issue(username: "alice", lifetime: 3600, key: key)
        #expect(auth.user(headers: headers(cookie)) == "alice")
        #expect(auth.verified.user(for: cookie, now: Date()) == "alice", "remembered")
        #expect(auth.user(headers: headers(cookie)) == "alice", "from memory")
        // Another user's name under alice's signature is refused, and not remembered.
        let forged = cookie.replacingOccurrences(of: cookie.split(separator: ".")[1], with: "Ym9i")
        #expect(auth.user(headers: headers(forged)) == nil)
        #expect(auth.verified.user(for: forged, now: Date()) == nil)
        let expired = SignInCookie.issue(username: "alice", lifetime: -10, key: key)
        #expect(auth.user(headers: headers(expired)) == nil)
        #expect(auth.user(headers: HTTPHeaders()) == nil)
    }

    @Test func aRememberedCookieStillExpiresOnTime() {
        let memory = VerifiedCookies()
        let now = Date()
        memory.remember("c", user: "alice", expiry: now.timeIntervalSince1970 + 1, digest: "d")
        #expect(memory.user(for: "c", now: now) == "alice")
        #expect(memory.user(for: "c", now: now.addingTimeInterval(2)) == nil)
        #expect(memory.user(for: "c", now: now) == nil, "forgotten once expired")
    }

    @Test func theMemoryIsBounded() {
        let memory = VerifiedCookies()
        let expiry = Date().timeIntervalSince1970 + 3600
        for index in 0..<VerifiedCookies.capacity { memory.remember("c\(index)", user: "u", expiry: expiry, digest: "d") }
        #expect(memory.user(for: "c0", now: Date()) == "u")
        memory.remember("one-more", user: "u", expiry: expiry, digest: "d")
        #expect(memory.user(for: "c0", now: Date()) == nil, "started again from empty")
        #expect(memory.user(for: "one-more", now: Date()) == "u")
    }

    @Test func aHostIsRememberedOnlyOnceAcceptedAndTheMemoryIsBounded() {
        let auth = Authentication(key: key, authNone: true, pamService: "drover", secure: false, hostNames: ["drover.example"])
        for _ in 0..<2 {  // the second round answers from memory
            #expect(auth.refusesHost(HTTPHeaders([("Host", "127.0.0.1:8787")])) == nil)
            #expect(auth.refusesHost(HTTPHeaders([("Host", "Drover.Example:8787")])) == nil)
            #expect(auth.refusesHost(HTTPHeaders([("Host", "[::1]:8787")])) == nil)
            #expect(auth.refusesHost(HTTPHeaders([("Host", "rebound.attacker.example:8787")]))?.status == .misdirectedRequest)
        }
        #expect(auth.knownOwnHosts.contains("127.0.0.1:8787"))
        #expect(!auth.knownOwnHosts.contains("rebound.attacker.example:8787"), "a refused host is never remembered")
        for port in 0..<(2 * KnownOwnHosts.capacity) { #expect(auth.isOwnHost("127.0.0.1:\(port)")) }
        #expect(!auth.knownOwnHosts.contains("127.0.0.1:\(2 * KnownOwnHosts.capacity - 1)"), "no more than its capacity kept")
    }
}
