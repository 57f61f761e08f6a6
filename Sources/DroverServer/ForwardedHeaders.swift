import Foundation
import DroverKernel
import NIOHTTP1

/// Hop-by-hop headers (RFC 9110 section 7.6.1): they describe one connection and are never
/// passed on by a proxy, in either direction, except what a WebSocket upgrade needs.
enum HopByHop {
    static let fixed: Set<String> = ["connection", "keep-alive", "te", "trailer", "upgrade", "proxy-connection"]

    /// Removes them from `headers`: the fixed ones, any `Proxy-*`, and those `Connection` names.
    /// With `keepingUpgrade`, `Connection: Upgrade` and `Upgrade` stay (a WebSocket handshake).
    static func remove(from headers: inout HTTPHeaders, keepingUpgrade: Bool) {
        let named = Set(headers[canonicalForm: "connection"].map { $0.lowercased() })
        let upgrade = keepingUpgrade ? headers.first(name: "Upgrade") : nil
        let drop = headers.map { $0.name.lowercased() }.filter { fixed.contains($0) || $0.hasPrefix("proxy-") || named.contains($0) }
        for name in Set(drop) { headers.remove(name: name) }
        if let upgrade {
            headers.add(name: "Connection", value: "Upgrade")
            headers.add(name: "Upgrade", value: upgrade)
        }
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
    /// - Drover's hop headers and the sign-in cookie removed (they never reach a session; the
    ///   next node trusts the signed hop instead), and `extra` added.
    static func head(for head: HTTPRequestHead, clientAddress: String, isTLS: Bool, adding extra: [(String, String)],
                     upgrade: Bool) -> HTTPRequestHead {
        var outgoing = head
        let isHop = head.headers.contains(name: SessionProxyResolver.hopHeader)
        let webSocket = upgrade && head.headers[canonicalForm: "upgrade"].contains { $0.lowercased() == "websocket" }
        HopByHop.remove(from: &outgoing.headers, keepingUpgrade: webSocket)
        if isHop {
            let forwardedFor = head.headers.first(name: "X-Forwarded-For").map { "\($0), \(clientAddress)" } ?? clientAddress
            outgoing.headers.replaceOrAdd(name: "X-Forwarded-For", value: forwardedFor)
        } else {
            outgoing.headers.replaceOrAdd(name: "X-Forwarded-For", value: clientAddress)
            outgoing.headers.replaceOrAdd(name: "X-Forwarded-Proto", value: isTLS ? "https" : "http")
            outgoing.headers.remove(name: "X-Forwarded-Host")
            if let host = head.headers.first(name: "Host") { outgoing.headers.add(name: "X-Forwarded-Host", value: host) }
            outgoing.headers.remove(name: "Forwarded")
        }
        for name in SessionProxyResolver.hopHeaders where outgoing.headers.contains(name: name) { outgoing.headers.remove(name: name) }
        if let cookie = outgoing.headers.first(name: "Cookie"), cookie.contains(SignInCookie.name) {
            outgoing.headers.remove(name: "Cookie")
            if let others = SignInCookie.removing(SignInCookie.name, fromHeader: cookie) { outgoing.headers.add(name: "Cookie", value: others) }
        }
        for (name, value) in extra { outgoing.headers.replaceOrAdd(name: name, value: value) }
        return outgoing
    }
}

/// The response a proxy passes back: the session's, without what it may not say.
enum ForwardedResponse {
    /// `head` with hop-by-hop headers removed (a `101` keeps its upgrade headers), and each
    /// `Set-Cookie` confined to the session: its `Path` is `sessionPath` (or a path under it),
    /// its `Domain` is dropped, and a cookie named like Drover's own (`drover-…`) is dropped.
    static func head(_ head: HTTPResponseHead, sessionPath: String?) -> HTTPResponseHead {
        var head = head
        HopByHop.remove(from: &head.headers, keepingUpgrade: head.status == .switchingProtocols)
        guard let sessionPath, head.headers.contains(name: "Set-Cookie") else { return head }
        let cookies = head.headers["Set-Cookie"]
        head.headers.remove(name: "Set-Cookie")
        for cookie in cookies {
            if let confined = confine(cookie, to: sessionPath) { head.headers.add(name: "Set-Cookie", value: confined) }
        }
        return head
    }

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
