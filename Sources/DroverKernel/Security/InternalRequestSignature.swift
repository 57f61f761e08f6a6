public import Foundation
import Synchronization

/// The HMAC-SHA256 signature every node-to-node request carries (DESIGN.md section 6), over the
/// method, path, destination, timestamp, a nonce and the body's digest, keyed from the secure
/// cookie key.
///
/// Headers: `X-Drover-Destination` (the `host:port` the sender addressed), `X-Drover-Timestamp`
/// (Unix seconds), `X-Drover-Nonce` (random hex), `X-Drover-Signature` (hex). A receiver refuses
/// a missing or wrong signature, a destination that is not itself (so a captured call cannot be
/// replayed to another node), a timestamp more than ``allowedSkew`` seconds away, and a nonce it
/// has seen (``ReplayGuard``).
public enum InternalRequestSignature {
    public static let timestampHeader = "X-Drover-Timestamp"
    public static let nonceHeader = "X-Drover-Nonce"
    public static let signatureHeader = "X-Drover-Signature"
    public static let destinationHeader = "X-Drover-Destination"
    /// Seconds a signed request stays valid either side of the receiver's clock.
    public static let allowedSkew: Double = 60
    static let purpose = "node-to-node"

    /// The headers to send with a request.
    /// - Parameter destination: `host:port` of the node the request is for.
    public static func headers(method: String, path: String, body: [UInt8], destination: String, key: SecureCookieKey,
                               now: Date = Date()) -> [(String, String)] {
        let timestamp = String(Int(now.timeIntervalSince1970))
        let nonce = Crypto.randomBytes(16).hexString
        let signature = sign(method: method, path: path, destination: destination, timestamp: timestamp, nonce: nonce, body: body, key: key)
        return [(destinationHeader, destination), (timestampHeader, timestamp), (nonceHeader, nonce), (signatureHeader, signature)]
    }

    static func sign(method: String, path: String, destination: String, timestamp: String, nonce: String, body: [UInt8],
                     key: SecureCookieKey) -> String {
        let message = "\(method)\n\(path)\n\(destination.lowercased())\n\(timestamp)\n\(nonce)\n\(Crypto.sha256(body).hexString)"
        return key.sign(Array(message.utf8), purpose: purpose).hexString
    }

    /// Why a request was refused.
    public enum Refusal: Error, Equatable, CustomStringConvertible {
        case unsigned
        case malformed
        case outsideWindow(skew: Int)
        case badSignature
        case replayed
        case otherDestination(String)

        public var description: String {
            switch self {
            case .unsigned: "no signature"
            case .malformed: "malformed signature headers"
            case .outsideWindow(let skew): "timestamp \(skew) s away from this node's clock (allowed: \(Int(InternalRequestSignature.allowedSkew)) s); check that the nodes' clocks are synchronised"
            case .badSignature: "bad signature (tampered, or signed with another secure cookie key)"
            case .replayed: "replayed request (nonce already used)"
            case .otherDestination(let destination): "signed for another node (\(destination.prefix(100))), not this one: a call cannot be replayed elsewhere"
            }
        }
    }

    /// Checks a request's signature headers. Does not check for replays (see ``ReplayGuard``).
    /// - Parameters:
    ///   - header: looks a header up by name.
    ///   - isOwnDestination: whether a `host:port` names the receiving node.
    public static func verify(method: String, path: String, body: [UInt8], header: (String) -> String?,
                              key: SecureCookieKey, isOwnDestination: (String) -> Bool,
                              now: Date = Date()) throws(Refusal) -> (nonce: String, timestamp: Double) {
        guard let timestamp = header(timestampHeader), let nonce = header(nonceHeader), let signature = header(signatureHeader),
              let destination = header(destinationHeader) else {
            throw .unsigned
        }
        guard let seconds = Double(timestamp), seconds.isFinite, nonce.count <= 64, signature.count == 64,
              let given = [UInt8](hexString: signature) else {
            throw .malformed
        }
        let skew = seconds - now.timeIntervalSince1970
        guard abs(skew) <= allowedSkew else { throw .outsideWindow(skew: Int(skew)) }
        let expected = sign(method: method, path: path, destination: destination, timestamp: timestamp, nonce: nonce, body: body, key: key)
        guard Crypto.constantTimeEquals(given, [UInt8](hexString: expected) ?? []) else { throw .badSignature }
        guard isOwnDestination(destination) else { throw .otherDestination(destination) }
        return (nonce, seconds)
    }
}

/// Remembers the nonces of accepted requests for twice the signature window, so a captured
/// request cannot be sent again while its timestamp is still valid.
public final class ReplayGuard: Sendable {
    private let seen = Mutex<[String: Double]>([:])

    public init() {}

    /// True the first time `nonce` is seen (and records it), false for a replay.
    public func accept(nonce: String, timestamp: Double, now: Date = Date()) -> Bool {
        seen.withLock { seen in
            let horizon = now.timeIntervalSince1970 - 2 * InternalRequestSignature.allowedSkew
            if seen.count > 10_000 { seen = seen.filter { $0.value > horizon } }
            guard seen[nonce] == nil else { return false }
            seen[nonce] = max(timestamp, now.timeIntervalSince1970)
            return true
        }
    }
}
