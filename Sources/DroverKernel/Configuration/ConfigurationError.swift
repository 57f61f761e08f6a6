/// Bad configuration, reported as `FILE:LINE: message` (or `FILE: message` when no single line is
/// to blame). Executables print ``description`` and exit with status 2.
public struct ConfigurationError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The file as the operator named it (absolute, or relative to the working directory).
    public var file: String
    /// 1-based line, or nil when the whole file is at fault.
    public var line: Int?
    /// What is wrong and, where it is not obvious, how to fix it.
    public var message: String

    public init(file: String, line: Int? = nil, _ message: String) {
        self.file = file
        self.line = line
        self.message = message
    }

    public var description: String {
        if let line { "\(file):\(line): \(message)" } else { "\(file): \(message)" }
    }
}
