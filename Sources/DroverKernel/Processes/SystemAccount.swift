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

    public init(name: String, uid: UInt32, gid: UInt32, home: String, shell: String = "/bin/sh") {
        self.name = name
        self.uid = uid
        self.gid = gid
        self.home = home
        self.shell = shell
    }

    /// The account `name`, or nil. Its ``name`` is `name` as asked (the user as signed in),
    /// whatever spelling the name service keeps.
    public static func named(_ name: String) -> SystemAccount? {
        lookUp(name: name) { entry, buffer, found in getpwnam_r(name, &entry, &buffer, buffer.count, &found) }
    }

    /// The account whose uid is `uid`, or nil.
    public static func withID(_ uid: UInt32) -> SystemAccount? {
        lookUp(name: nil) { entry, buffer, found in getpwuid_r(uid, &entry, &buffer, buffer.count, &found) }
    }

    /// The ids of every group the account is in: its primary group and each group that lists
    /// it (`getgrouplist`). Empty when the name service cannot say.
    public var groupIDs: [UInt32] {
        var count: Int32 = 256
        var ids = [gid_t](repeating: 0, count: Int(count))
        if getgrouplist(name, gid, &ids, &count) < 0 {
            // More groups than room: `count` now says how many.
            ids = [gid_t](repeating: 0, count: Int(count))
            guard getgrouplist(name, gid, &ids, &count) >= 0 else { return [] }
        }
        return Array(ids.prefix(Int(count)))
    }

    /// - Parameter name: the account's name as asked; nil to take the name service's.
    private static func lookUp(name: String?, _ call: (inout passwd, inout [CChar], inout UnsafeMutablePointer<passwd>?) -> Int32) -> SystemAccount? {
        var entry = passwd()
        return withRetriedBuffer { buffer in
            var found: UnsafeMutablePointer<passwd>?
            let result = call(&entry, &buffer, &found)
            guard result == 0, found != nil else { return (result, nil) }
            return (0, SystemAccount(name: name ?? String(cString: entry.pw_name), uid: entry.pw_uid, gid: entry.pw_gid,
                                     home: String(cString: entry.pw_dir), shell: entry.pw_shell.map { String(cString: $0) } ?? "/bin/sh"))
        }
    }
}

/// A group of this machine's group database, looked up with `getgrnam_r`/`getgrgid_r` (see
/// ``SystemAccount`` for why never `getgrnam`).
public struct SystemGroup: Sendable, Equatable {
    public let name: String
    public let gid: UInt32

    public init(name: String, gid: UInt32) {
        self.name = name
        self.gid = gid
    }

    /// The group `name`, or nil.
    public static func named(_ name: String, bufferSize: Int = 16_384) -> SystemGroup? {
        lookUp(bufferSize) { entry, buffer, found in getgrnam_r(name, &entry, &buffer, buffer.count, &found) }
    }

    /// The group whose gid is `gid`, or nil.
    public static func withID(_ gid: UInt32, bufferSize: Int = 16_384) -> SystemGroup? {
        lookUp(bufferSize) { entry, buffer, found in getgrgid_r(gid, &entry, &buffer, buffer.count, &found) }
    }

    private static func lookUp(_ size: Int, _ call: (inout group, inout [CChar], inout UnsafeMutablePointer<group>?) -> Int32) -> SystemGroup? {
        var entry = group()
        return withRetriedBuffer(size) { buffer in
            var found: UnsafeMutablePointer<group>?
            let result = call(&entry, &buffer, &found)
            guard result == 0, found != nil else { return (result, nil) }
            return (0, SystemGroup(name: String(cString: entry.gr_name), gid: entry.gr_gid))
        }
    }
}

/// Runs a `get…_r` look-up with a buffer that doubles while the look-up answers `ERANGE`, up to
/// 16 MiB: a group's entry holds its member list, which in a directory of thousands of
/// accounts outgrows any fixed size (a fixed 64 KiB once made such a group look absent).
/// - Parameter body: the look-up; returns its result code and what it found.
func withRetriedBuffer<T>(_ size: Int = 16_384, _ body: (inout [CChar]) -> (Int32, T?)) -> T? {
    var size = max(size, 16)
    while true {
        var buffer = [CChar](repeating: 0, count: size)
        let (result, value) = body(&buffer)
        guard result == ERANGE, size < 16 << 20 else { return value }
        size *= 2
    }
}
