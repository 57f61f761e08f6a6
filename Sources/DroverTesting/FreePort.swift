import Foundation

/// Finds TCP ports nobody listens on.
public enum FreePort {
    /// A port the kernel just handed out for `host`; free unless someone grabs it in between.
    public static func find(host: String = "127.0.0.1") throws -> Int {
        let (fd, port) = try IPv4Socket.bound(host)
        close(fd)
        return port
    }
}
