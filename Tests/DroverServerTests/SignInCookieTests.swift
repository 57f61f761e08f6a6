import DroverKernel
import DroverServer
import Foundation
import Testing

@Suite struct SignInCookieTests {
    let key = SecureCookieKey(bytes: Array("cookie-test-key-0123456789".utf8))
    let now = Date(timeIntervalSince1970: 1_800_000_000)

    @Test func aGenuineCookieNamesItsUserOnAnyNodeWithTheKey() throws {
        let cookie = SignInCookie.issue(username: "jdoe", lifetime: 3600, key: key, now: now)
        #expect(try SignInCookie.verify(cookie, key: SecureCookieKey(bytes: Array("cookie-test-key-0123456789".utf8)), now: now) == "jdoe")
        #expect(try SignInCookie.verify(SignInCookie.issue(username: "o'brien-ü", lifetime: 60, key: key, now: now), key: key, now: now) == "o'brien-ü")
    }

    @Test func tamperedExpiredForeignAndMalformedCookiesAreRefused() throws {
        let cookie = SignInCookie.issue(username: "jdoe", lifetime: 3600, key: key, now: now)
        var parts = cookie.split(separator: ".").map(String.init)
        parts[1] = "cm9vdA"  // "root"
        #expect(throws: SignInCookie.Refusal.badSignature) { try SignInCookie.verify(parts.joined(separator: "."), key: key, now: now) }
        var longer = cookie.split(separator: ".").map(String.init)
        longer[2] = String(Int(longer[2])! + 86_400)
        #expect(throws: SignInCookie.Refusal.badSignature) { try SignInCookie.verify(longer.joined(separator: "."), key: key, now: now) }
        #expect(throws: SignInCookie.Refusal.expired) { try SignInCookie.verify(cookie, key: key, now: now.addingTimeInterval(3601)) }
        #expect(throws: SignInCookie.Refusal.badSignature) {
            try SignInCookie.verify(cookie, key: SecureCookieKey(bytes: Array("another-cluster-key-000".utf8)), now: now)
        }
        for junk in ["", "v1", "v2.a.b.c", "v1.am.x.00", "v1.am.1." + String(repeating: "z", count: 64)] {
            #expect(throws: SignInCookie.Refusal.malformed) { try SignInCookie.verify(junk, key: key, now: now) }
        }
    }

    @Test func twoSignInsInOneSecondGetTwoCookiesAndTheOldFormStillVerifies() throws {
        let a = SignInCookie.issue(username: "jdoe", lifetime: 3600, key: key, now: now)
        let b = SignInCookie.issue(username: "jdoe", lifetime: 3600, key: key, now: now)
        #expect(a != b && SignInCookie.digest(of: a) != SignInCookie.digest(of: b), "signing one out must not sign the other out")
        #expect(a.hasPrefix("v2.") && a.split(separator: ".").count == 5)
        #expect(SignInCookie.user(of: a) == "jdoe" && SignInCookie.expiry(of: a) == now.timeIntervalSince1970 + 3600)
        // A cookie issued before nonces (v1.user.expiry.hmac) stays valid until it expires.
        let payload = "v1.amRvZQ.\(Int(now.timeIntervalSince1970) + 60)"
        let old = payload + "." + key.sign(Array(payload.utf8), purpose: "sign-in cookie").hexString
        #expect(try SignInCookie.verify(old, key: key, now: now) == "jdoe")
    }

    @Test func csrfTokensBelongToTheirCookie() {
        let a = SignInCookie.issue(username: "a", lifetime: 60, key: key, now: now)
        let b = SignInCookie.issue(username: "b", lifetime: 60, key: key, now: now)
        #expect(SignInCookie.csrfToken(for: a, key: key) == SignInCookie.csrfToken(for: a, key: key))
        #expect(SignInCookie.csrfToken(for: a, key: key) != SignInCookie.csrfToken(for: b, key: key))
        #expect(SignInCookie.value(named: "drover-auth", inHeader: "x=1; drover-auth=abc; y=2") == "abc")
        #expect(SignInCookie.value(named: "drover-auth", inHeader: "x=1") == nil)
    }

    @Test(arguments: [
        ("drover-auth=abc", "abc"), ("  drover-auth = abc  ;x=1", "abc"), ("x=1;\tdrover-auth=abc\t", "abc"),
        ("drover-auth=a=b.c", "a=b.c"), ("drover-auth2=abc; drover-auth=def", "def"), ("xdrover-auth=abc", nil),
        ("drover-auth=; drover-auth=second", "second"), ("drover-auth=", nil), ("drover-auth", nil), (";;", nil), ("", nil),
        ("=abc", nil), ("drover-authx=1;drover-auth=é", "é"),
    ] as [(String, String?)])
    func theCookieIsFoundByItsExactName(header: String, value: String?) {
        #expect(SignInCookie.value(named: "drover-auth", inHeader: header) == value)
    }

    @Test(arguments: [
        ("drover-auth=x", nil),
        ("a=1; drover-auth=x; b=2", "a=1; b=2"),
        ("drover-auth=x;theme=dark", "theme=dark"),
        ("theme=dark", "theme=dark"),
        ("my-drover-auth=1; drover-auth-x=2", "my-drover-auth=1; drover-auth-x=2"),
        (" drover-auth = x ; z=1", "z=1"),
        ("a=1;;  ; b = 2 ", "a=1; b = 2"),
        ("flag; drover-auth=x", "flag"),
        ("\ta=1\t;drover-auth=y;drover-auth=z", "a=1"),
        ("", nil),
    ] as [(String, String?)])
    func removingOneCookieKeepsTheOthers(header: String, expected: String?) {
        #expect(SignInCookie.removing("drover-auth", fromHeader: header) == expected)
    }

    @Test(arguments: [
        ("drover-auth=x", true), ("a=1; drover-auth=", true), (" drover-auth = x ; z=1", true), ("\tdrover-auth\t=y", true),
        ("my-drover-auth=1; drover-auth-x=2", false), ("drover-auth", false), ("theme=dark", false), ("", false), (";;", false),
        ("a=drover-auth", false),
    ] as [(String, Bool)])
    func aCookieIsNamedOnlyByItsExactName(header: String, named: Bool) {
        #expect(SignInCookie.names("drover-auth", inHeader: header) == named)
    }

    /// The byte scans against the obvious reading of a `Cookie` header (split on `;`, trim
    /// spaces and tabs, split each part at its first `=`), on headers made of the pieces that
    /// matter, from a fixed seed.
    @Test func theByteScansAgreeWithTheObviousReadingOnRandomHeaders() {
        let pieces = ["drover-auth", "drover-auth2", "x", "é", "=", ";", " ", "\t", "a=1", "drover-auth=v"]
        func trim(_ text: Substring) -> Substring {
            var text = text.drop { $0 == " " || $0 == "\t" }
            while let last = text.last, last == " " || last == "\t" { text = text.dropLast() }
            return text
        }
        var state: UInt64 = 0x2545F4914F6CDD1D
        for _ in 0..<5_000 {
            var header = ""
            state = state &* 6364136223846793005 &+ 1442695040888963407
            for _ in 0..<Int(state >> 60) {
                state = state &* 6364136223846793005 &+ 1442695040888963407
                header += pieces[Int(state >> 33) % pieces.count]
            }
            let parts = header.split(separator: ";", omittingEmptySubsequences: false).map(trim)
            func name(_ part: Substring) -> Substring? { part.firstIndex(of: "=").map { trim(part[..<$0]) } }
            func value(_ part: Substring) -> Substring { part.firstIndex(of: "=").map { trim(part[part.index(after: $0)...]) } ?? "" }
            let kept = parts.filter { !$0.isEmpty && name($0) != "drover-auth" }.joined(separator: "; ")
            #expect(SignInCookie.removing("drover-auth", fromHeader: header) == (kept.isEmpty ? nil : kept), "\(header.debugDescription)")
            #expect(SignInCookie.names("drover-auth", inHeader: header) == parts.contains { name($0) == "drover-auth" }, "\(header.debugDescription)")
            let found = parts.first { name($0) == "drover-auth" && !value($0).isEmpty }.map { String(value($0)) }
            #expect(SignInCookie.value(named: "drover-auth", inHeader: header) == found, "\(header.debugDescription)")
        }
    }
}
