/// Typed, validated access to the entries of one ``ConfigFile``.
///
/// Each configuration type reads its keys through a reader and finishes with
/// ``rejectUnknownKeys(known:)``, so a typo is an error rather than a silently ignored setting.
struct ConfigReader {
    let file: ConfigFile
    let entries: [ConfigFile.Entry]
    /// The configuration directory; relative paths resolve against it.
    let baseDirectory: String

    init(_ file: ConfigFile, baseDirectory: String, section: String? = nil) {
        self.file = file
        self.entries = file.entries.filter { $0.section == section }
        self.baseDirectory = baseDirectory
    }

    func entry(_ key: String) -> ConfigFile.Entry? {
        entries.first { $0.key == key }
    }

    func error(_ entry: ConfigFile.Entry, _ message: String) -> ConfigurationError {
        ConfigurationError(file: file.path, line: entry.line, message)
    }

    func string(_ key: String) throws(ConfigurationError) -> String? {
        guard let entry = entry(key) else { return nil }
        guard !entry.value.isEmpty else {
            throw error(entry, "'\(key)' has an empty value; give it a value or remove the line")
        }
        return entry.value
    }

    func integer(_ key: String, default defaultValue: Int, in range: ClosedRange<Int>) throws(ConfigurationError) -> Int {
        guard let entry = entry(key) else { return defaultValue }
        guard let value = Int(entry.value) else {
            throw error(entry, "'\(key)' must be a whole number, found '\(entry.value)'")
        }
        guard range.contains(value) else {
            let bound = range.upperBound == Int.max ? "at least \(range.lowerBound)" : "from \(range.lowerBound) to \(range.upperBound)"
            throw error(entry, "'\(key)' must be \(bound), found \(value)")
        }
        return value
    }

    func decimal(_ key: String, default defaultValue: Double, minimum: Double) throws(ConfigurationError) -> Double {
        guard let entry = entry(key) else { return defaultValue }
        guard let value = Double(entry.value), value.isFinite else {
            throw error(entry, "'\(key)' must be a number, found '\(entry.value)'")
        }
        guard value >= minimum else {
            let shown = minimum == minimum.rounded() ? String(Int(minimum)) : String(minimum)
            throw error(entry, "'\(key)' must be at least \(shown), found \(entry.value)")
        }
        return value
    }

    func boolean(_ key: String, default defaultValue: Bool) throws(ConfigurationError) -> Bool {
        guard let entry = entry(key) else { return defaultValue }
        switch entry.value.lowercased() {
        case "1", "true", "yes": return true
        case "0", "false", "no": return false
        default: throw error(entry, "'\(key)' must be 0 or 1, found '\(entry.value)'")
        }
    }

    /// A path; a relative one resolves against the configuration directory.
    func path(_ key: String) throws(ConfigurationError) -> String? {
        guard let value = try string(key) else { return nil }
        return Self.resolve(value, against: baseDirectory)
    }

    func oneOf(_ key: String, _ allowed: [String], default defaultValue: String) throws(ConfigurationError) -> String {
        guard let entry = entry(key) else { return defaultValue }
        guard allowed.contains(entry.value) else {
            throw error(entry, "'\(key)' must be one of \(allowed.joined(separator: ", ")), found '\(entry.value)'")
        }
        return entry.value
    }

    /// Where each key of this file was set, for errors raised after parsing.
    var source: ConfigSource {
        ConfigSource(file: file.path, lines: Dictionary(entries.map { ($0.key, $0.line) }, uniquingKeysWith: { first, _ in first }))
    }

    func rejectUnknownKeys(known: [String]) throws(ConfigurationError) {
        for entry in entries where !known.contains(entry.key) {
            throw error(entry, "unknown key '\(entry.key)'; known keys are \(known.joined(separator: ", "))")
        }
    }

    static func resolve(_ path: String, against base: String) -> String {
        if path.hasPrefix("/") { return path }
        return base.hasSuffix("/") ? base + path : base + "/" + path
    }
}
