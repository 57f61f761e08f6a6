import DroverKernel
import Testing

@Suite struct FileLocksConfigurationTests {
    func parse(_ text: String) throws(ConfigurationError) -> FileLocksConfiguration {
        try FileLocksConfiguration(parsing: text, path: "/etc/drover/file-locks", baseDirectory: "/etc/drover")
    }

    @Test func defaults() async throws {
        let config = try parse("")
        #expect(config.lockType == "linkbased")
        #expect(config.refreshRate == 20)
        #expect(config.timeoutInterval == 30)
        #expect(config.enableLogging == false)
        #expect(config.logFile == nil)
    }

    @Test func readsEveryKey() async throws {
        let config = try parse("lock-type=advisory\nrefresh-rate=5\ntimeout-interval=12\nenable-logging=1\nlog-file=locks.log\n")
        #expect(config.lockType == "advisory")
        #expect(config.refreshRate == 5)
        #expect(config.timeoutInterval == 12)
        #expect(config.enableLogging)
        #expect(config.logFile == "/etc/drover/locks.log")
    }

    @Test(arguments: [
        ("refresh-rate=30", 1, "refresh-rate (30) must be smaller than timeout-interval (30), or live locks look stale; lower refresh-rate or raise timeout-interval"),
        ("timeout-interval=10", 1, "refresh-rate (20) must be smaller than timeout-interval (10), or live locks look stale; lower refresh-rate or raise timeout-interval"),
        ("refresh-rate=-1", 1, "'refresh-rate' must be from 1 to 86400, found -1"),
        ("timeout-interval=0", 1, "'timeout-interval' must be from 1 to 86400, found 0"),
        ("enable-logging=on", 1, "'enable-logging' must be 0 or 1, found 'on'"),
        ("lock-typ=advisory", 1, "unknown key 'lock-typ'; known keys are lock-type, refresh-rate, timeout-interval, enable-logging, log-file"),
    ])
    func rejectsBadInput(text: String, line: Int, message: String) {
        #expect(throws: ConfigurationError(file: "/etc/drover/file-locks", line: line, message)) { try parse(text) }
    }
}
