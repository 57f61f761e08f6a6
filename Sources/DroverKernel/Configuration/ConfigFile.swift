/// The parsed text of one `key=value` configuration file.
///
/// The grammar is the seed's: one `key=value` per line, white space around key and value ignored,
/// blank lines and lines whose first non-blank character is `#` skipped. Files that allow it
/// (only `load-balancer`, for its legacy form) may contain `[section]` headers. A key may appear
/// only once per section.
public struct ConfigFile: Sendable, Equatable {
    /// One `key=value` line.
    public struct Entry: Sendable, Equatable {
        public var key: String
        public var value: String
        public var line: Int
        /// The `[section]` the line is in, or nil before any header.
        public var section: String?
    }

    /// The file's name as shown in errors.
    public let path: String
    public let entries: [Entry]

    /// Parses `text`.
    /// - Parameters:
    ///   - text: the file's contents.
    ///   - path: the name used in error messages.
    ///   - sections: the `[section]` names this file may contain; empty means headers are errors.
    ///   - listSections: sections whose lines may be bare names, one per line (the seed's
    ///     `[nodes]` lists host names so); such a line is an entry whose key is the name and
    ///     whose value is empty.
    /// - Throws: ``ConfigurationError`` naming the line of a malformed line, an unknown section
    ///   or a duplicate key.
    public init(parsing text: String, path: String, sections: Set<String> = [], listSections: Set<String> = []) throws(ConfigurationError) {
        self.path = path
        var entries: [Entry] = []
        var seen: [String: Int] = [:]
        var section: String?
        for (index, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let lineNumber = index + 1
            let line = rawLine.trimmingWhitespace()
            if line.isEmpty || line.hasPrefix("#") { continue }
            if line.hasPrefix("[") {
                guard line.hasSuffix("]"), line.count > 2 else {
                    throw ConfigurationError(file: path, line: lineNumber, "malformed section header '\(line)'; write it as [name]")
                }
                let name = String(line.dropFirst().dropLast()).trimmingWhitespace()
                guard !sections.isEmpty else {
                    throw ConfigurationError(file: path, line: lineNumber, "section headers are not allowed in this file; remove '\(line)'")
                }
                guard sections.contains(name) else {
                    let known = sections.sorted().map { "[\($0)]" }.joined(separator: ", ")
                    throw ConfigurationError(file: path, line: lineNumber, "unknown section '[\(name)]'; this file allows \(known)")
                }
                section = name
                continue
            }
            guard let equals = line.firstIndex(of: "=") else {
                if let section, listSections.contains(section) {
                    entries.append(Entry(key: line, value: "", line: lineNumber, section: section))
                    continue
                }
                throw ConfigurationError(file: path, line: lineNumber, "expected key=value, found '\(line)'")
            }
            let key = String(line[..<equals]).trimmingWhitespace()
            let value = String(line[line.index(after: equals)...]).trimmingWhitespace()
            guard !key.isEmpty else {
                throw ConfigurationError(file: path, line: lineNumber, "missing key before '='")
            }
            let scopedKey = (section.map { "[\($0)]" } ?? "") + key
            if let first = seen[scopedKey] {
                throw ConfigurationError(file: path, line: lineNumber, "duplicate key '\(key)' (first set on line \(first)); keep one")
            }
            seen[scopedKey] = lineNumber
            entries.append(Entry(key: key, value: value, line: lineNumber, section: section))
        }
        self.entries = entries
    }

    /// An empty file: every key takes its default.
    public init(emptyAt path: String) {
        self.path = path
        self.entries = []
    }
}

extension StringProtocol {
    func trimmingWhitespace() -> String {
        var slice = Substring(self)
        while let first = slice.first, first.isWhitespace { slice.removeFirst() }
        while let last = slice.last, last.isWhitespace { slice.removeLast() }
        return String(slice)
    }
}
