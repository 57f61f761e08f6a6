import Foundation

/// A fresh directory under the system's temporary directory, removed when the value goes away.
public final class TemporaryDirectory: Sendable {
    public let path: String

    public init(prefix: String = "drover-test") {
        let template = NSTemporaryDirectory() + "/\(prefix).XXXXXX"
        var bytes = Array(template.utf8CString)
        guard let made = mkdtemp(&bytes) else { fatalError("mkdtemp failed: \(String(cString: strerror(errno)))") }
        path = URL(fileURLWithPath: String(cString: made)).standardizedFileURL.path
    }

    /// `path/name`.
    public func url(_ name: String) -> String { path + "/" + name }

    /// Writes `text` to `name`, creating folders, and sets its mode.
    @discardableResult
    public func write(_ name: String, _ text: String, mode: Int = 0o644) throws -> String {
        let file = url(name)
        try FileManager.default.createDirectory(atPath: (file as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        // O_CLOEXEC: a process spawned meanwhile by another test must not inherit this write
        // descriptor, or executing the file (a script) fails with ETXTBSY.
        let fd = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode_t(mode))
        guard fd >= 0 else { throw TestFailure("cannot write \(file): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let bytes = Array(text.utf8)
        guard bytes.withUnsafeBytes({ Foundation.write(fd, $0.baseAddress, $0.count) }) == bytes.count else {
            throw TestFailure("short write to \(file)")
        }
        fchmod(fd, mode_t(mode))
        return file
    }

    /// The text of `name`, or nil when it does not exist.
    public func read(_ name: String) -> String? {
        FileManager.default.contents(atPath: url(name)).flatMap { String(data: $0, encoding: .utf8) }
    }

    public func exists(_ name: String) -> Bool { FileManager.default.fileExists(atPath: url(name)) }

    deinit {
        try? FileManager.default.removeItem(atPath: path)
    }
}
