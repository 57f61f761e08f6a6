public import DroverKernel
public import Foundation

/// The sign-in cookie: the user and an expiry, signed with the secure cookie key, so every node
/// of the cluster accepts what any node issued. Format: `v2.<user, base64url>.<expiry>.<nonce hex>.<hmac hex>`
/// (`v1.<user>.<expiry>.<hmac>`, issued before the nonce, is still accepted).
public enum SignInCookie {
    public static let name = "drover-auth"
    static let purpose = "sign-in cookie"
    static let csrfPurpose = "csrf token"

    /// A cookie value for `username`, valid for `lifetime` seconds.
    public static func issue(username: String, lifetime: TimeInterval, key: SecureCookieKey, now: Date = Date()) -> String {
        let user = SignedFields.encode(username)
        // A random nonce, so two sign-ins in the same second get different cookies, and signing
        // one out (which revokes that cookie) leaves the other alone.
        let payload = "v2.\(user).\(Int(now.timeIntervalSince1970 + lifetime)).\(Crypto.randomBytes(8).hexString)"
        return payload + "." + key.sign(Array(payload.utf8), purpose: purpose).hexString
    }

    /// Why a cookie was refused.
    public enum Refusal: Error, Equatable, CustomStringConvertible {
        case malformed
        case badSignature
        case expired

        public var description: String {
            switch self {
            case .malformed: "malformed sign-in cookie"
            case .badSignature: "sign-in cookie with a bad signature (tampered, or from another cluster)"
            case .expired: "expired sign-in cookie"
            }
        }
    }

    /// The user a cookie value names, if it is genuine and unexpired.
    public static func verify(_ value: String, key: SecureCookieKey, now: Date = Date()) throws(Refusal) -> String {
        let parts = value.split(separator: ".", omittingEmptySubsequences: false)
        // v1 (before nonces): v1.user.expiry.hmac; v2: v2.user.expiry.nonce.hmac.
        guard (parts.count == 4 && parts[0] == "v1") || (parts.count == 5 && parts[0] == "v2"), let expiry = Double(parts[2]),
              let given = [UInt8](hexString: parts[parts.count - 1]), given.count == 32 else {
            throw .malformed
        }
        let payload = parts.dropLast().joined(separator: ".")
        guard Crypto.constantTimeEquals(given, key.sign(Array(payload.utf8), purpose: purpose)) else { throw .badSignature }
        guard expiry > now.timeIntervalSince1970 else { throw .expired }
        guard let user = SignedFields.decode(parts[1]) else { throw .malformed }
        return user
    }

    /// The user written in a cookie value, without checking its signature.
    public static func user(of value: String) -> String? {
        let parts = value.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 || parts.count == 5 else { return nil }
        return SignedFields.decode(parts[1])
    }

    /// What identifies one cookie in the registry's revocations: the SHA-256 of its signature,
    /// so a reader of the registry learns nothing that would let it rebuild the cookie.
    public static func digest(of value: String) -> String {
        let signature = value.split(separator: ".", omittingEmptySubsequences: false).last.map(String.init) ?? value
        return Crypto.sha256(Array(signature.utf8)).hexString
    }

    /// The expiry (Unix seconds) written in a cookie value, without checking its signature.
    public static func expiry(of value: String) -> Double? {
        let parts = value.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4 || parts.count == 5 ? Double(parts[2]) : nil
    }

    /// The anti-CSRF token that goes with a cookie value: state-changing requests must echo it
    /// (header `X-CSRF-Token` or form field `csrf`), which a cross-site page cannot read.
    public static func csrfToken(for cookie: String, key: SecureCookieKey) -> String {
        String(key.sign(Array(cookie.utf8), purpose: csrfPurpose).hexString.prefix(32))
    }

    /// A `Cookie` header without the cookies named `name`; nil when none is left. The parts left
    /// are joined by `; `, spaces and tabs around them dropped.
    ///
    /// Runs for every proxied request with a sign-in cookie, so it works on the header's bytes
    /// (it trimmed with Foundation once, 75,000 instructions per request: more than the rest of
    /// the proxy; a scan through `Substring.UTF8View` indices still cost 8,000).
    public static func removing(_ name: String, fromHeader header: String) -> String? {
        removing(fromHeader: header, matching: .exactly(name))
    }

    /// A `Cookie` header without any of Drover's own cookies (named `drover-…` or
    /// `__Host-drover-…`: the sign-in, a session origin's cookie and its sign-in state), which
    /// never reach a session; nil when none is left.
    public static func removingDroverCookies(fromHeader header: String) -> String? {
        removing(fromHeader: header, matching: .drover)
    }

