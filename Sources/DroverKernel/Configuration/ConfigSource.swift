/// Where a configuration's keys came from, so a value found wrong after parsing (an unknown
/// plugin name, say) is still reported as `FILE:LINE: message`.
public struct ConfigSource: Sendable, Equatable {
    public var file: String
    public var lines: [String: Int]

    public init(file: String, lines: [String: Int] = [:]) {
        self.file = file
        self.lines = lines
    }

    /// An error pointing at the line that set `key` (or at the file when it was not set).
    public func error(_ key: String, _ message: String) -> ConfigurationError {
        ConfigurationError(file: file, line: lines[key], message)
    }
}
