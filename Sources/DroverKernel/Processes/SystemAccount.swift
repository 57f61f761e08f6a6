import Foundation

/// An account of this machine's user database, looked up with `getpwnam_r`/`getpwuid_r`:
/// droverd (sign-ins, session starts, the dashboard) and its tests look accounts up on many
/// threads at once, and `getpwnam`'s answer is one static buffer that any other thread's look-up
/// overwrites. A look-up may block (the name service may be a directory server): callers on the
/// cooperative pool move it to a thread of the blocking-work pool.
public struct SystemAccount: Sendable, Equatable {
    public let name: String
    public let uid: UInt32
    public let gid: UInt32
    public let home: String
    /// The login shell (`pw_shell`).
    public let shell: String

    /// The account `name`, or nil.
    public static func named(_ name: String) -> SystemAccount? {
        lookUp { entry, buffer, found in getpwnam_r(name, &entry, &buffer, buffer.count, &found) }
    }

    /// The account whose uid is `uid`, or nil.
    public static func withID(_ uid: UInt32) -> SystemAccount? {
        lookUp { entry, buffer, found in getpwuid_r(uid, &entry, &buffer, buffer.count, &found) }
    }

    private static func lookUp(_ call: (inout passwd, inout [CChar], inout UnsafeMutablePointer<passwd>?) -> Int32) -> SystemAccount? {
        var entry = passwd()
        var found: UnsafeMutablePointer<passwd>?
        var buffer = [CChar](repeating: 0, count: 16_384)
        guard call(&entry, &buffer, &found) == 0, found != nil else { return nil }
        return SystemAccount(name: String(cString: entry.pw_name), uid: entry.pw_uid, gid: entry.pw_gid,
                             home: String(cString: entry.pw_dir), shell: entry.pw_shell.map { String(cString: $0) } ?? "/bin/sh")
    }
}
