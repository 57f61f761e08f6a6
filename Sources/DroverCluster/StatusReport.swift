public import DroverKernel
public import Foundation

/// The `/load-balancer/status` text, in the seed's format:
///
///     192.168.55.101:8787 Load: 0.45, 0.66, 0.32
///        12108 - jdoe
///     192.168.55.103:8787 (unreachable) Load: 0, 0, 0
public enum StatusReport {
    public static func render(nodes: [NodeRecord], sessions: [SessionRecord], now: Date, heartbeatInterval: Int) -> String {
        var out = ""
        for node in nodes {
            let marker: String
            if node.isUnreachable(now: now, heartbeatInterval: heartbeatInterval) {
                marker = " (unreachable)"
            } else {
                switch node.status {
                case .online: marker = ""
                case .offline, .offlineMode: marker = " (offline)"
                default: marker = " (\(node.status.rawValue.lowercased()))"
                }
            }
            // The seed's line, then the node's release and protocol (a rolling upgrade mixes two).
            out += "\(node.ipv4 ?? node.host):\(node.port)\(marker) Load: \(load(node.load.one)), \(load(node.load.five)), \(load(node.load.fifteen))"
                + " Version: \(node.versionLabel)\n"
            for session in sessions where session.ownership.node == node.id && session.ownership.state == .running {
                out += "   \(session.ownership.pid.map(String.init) ?? "?") - \(session.username)\n"
            }
        }
        return out
    }

    /// Two significant digits in decimals, as the seed prints loads (`0.45`, `1`, `0.033`,
    /// `0.000047`), never in exponent form.
    public static func load(_ value: Double) -> String {
        guard value.isFinite, value > 0 else { return "0" }
        if value >= 10 { return String(format: "%.0f", value) }
        let places = max(0, 1 - Int((log10(value)).rounded(.down)))
        var text = String(format: "%.\(places)f", value)
        if text.contains(".") {
            while text.hasSuffix("0") { text.removeLast() }
            if text.hasSuffix(".") { text.removeLast() }
        }
        return text
    }
}
