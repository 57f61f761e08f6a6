import ArgumentParser
import DroverKernel
import Foundation

/// `drover audit`: reads the cluster's audit log from the registry.
struct Audit: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit",
        abstract: "Print the audit log: every state change of the cluster's sessions and nodes, who caused it and how it ended.",
        discussion: """
            One line per change, oldest first: time (UTC), actor (user:NAME, admin:NAME or daemon), action, target, node, \
            result and reason. Rows older than audit-retention-days (rserver.conf, 90 by default) are removed by the nodes.
            """)

    @OptionGroup var options: ConfigOptions
    @Option(help: "Only changes since this time: an ISO 8601 time (2026-11-28T09:00:00Z), a date (2026-11-28), or an age such as 30m, 12h or 7d.")
    var since: String?
    @Option(help: "Only changes to this user's sessions and sign-ins.") var user: String?
    @Option(help: "At most this many rows, the newest.") var limit: Int = 1000
    @Flag(help: "One JSON object per line instead of columns.") var json = false

    func validate() throws {
        guard limit > 0 else { throw ValidationError("--limit must be at least 1") }
        if let since, Self.time(since, now: Date()) == nil {
            throw ValidationError("--since takes a time like 2026-11-28T09:00:00Z, a date like 2026-11-28, or an age like 30m, 12h or 7d; found '\(since)'")
        }
    }

    /// Reads `--since`.
    static func time(_ text: String, now: Date) -> Date? {
        if let unit = text.last, let amount = Double(text.dropLast()), amount >= 0 {
            let seconds: Double? = switch unit {
            case "s": 1
            case "m": 60
            case "h": 3600
            case "d": 86_400
            default: nil
            }
            if let seconds { return now.addingTimeInterval(-amount * seconds) }
        }
        let full = ISO8601DateFormatter()
        if let date = full.date(from: text) { return date }
        let day = ISO8601DateFormatter()
        day.formatOptions = [.withFullDate]
        return day.date(from: text)
    }

    func run() async throws {
        let (since, user, limit, json) = (since, user, limit, json)
        let rows = try await RegistryAccess.using(options) { access in
            let now = try await access.store.now()
            return try await access.store.audit(matching: AuditFilter(since: since.flatMap { Self.time($0, now: now) }, username: user, limit: limit))
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        let stamp = ISO8601DateFormatter()
        for row in rows {
            if json {
                print(String(decoding: try encoder.encode(row), as: UTF8.self))
            } else {
                let when = row.time.map(stamp.string(from:)) ?? "-"
                let node = row.node.map { "node \($0)" } ?? "-"
                // Reasons carry text from users' programs (a failed start's log tail): escaped, so a
                // session cannot forge or hide lines, or move the cursor, in an operator's terminal.
                let fields = ["\(row.actor)", row.action, row.target, node, row.result].map(ActiveSessions.printable)
                print("\(when)  " + fields.joined(separator: "  ") + (row.reason.isEmpty ? "" : "  " + ActiveSessions.printable(row.reason)))
            }
        }
        if rows.isEmpty, !json { FileHandle.standardError.write(Data("No audit rows match.\n".utf8)) }
    }
}
