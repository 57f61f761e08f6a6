import Foundation
import DroverKernel
import NIOHTTP1

/// Hop-by-hop headers (RFC 9110 section 7.6.1): they describe one connection and are never
/// passed on by a proxy, in either direction, except what a WebSocket upgrade needs.
enum HopByHop {
    static let fixed: Set<String> = ["connection", "keep-alive", "te", "trailer", "upgrade", "proxy-connection"]

    /// Whether `name` is one of the fixed hop-by-hop headers or a `Proxy-*` one, in any case.
    static func isFixedOrProxy(_ name: String) -> Bool {
        let count = name.utf8.count
        if count >= 6, HeaderName.hasPrefix(name, "proxy-") { return true }
        guard count == 2 || count == 7 || count == 10 else { return false }
        return fixed.contains { HeaderName.equals(name, $0) }
    }
}

/// Header names compared as HTTP compares them (ASCII, any case) without allocating: these
/// comparisons run for every header of every proxied message.
enum HeaderName {
    /// Whether `name` is `lower` (given in lower case) in any case.
    static func equals(_ name: String, _ lower: String) -> Bool {
        name.utf8.count == lower.utf8.count && name.utf8.elementsEqual(lower.utf8, by: sameLetter)
    }

    /// Whether `name` starts with `lower` (given in lower case) in any case.
    static func hasPrefix(_ name: String, _ lower: String) -> Bool {
        name.utf8.count >= lower.utf8.count && name.utf8.prefix(lower.utf8.count).elementsEqual(lower.utf8, by: sameLetter)
    }

    private static func sameLetter(_ byte: UInt8, _ lower: UInt8) -> Bool {
        byte == lower || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") && byte + 32 == lower)
    }
}

/// The request a proxy sends on: the client's, with the proxy's own headers.
enum ForwardedRequest {
    /// `head` as it goes on to the session or the owning node:
    /// - hop-by-hop headers removed (``HopByHop``), `Upgrade` kept only for a WebSocket upgrade;
    /// - `X-Forwarded-Proto` and `X-Forwarded-Host` set from this node's view (the scheme it
    ///   serves, the `Host` it was sent), and `X-Forwarded-For` set to the client's address:
    ///   what a client sends in them is dropped. A hop from another node (its signature checked
    ///   before this runs) keeps that node's, and `X-Forwarded-For` gets the node's address
    ///   appended (`client, node`);
    /// - every `X-Drover-*` header (the hop's) and the sign-in cookie removed (they never reach
    ///   a session; the next node trusts the signed hop instead), and `extra` added.
    ///
    /// Built in one pass over the client's headers (this runs for every proxied request), each
    /// `Cookie` header cleared of the sign-in cookie on its own.
    static func head(for head: HTTPRequestHead, clientAddress: String, isTLS: Bool, adding extra: [(String, String)],
                     upgrade: Bool) -> HTTPRequestHead {
        let isHop = head.headers.contains(name: SessionProxyResolver.hopHeader)
        let webSocket = upgrade && head.headers[canonicalForm: "upgrade"].contains { $0.lowercased() == "websocket" }
        // Headers a `Connection` header names are hop-by-hop too (rare: only then is a set built).
        let named = head.headers.contains(name: "Connection") ? Set(head.headers[canonicalForm: "connection"].map { $0.lowercased() }) : []
        let extraNames = extra.map { $0.0.lowercased() }
        var forwardedFor: String?
        var host: String?
        var headers = HTTPHeaders()
        headers.reserveCapacity(head.headers.count + 4 + extra.count)
        for (name, value) in head.headers {
            if HopByHop.isFixedOrProxy(name) || (!named.isEmpty && named.contains(name.lowercased())) { continue }
            if HeaderName.equals(name, "host") {
                if host == nil { host = value }
            } else if HeaderName.hasPrefix(name, "x-forwarded-") || HeaderName.equals(name, "forwarded") {
                // What a client says of itself is dropped; a hop keeps the forwarding node's.
                guard isHop else { continue }
                if HeaderName.equals(name, "x-forwarded-for") {
                    if forwardedFor == nil { forwardedFor = value }
                    continue
                }
            } else if HeaderName.hasPrefix(name, "x-drover-") || extraNames.contains(where: { HeaderName.equals(name, $0) }) {
                continue
            } else if HeaderName.equals(name, "cookie"), SignInCookie.names(SignInCookie.name, inHeader: value) {
                if let others = SignInCookie.removing(SignInCookie.name, fromHeader: value) { headers.add(name: name, value: others) }
                continue
            }
            headers.add(name: name, value: value)
        }
        headers.add(name: "X-Forwarded-For", value: forwardedFor.map { "\($0), \(clientAddress)" } ?? clientAddress)
        if !isHop {
            headers.add(name: "X-Forwarded-Proto", value: isTLS ? "https" : "http")
            if let host { headers.add(name: "X-Forwarded-Host", value: host) }
        }
        if webSocket, let upgrade = head.headers.first(name: "Upgrade") {
            headers.add(name: "Connection", value: "Upgrade")
            headers.add(name: "Upgrade", value: upgrade)
        }
        for (name, value) in extra { headers.add(name: name, value: value) }
        var outgoing = head
        outgoing.headers = headers
        return outgoing
    }
}

/// The response a proxy passes back: the session's, without what it may not say
/// (``UpstreamResponseHead/forwarded(sessionPath:connection:)``).
enum ForwardedResponse {
    /// One `Set-Cookie` value confined to `path`, or nil when it must not be set at all.
    static func confine(_ cookie: String, to path: String) -> String? {
        let parts = cookie.split(separator: ";", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
        guard let pair = parts.first, let equals = pair.firstIndex(of: "=") else { return nil }
        let name = pair[..<equals].trimmingCharacters(in: .whitespaces)
        guard !name.isEmpty, !name.lowercased().hasPrefix("drover-"), !name.hasPrefix("__Host-") else { return nil }
        var kept = [pair]
        var cookiePath = path
        for attribute in parts.dropFirst() where !attribute.isEmpty {
            let key = attribute.split(separator: "=", maxSplits: 1).first.map { $0.trimmingCharacters(in: .whitespaces).lowercased() } ?? ""
            switch key {
            case "path":
                let value = attribute.split(separator: "=", maxSplits: 1).dropFirst().first.map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
                if value.hasPrefix(path), !value.contains("..") { cookiePath = value }
            case "domain":
                continue
            default:
                kept.append(attribute)
            }
        }
        kept.insert("Path=\(cookiePath)", at: 1)
        return kept.joined(separator: "; ")
    }
}
