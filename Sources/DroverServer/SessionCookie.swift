import DroverKernel
import Foundation

/// What a session's own origin (`www-session-domain`) signs its user in with: a cookie scoped
/// to that one host and bound to the user and the session, issued in exchange for a
/// ``SessionTicket``. It lives no longer than the main sign-in it was issued from, and it is
/// revoked with it: it carries that sign-in's digest and expiry (``SignInIdentity``).
///
/// Format: `c1.<user, base64url>.<session id>.<sign-in's expiry>.<sign-in's digest>.<nonce hex>.<hmac hex>`.
enum SessionCookie {
    static let purpose = "session cookie"

    /// The cookie's name: `__Host-` over https, so no other host (a sibling subdomain) can set
    /// one over it.
    static func name(secure: Bool) -> String { secure ? "__Host-drover-session" : "drover-session" }

    struct Grant: Equatable {
        var user: String
        var session: String
        /// The main sign-in this was issued from.
        var signIn: SignInIdentity
    }

    static func issue(_ grant: Grant, key: SecureCookieKey) -> String {
        let payload = "c1.\(SignedFields.encode(grant.user)).\(grant.session).\(Int(grant.signIn.expiry)).\(grant.signIn.digest)."
            + Crypto.randomBytes(8).hexString
        return payload + "." + key.sign(Array(payload.utf8), purpose: purpose).hexString
    }

    /// The grant a cookie value carries, if it is genuine and unexpired (revocation is the
    /// caller's to check).
    static func verify(_ value: String, key: SecureCookieKey, now: Date) -> Grant? {
        guard let fields = SignedFields.verify(value, version: "c1", count: 5, key: key, purpose: purpose),
              let user = SignedFields.decode(fields[0]), SessionOrigins.isSessionID(fields[1]), let expiry = Double(fields[2]),
              expiry > now.timeIntervalSince1970 else { return nil }
        return Grant(user: user, session: String(fields[1]), signIn: SignInIdentity(user: user, expiry: expiry, digest: String(fields[3])))
    }
}

/// The short-lived, single-use, signed proof the main origin hands a session's origin through
/// the browser (a redirect), as an OAuth authorization code: that the main origin's signed-in
/// user owns the session, for the browser holding `state` (a cookie the session's origin set
/// before sending it to the main origin).
///
/// Format: `t1.<user>.<session id>.<state>.<expiry>.<sign-in's expiry>.<sign-in's digest>.<nonce hex>.<hmac hex>`.
enum SessionTicket {
    static let purpose = "session ticket"
    /// Seconds a ticket may take from the main origin to the session's: one redirect.
    static let lifetime: TimeInterval = 60

    struct Claims: Equatable {
        var user: String
        var session: String
        var state: String
        var expiry: Double
        var signIn: SignInIdentity
        /// What the registry records as used (``RegistryStore/consumeTicket(_:expiresAt:now:)``).
        var nonce: String
    }

    static func issue(user: String, session: String, state: String, signIn: SignInIdentity, key: SecureCookieKey, now: Date) -> String {
        let payload = "t1.\(SignedFields.encode(user)).\(session).\(state).\(Int(now.timeIntervalSince1970 + lifetime)).\(Int(signIn.expiry))."
            + "\(signIn.digest).\(Crypto.randomBytes(16).hexString)"
        return payload + "." + key.sign(Array(payload.utf8), purpose: purpose).hexString
    }

    enum Refusal: Error, Equatable, CustomStringConvertible {
        case malformed
        case expired

        var description: String {
            switch self {
            case .malformed: "this sign-in link is not genuine"
            case .expired: "this sign-in link has expired"
            }
        }
    }

    static func verify(_ value: String, key: SecureCookieKey, now: Date) throws(Refusal) -> Claims {
        guard let fields = SignedFields.verify(value, version: "t1", count: 7, key: key, purpose: purpose),
              let user = SignedFields.decode(fields[0]), SessionOrigins.isSessionID(fields[1]),
              let expiry = Double(fields[3]), let signInExpiry = Double(fields[4]) else { throw .malformed }
        guard expiry > now.timeIntervalSince1970, signInExpiry > now.timeIntervalSince1970 else { throw .expired }
        return Claims(user: user, session: String(fields[1]), state: String(fields[2]), expiry: expiry,
                      signIn: SignInIdentity(user: user, expiry: signInExpiry, digest: String(fields[5])), nonce: String(fields[6]))
    }
}

/// The main sign-in a session's cookie or ticket stands for: what revoking that sign-in (sign
/// out, `drover revoke-user`) and its expiry are checked against.
struct SignInIdentity: Equatable, Sendable {
    var user: String
    /// Unix seconds.
    var expiry: Double
    /// ``SignInCookie/digest(of:)`` of the main cookie.
    var digest: String

    /// The identity of a main sign-in cookie's value (its signature is not checked here).
    init?(cookie: String) {
        guard let user = SignInCookie.user(of: cookie), let expiry = SignInCookie.expiry(of: cookie) else { return nil }
        self.init(user: user, expiry: expiry, digest: SignInCookie.digest(of: cookie))
    }

    init(user: String, expiry: Double, digest: String) {
        self.user = user
        self.expiry = expiry
        self.digest = digest
    }

    func isRevoked(in revocations: RevocationList, lifetime: TimeInterval) -> Bool {
        revocations.isRevoked(digest: digest, user: user, issuedAt: expiry - lifetime)
    }
}

/// Dot-separated fields signed with an HMAC as the last field, behind a version tag.
enum SignedFields {
    static func encode(_ text: String) -> String {
        Data(text.utf8).base64EncodedString().replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }

    static func decode(_ field: Substring) -> String? {
        var base64 = field.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while base64.count % 4 != 0 { base64 += "=" }
        return Data(base64Encoded: base64).flatMap { String(data: $0, encoding: .utf8) }.flatMap { $0.isEmpty ? nil : $0 }
    }

    /// The `count` fields between the version and the signature, when the signature is right.
    static func verify(_ value: String, version: String, count: Int, key: SecureCookieKey, purpose: String) -> [Substring]? {
        let parts = value.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == count + 2, parts[0] == version, let given = [UInt8](hexString: parts[parts.count - 1]), given.count == 32 else { return nil }
        let payload = parts.dropLast().joined(separator: ".")
        guard Crypto.constantTimeEquals(given, key.sign(Array(payload.utf8), purpose: purpose)) else { return nil }
        return Array(parts[1...count])
    }
}
