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

    /// Opens `path` for appending, creating it with `mode` (0600: what is written may name
    /// users and sessions). The file may live in a world-writable folder such as /tmp, where
    /// another user could have made it first to read what is written, or made a FIFO or a link
    /// there to block or redirect the writes: a symbolic link, anything but a regular file, and
    /// a file owned by another user are refused, and a file of ours readable by others is made
    /// 0600.
    /// - Returns: the writer, or why the file cannot be used.
    public static func appending(to path: String, mode: UInt32 = 0o600) -> Result<LineWriter, LineWriterError> {
        // O_NONBLOCK: opening a FIFO for writing would otherwise wait for a reader.
        let fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, mode_t(mode))
        guard fd >= 0 else {
            let reason = switch errno {
            case ELOOP: "it is a symbolic link; remove it"
            case ENXIO: "it is not a regular file (a FIFO, socket or device); remove it"  // a FIFO nobody reads
            default: String(cString: strerror(errno))
            }
            return .failure(LineWriterError(path: path, reason: reason))
        }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            close(fd)
            return .failure(LineWriterError(path: path, reason: String(cString: strerror(errno))))
        }
        guard info.st_mode & S_IFMT == S_IFREG else {
            close(fd)
            return .failure(LineWriterError(path: path, reason: "it is not a regular file (a FIFO, socket or device); remove it"))
        }
        guard info.st_uid == geteuid() else {
            close(fd)
            return .failure(LineWriterError(path: path, reason: "it was made by another user (uid \(info.st_uid)), who could read what is written; remove it"))
        }
        if info.st_mode & 0o077 != 0 { fchmod(fd, mode_t(mode)) }
        _ = fcntl(fd, F_SETFL, O_WRONLY | O_APPEND)
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
