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

    /// ``equals(_:_:)`` with `_` taken for `-`, as a framework that puts headers in a CGI-style
    /// environment reads them (WSGI, Rack, httpuv: `X_Forwarded_For` becomes the same
    /// `HTTP_X_FORWARDED_FOR` as `X-Forwarded-For`).
    static func equalsAsVariable(_ name: String, _ lower: String) -> Bool {
        name.utf8.count == lower.utf8.count && name.utf8.elementsEqual(lower.utf8, by: sameLetterOrDash)
    }

    /// ``hasPrefix(_:_:)`` with `_` taken for `-` (``equalsAsVariable(_:_:)``).
    static func hasPrefixAsVariable(_ name: String, _ lower: String) -> Bool {
        name.utf8.count >= lower.utf8.count && name.utf8.prefix(lower.utf8.count).elementsEqual(lower.utf8, by: sameLetterOrDash)
    }

    private static func sameLetter(_ byte: UInt8, _ lower: UInt8) -> Bool {
        byte == lower || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") && byte + 32 == lower)
    }

    private static func sameLetterOrDash(_ byte: UInt8, _ lower: UInt8) -> Bool {
        sameLetter(byte, lower) || (byte == UInt8(ascii: "_") && lower == UInt8(ascii: "-"))
    }
}

/// The request a proxy sends on: the client's, with the proxy's own headers.
enum ForwardedRequest {
    /// `uri` without `prefix` (`/s/<id>`) in front: `/s/<id>/lab?x` becomes `/lab?x`, and
    /// `/s/<id>` or `/s/<id>?x` becomes `/` or `/?x`.
    static func stripping(_ prefix: String, from uri: String) -> String {
        guard uri.hasPrefix(prefix) else { return uri }
        let rest = uri.dropFirst(prefix.count)
        return rest.hasPrefix("/") ? String(rest) : "/" + rest
    }

    /// `head` as it goes on to the session or the owning node:
    /// - hop-by-hop headers removed (``HopByHop``), `Upgrade` kept only for a WebSocket upgrade;
    /// - `X-Forwarded-Proto` and `X-Forwarded-Host` set from this node's view (the scheme it
    ///   serves, the `Host` it was sent), and `X-Forwarded-For` set to the client's address:
    ///   what a client sends in them is dropped. (A request for another node's session goes
    ///   there as it is built here, on a session hop the owner splices to the session.)
    /// - every `X-Drover-*` header and Drover's own cookies removed (the sign-in, a session
    ///   origin's cookie and state: they never reach a session),
    ///   and `extra` added.
    ///
    /// Built in one pass over the client's headers (this runs for every proxied request), each
    /// `Cookie` header cleared of the sign-in cookie on its own.
    static func head(for head: HTTPRequestHead, clientAddress: String, isTLS: Bool, adding extra: [(String, String)],
                     upgrade: Bool, forwardedHost: String? = nil) -> HTTPRequestHead {
        let webSocket = upgrade && head.headers[canonicalForm: "upgrade"].contains { $0.lowercased() == "websocket" }
        // Headers a `Connection` header names are hop-by-hop too (rare: only then is a set built).
        let named = head.headers.contains(name: "Connection") ? Set(head.headers[canonicalForm: "connection"].map { $0.lowercased() }) : []
        let extraNames = extra.map { $0.0.lowercased() }
        var host: String?
        // Collected as pairs and handed to `HTTPHeaders` whole: its `add` checks each name again
        // (the client's were checked by the decoder, the node's own are literals), 2,200
        // instructions a request.
        var headers: [(String, String)] = []
        headers.reserveCapacity(head.headers.count + 4 + extra.count)
        for (name, value) in head.headers {
            if HopByHop.isFixedOrProxy(name) || (!named.isEmpty && named.contains(name.lowercased())) { continue }
            if HeaderName.equals(name, "host") {
                if host == nil { host = value }
            } else if isTheProxys(name, extraNames: extraNames) {
                continue
            } else if HeaderName.equals(name, "cookie"), SignInCookie.hasDroverCookie(inHeader: value) {
                if let others = SignInCookie.removingDroverCookies(fromHeader: value) { headers.append((name, others)) }
                continue
            }
            headers.append((name, value))
        }
        headers.append(("X-Forwarded-For", clientAddress))
        headers.append(("X-Forwarded-Proto", isTLS ? "https" : "http"))
        if let host = forwardedHost ?? host { headers.append(("X-Forwarded-Host", host)) }
        if webSocket, let upgrade = head.headers.first(name: "Upgrade") {
            headers.append(("Connection", "Upgrade"))
            headers.append(("Upgrade", upgrade))
        }
        for (name, value) in extra { headers.append((name, value)) }
        var outgoing = head
        outgoing.headers = HTTPHeaders(headers)
        return outgoing
    }

    /// Whether the proxy sets `name` itself, whatever the client sends in it: what a client says
    /// of itself (`X-Forwarded-*`, `Forwarded`), Drover's `X-Drover-*` namespace, and the
    /// headers the proxy adds (`extraNames`, lower case: a session kind's secret, a hop's user).
    /// Spelt with `_` for `-` as well (`X_Forwarded_For`): a session's framework may read both
    /// as one (``HeaderName/equalsAsVariable(_:_:)``).
    private static func isTheProxys(_ name: String, extraNames: [String]) -> Bool {
        HeaderName.hasPrefixAsVariable(name, "x-forwarded-") || HeaderName.equals(name, "forwarded") || HeaderName.hasPrefixAsVariable(name, "x-drover-")
            || extraNames.contains { HeaderName.equalsAsVariable(name, $0) }
    }

    /// A request's trailer section as it goes on. A recipient may merge a trailer field into the
    /// head where the field's definition allows it (RFC 9110 section 6.5.2), and a session's
    /// framework may do so for any field. So no field passes in a trailer that could not pass in
    /// the head as the client sent it: hop-by-hop fields, `Host`, cookies (Drover's own among
    /// them) and every field the proxy sets itself (``isTheProxys(_:extraNames:)``). (A trailer
    /// that frames the message never gets here: ``ClientRequestFramer`` refuses it.)
    static func trailers(_ trailers: HTTPHeaders?, adding extra: [(String, String)]) -> HTTPHeaders? {
        guard let trailers, !trailers.isEmpty else { return trailers }
        let extraNames = extra.map { $0.0.lowercased() }
        let passed = trailers.filter { name, _ in
            !(HopByHop.isFixedOrProxy(name) || HeaderName.equals(name, "host") || HeaderName.equals(name, "cookie")
                || isTheProxys(name, extraNames: extraNames))
        }
        return passed.count == trailers.count ? trailers : HTTPHeaders(passed.map { ($0.name, $0.value) })
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
