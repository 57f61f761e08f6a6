public import Foundation

/// One load-balancer diagnostics event: a name and ordered `key=value` fields.
public struct DiagnosticsEvent: Sendable, Equatable {
    public var time: Date
    /// A short kebab-case name, e.g. `node-joined`.
    public var name: String
    public var fields: [Field]

    public struct Field: Sendable, Equatable {
        public var key: String
        public var value: String

        public init(_ key: String, _ value: String) {
            self.key = key
            self.value = value
        }
    }

    public init(_ name: String, time: Date = Date(), fields: [Field] = []) {
        self.time = time
        self.name = name
        self.fields = fields
    }

    /// The event as one line, without a newline: `2026-11-26T23:59:01.250Z pid=4242
    /// event=node-joined node=2 host="a b"`. Values with spaces, quotes or `=` are quoted, and
    /// control characters escaped, so one event is always one greppable line.
    public func formatted(pid: Int32) -> String {
        var line = Self.timestamp(time) + " pid=\(pid) event=" + Self.quoted(name)
        for field in fields {
            line += " " + field.key + "=" + Self.quoted(field.value)
        }
        return line
    }

    static func timestamp(_ date: Date) -> String {
        date.formatted(.iso8601.year().month().day().dateSeparator(.dash).time(includingFractionalSeconds: true)
            .timeSeparator(.colon).timeZone(separator: .omitted)).replacingOccurrences(of: "+0000", with: "Z")
    }

    static func quoted(_ value: String) -> String {
        let needsQuotes = value.isEmpty || value.contains { $0 == " " || $0 == "\"" || $0 == "=" || $0.isNewline || $0 == "\t" || $0 == "\\" }
        guard needsQuotes else { return value }
        var out = "\""
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if scalar.value < 0x20 { out += "\\u{\(String(scalar.value, radix: 16))}" } else { out.unicodeScalars.append(scalar) }
            }
        }
        return out + "\""
    }
}

/// Where diagnostics events go (`diagnostics=` in `load-balancer`).
public protocol DiagnosticsSink: Sendable {
    /// The name that selected this sink.
    var name: String { get }
    /// Records one event. Must not block for long and must never throw: diagnostics never take
    /// a node down.
    func record(_ event: DiagnosticsEvent)
}

/// Builds a ``DiagnosticsSink`` from `load-balancer`.
public protocol DiagnosticsSinkFactory: Sendable {
    /// The `diagnostics=` value that selects this sink.
    static var name: String { get }
    /// Builds the sink; reads only `load-balancer`.
    static func make(config: LoadBalancerConfiguration, context: PluginContext) throws -> any DiagnosticsSink
}
