/// The `file-locks` file: the cross-node lock scheme.
///
/// Keys (default): `lock-type` (`linkbased`), `refresh-rate` (20 seconds), `timeout-interval`
/// (30 seconds), `enable-logging` (0), `log-file` (none: the system log). The refresh rate must
/// be smaller than the timeout, or a live holder's lock would look stale.
public struct FileLocksConfiguration: Sendable, Equatable {
    public static let fileName = "file-locks"
    static let keys = ["lock-type", "refresh-rate", "timeout-interval", "enable-logging", "log-file"]

    /// `lock-type`: the lock provider plugin.
    public var lockType = "linkbased"
    /// `refresh-rate`: seconds between a holder's refreshes of its lock.
    public var refreshRate = 20
    /// `timeout-interval`: seconds after which an unrefreshed lock is stale.
    public var timeoutInterval = 30
    /// `enable-logging`: log every acquire, refusal, refresh, break and release.
    public var enableLogging = false
    /// `log-file`: where lock logging goes; nil means the system log.
    public var logFile: String?

    /// Where the keys were read from.
    public var source = ConfigSource(file: Self.fileName)

    public init() {}

    public init(file: ConfigFile, baseDirectory: String) throws(ConfigurationError) {
        let reader = ConfigReader(file, baseDirectory: baseDirectory)
        source = reader.source
        try reader.rejectUnknownKeys(known: Self.keys)
        lockType = try reader.string("lock-type") ?? lockType
        refreshRate = try reader.integer("refresh-rate", default: refreshRate, in: 1...86_400)
        timeoutInterval = try reader.integer("timeout-interval", default: timeoutInterval, in: 1...86_400)
        enableLogging = try reader.boolean("enable-logging", default: false)
        logFile = try reader.path("log-file")
        if refreshRate >= timeoutInterval {
            let line = reader.entry("refresh-rate")?.line ?? reader.entry("timeout-interval")?.line
            throw ConfigurationError(file: file.path, line: line,
                "refresh-rate (\(refreshRate)) must be smaller than timeout-interval (\(timeoutInterval)), "
                + "or live locks look stale; lower refresh-rate or raise timeout-interval")
        }
    }

    public init(parsing text: String, path: String, baseDirectory: String) throws(ConfigurationError) {
        try self.init(file: ConfigFile(parsing: text, path: path), baseDirectory: baseDirectory)
    }
}