    /// Whether a `Cookie` header holds one of Drover's own cookies (``removingDroverCookies(fromHeader:)``).
    public static func hasDroverCookie(inHeader header: String) -> Bool {
        var found = false
        forEachPart(of: header, matching: .drover) { _, _, named, _ in
            found = named
            return !named
        }
        return found
    }

    private static func removing(fromHeader header: String, matching: NameMatch) -> String? {
        var kept: [UInt8] = []
        forEachPart(of: header, matching: matching) { bytes, part, named, _ in
            if !part.isEmpty, !named {
                if !kept.isEmpty { kept.append(contentsOf: [UInt8(ascii: ";"), UInt8(ascii: " ")]) }
                kept.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[part]))
            }
            return true
        }
        return kept.isEmpty ? nil : String(decoding: kept, as: UTF8.self)
    }

    /// Whether a `Cookie` header holds a cookie named `name` (with a value or not).
    public static func names(_ name: String, inHeader header: String) -> Bool {
        var found = false
        forEachPart(of: header, matching: .exactly(name)) { _, _, named, _ in
            found = named
            return !named
        }
        return found
    }

    /// The value of cookie `name` in a `Cookie` header: the first that is not empty.
    ///
    /// Runs for every proxied request, so it scans the header's bytes in place; spaces and tabs
    /// around names and values are ignored.
    public static func value(named name: String, inHeader header: String?) -> String? {
        guard let header else { return nil }
        var value: String?
        forEachPart(of: header, matching: .exactly(name)) { bytes, _, named, valueRange in
            guard named, let valueRange, !valueRange.isEmpty else { return true }
            value = String(decoding: UnsafeBufferPointer(rebasing: bytes[valueRange]), as: UTF8.self)
            return false
        }
        return value
    }

    /// Calls `body` with each `;`-separated part of a `Cookie` header, spaces and tabs around it
    /// dropped (empty parts too), whether its name (before `=`, trimmed) is `name`, and its value
    /// (after `=`, trimmed; nil without `=`), as ranges of the header's bytes, until `body` returns
    /// false.
    private enum NameMatch {
        case exactly(String)
        /// `drover-…` or `__Host-drover-…`.
        case drover
    }

    private static func forEachPart(of header: String, matching: NameMatch,
                                    _ body: (UnsafeBufferPointer<UInt8>, Range<Int>, Bool, Range<Int>?) -> Bool) {
        var header = header
        var name: String
        let prefixOnly: Bool
        switch matching {
        case .exactly(let exact): (name, prefixOnly) = (exact, false)
        case .drover: (name, prefixOnly) = ("drover-", true)
        }
        header.withUTF8 { bytes in
            name.withUTF8 { wanted in
                var start = 0
                while start < bytes.count {
                    var end = start
                    while end < bytes.count, bytes[end] != UInt8(ascii: ";") { end += 1 }
                    let part = trimmed(bytes, start..<end)
                    var equals = part.lowerBound
                    while equals < part.upperBound, bytes[equals] != UInt8(ascii: "=") { equals += 1 }
                    var named = false
                    var value: Range<Int>?
                    if equals < part.upperBound {
                        var partName = trimmed(bytes, part.lowerBound..<equals)
                        if prefixOnly {
                            // `__Host-drover-…` is a `drover-…` behind the prefix.
                            if partName.count > 7, UnsafeBufferPointer(rebasing: bytes[partName.lowerBound..<partName.lowerBound + 7]).elementsEqual("__Host-".utf8) {
                                partName = (partName.lowerBound + 7)..<partName.upperBound
                            }
                            named = partName.count > wanted.count
                                && UnsafeBufferPointer(rebasing: bytes[partName.lowerBound..<partName.lowerBound + wanted.count]).elementsEqual(wanted)
                        } else {
                            named = partName.count == wanted.count && UnsafeBufferPointer(rebasing: bytes[partName]).elementsEqual(wanted)
                        }
                        value = trimmed(bytes, (equals + 1)..<part.upperBound)
                    }
                    guard body(bytes, part, named, value) else { return }
                    start = end + 1
                }
            }
        }
    }

    /// `range` of `bytes` without the spaces and tabs around it.
    private static func trimmed(_ bytes: UnsafeBufferPointer<UInt8>, _ range: Range<Int>) -> Range<Int> {
        var lower = range.lowerBound
        var upper = range.upperBound
        while lower < upper, bytes[lower] == UInt8(ascii: " ") || bytes[lower] == UInt8(ascii: "\t") { lower += 1 }
        while upper > lower, bytes[upper - 1] == UInt8(ascii: " ") || bytes[upper - 1] == UInt8(ascii: "\t") { upper -= 1 }
        return lower..<upper
    }
}
