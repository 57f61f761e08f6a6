import Foundation

/// Writes whole lines to a file descriptor, each with a single `write(2)` so that lines from
/// several threads or processes appending to one file never interleave.
public final class LineWriter: Sendable {
    public let fileDescriptor: Int32
    private let ownsDescriptor: Bool

    /// Wraps an open descriptor.
    /// - Parameters:
    ///   - closeOnDeinit: close it when the writer goes away (false for standard error).
    public init(fileDescriptor: Int32, closeOnDeinit: Bool) {
        self.fileDescriptor = fileDescriptor
        self.ownsDescriptor = closeOnDeinit
    }

    /// Opens `path` for appending, creating it with `mode`; refuses to follow a symbolic link
    /// (the file may live in a world-writable directory such as /tmp).
    /// - Returns: the writer, or the `errno` text on failure.
    public static func appending(to path: String, mode: UInt32 = 0o640) -> Result<LineWriter, LineWriterError> {
        let fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, mode_t(mode))
        guard fd >= 0 else { return .failure(LineWriterError(path: path, reason: String(cString: strerror(errno)))) }
        return .success(LineWriter(fileDescriptor: fd, closeOnDeinit: true))
    }

    /// Writes `line` and a newline. Errors are swallowed: a full disk must not stop a node.
    public func write(line: String) {
        var bytes = Array(line.utf8)
        bytes.append(0x0a)
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { Foundation.write(fileDescriptor, $0.baseAddress! + offset, $0.count - offset) }
            if n < 0 {
                if errno == EINTR { continue }
                return
            }
            offset += n
        }
    }

    deinit {
        if ownsDescriptor { close(fileDescriptor) }
    }
}

/// A file a ``LineWriter`` could not open.
public struct LineWriterError: Error, Sendable, CustomStringConvertible {
    public var path: String
    public var reason: String
    public var description: String { "cannot open \(path) for writing (\(reason))" }
}
