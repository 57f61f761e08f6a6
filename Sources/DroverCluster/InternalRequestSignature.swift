public import DroverKernel
public import Foundation
import Synchronization

/// The HMAC-SHA256 signature every node-to-node request carries (docs/PROTOCOL.md), over the
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

/// Remembers the nonces of accepted signed requests for twice the signature window, so a
/// captured request cannot be sent again while its timestamp is still valid.
///
/// Two tables: the cluster's own internal calls, and session-hop openings. A signed-in user can
/// make a node open hops at will (a connection to their own session through another node, each
/// request with `Connection: close`), so a flood of openings fills only the openings' table, and
/// within it only the user's own share: the cluster's internal calls are never refused for want
/// of room, and one user's flood refuses only that user's openings.
public final class ReplayGuard: Sendable {
    private let internalCalls: Mutex<ReplayTable>
    private let openings: Mutex<ReplayTable>

    /// - Parameters:
    ///   - capacity: nonces each table holds at most (the memory is bounded: about 100 bytes each).
    ///   - perUser: openings of one user remembered at most (within twice the window).
    public init(capacity: Int = 200_000, perUser: Int = 20_000) {
        internalCalls = Mutex(ReplayTable(capacity: capacity, perOwner: capacity))
        openings = Mutex(ReplayTable(capacity: capacity, perOwner: perUser))
    }

    /// True the first time `nonce` of an internal call is seen (and records it), false for a
    /// replay (or, with the table full of unexpired nonces, for any call: never silently forgotten).
    public func accept(nonce: String, timestamp: Double, now: Date = Date()) -> Bool {
        internalCalls.withLock { $0.accept(nonce, owner: "", timestamp: timestamp, now: now.timeIntervalSince1970) } == .accepted
    }

    /// The same for the opening of a hop to a session of `user`.
    public func acceptOpening(nonce: String, timestamp: Double, user: String, now: Date = Date()) -> ReplayTable.Verdict {
        openings.withLock { $0.accept(nonce, owner: user, timestamp: timestamp, now: now.timeIntervalSince1970) }
    }

    /// Nonces remembered now: internal calls, openings.
    public var counts: (internalCalls: Int, openings: Int) {
        (internalCalls.withLock { $0.count }, openings.withLock { $0.count })
    }
}

/// Nonces in buckets of one second by when they expire: an insertion and an expiry cost O(1)
/// (a bucket is dropped whole), never a copy of the table.
public struct ReplayTable: Sendable {
    public enum Verdict: Sendable, Equatable {
        case accepted
        case replayed
        /// Its owner has `perOwner` nonces remembered already.
        case ownerFull
        /// The table holds `capacity` nonces that have not expired.
        case full
    }

    let capacity: Int
    let perOwner: Int
    private var expiries: [String: Int64] = [:]
    private var buckets: [Int64: [(nonce: String, owner: String)]] = [:]
    private var perOwnerCount: [String: Int] = [:]
    /// The earliest second that may still hold a bucket.
    private var oldest: Int64 = .max

    init(capacity: Int, perOwner: Int) {
        self.capacity = capacity
        self.perOwner = perOwner
    }

    var count: Int { expiries.count }

    mutating func accept(_ nonce: String, owner: String, timestamp: Double, now: Double) -> Verdict {
        expire(before: Int64(now.rounded(.down)))
        guard expiries[nonce] == nil else { return .replayed }
        guard expiries.count < capacity else { return .full }
        guard perOwnerCount[owner, default: 0] < perOwner else { return .ownerFull }
        // Remembered until its timestamp has left the window on every side of the clock.
        let expiry = Int64(max(timestamp, now).rounded(.up)) + Int64(2 * InternalRequestSignature.allowedSkew) + 1
        expiries[nonce] = expiry
        buckets[expiry, default: []].append((nonce, owner))
        perOwnerCount[owner, default: 0] += 1
        oldest = min(oldest, expiry)
        return .accepted
    }

    /// Drops the buckets that expired before `second`, one second at a time from the oldest.
    private mutating func expire(before second: Int64) {
        guard oldest < second else { return }
        // A clock that jumped far ahead drops everything at once instead of walking the gap.
        if second - oldest > 3 * Int64(2 * InternalRequestSignature.allowedSkew) {
            for (bucket, entries) in buckets where bucket < second { drop(bucket, entries) }
        } else {
            for bucket in oldest..<second { if let entries = buckets[bucket] { drop(bucket, entries) } }
        }
        oldest = buckets.keys.min() ?? .max
    }

    private mutating func drop(_ bucket: Int64, _ entries: [(nonce: String, owner: String)]) {
        buckets.removeValue(forKey: bucket)
        for entry in entries {
            expiries.removeValue(forKey: entry.nonce)
            let left = perOwnerCount[entry.owner, default: 1] - 1
            perOwnerCount[entry.owner] = left > 0 ? left : nil
        }
    }
}
