import DroverKernel
import NIOHTTP1
import Synchronization

/// Requests in progress per client of the trusted proxies: a trusted proxy's connection carries
/// many clients, so its clients are held to `www-max-connections-per-address` one request at a
/// time instead of one connection at a time.
final class ForwardedClients: Sendable {
    private let inFlight = Mutex([String: Int]())

    /// Counts a request of `address` in, unless it has `limit` in progress already.
    func enter(_ address: String, limit: Int) -> Bool {
        let key = OpenConnections.addressKey(address)
        return inFlight.withLock { counts in
            guard counts[key, default: 0] < limit else { return false }
            counts[key, default: 0] += 1
            return true
        }
    }

    func leave(_ address: String) {
        let key = OpenConnections.addressKey(address)
        inFlight.withLock { counts in
            let left = counts[key, default: 1] - 1
            counts[key] = left > 0 ? left : nil
        }
    }
}

/// `www-trusted-proxies`: the load balancers and TLS terminators in front of the node. From one
/// of them, the client is the last address of `X-Forwarded-For` (or `Forwarded: for=`) that is
/// not itself a trusted proxy, and the scheme and host the browser used are the proxy's
/// `X-Forwarded-Proto` and `X-Forwarded-Host` (or `Forwarded: proto=`, `host=`). From anyone
/// else those headers are ignored: a client cannot name its own address, scheme or host.
struct TrustedProxies: Sendable {
    let ranges: [AddressRange]

    var isEmpty: Bool { ranges.isEmpty }

    func contains(_ address: String) -> Bool {
        ranges.contains { $0.contains(address) }
    }

    /// What a request says of its client, once `peer` (the connection's other end) is known.
    struct Client: Sendable, Equatable {
        var address: String
        /// `https` or `http`, when a trusted proxy said.
        var scheme: String?
        /// The `Host` the browser used, when a trusted proxy said.
        var host: String?
    }

    func client(peer: String, headers: HTTPHeaders) -> Client {
        guard !ranges.isEmpty, contains(peer) else { return Client(address: peer) }
        var chain: [String] = []
        var proto = headers.first(name: "X-Forwarded-Proto").map(Self.lastItem)
        var host = headers.first(name: "X-Forwarded-Host").map(Self.lastItem)
        if headers.contains(name: "X-Forwarded-For") {
            chain = headers[canonicalForm: "x-forwarded-for"].map(String.init)
        } else if headers.contains(name: "Forwarded") {
            // RFC 7239: `for=…;proto=…;host=…`, elements separated by commas.
            for element in headers[canonicalForm: "forwarded"] {
                for pair in element.split(separator: ";") {
                    let parts = pair.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
                    guard parts.count == 2 else { continue }
                    let value = parts[1].trimmingCharacters(in: CharacterSet(charactersIn: "\""))
                    switch parts[0].lowercased() {
                    case "for": chain.append(Self.stripPort(value))
                    case "proto": proto = value
                    case "host": host = value
                    default: break
                    }
                }
            }
        }
        // From the right: the proxies that are ours, then the first address that is not.
        var address = peer
        for hop in chain.reversed().map({ $0.trimmingCharacters(in: .whitespaces) }) where !hop.isEmpty {
            address = hop
            if !contains(hop) { break }
        }
        let scheme = proto.map { $0.lowercased() }.flatMap { $0 == "https" || $0 == "http" ? $0 : nil }
        return Client(address: address, scheme: scheme, host: host?.lowercased())
    }

    static func lastItem(_ value: String) -> String {
        String(value.split(separator: ",").last ?? "").trimmingCharacters(in: .whitespaces)
    }

    /// `[2001:db8::1]:443` → `2001:db8::1`; `192.0.2.1:80` → `192.0.2.1`.
    static func stripPort(_ value: String) -> String {
        if value.hasPrefix("["), let close = value.firstIndex(of: "]") { return String(value[value.index(after: value.startIndex)..<close]) }
        if value.filter({ $0 == ":" }).count == 1, let colon = value.firstIndex(of: ":") { return String(value[..<colon]) }
        return value
    }
}

import Foundation
