import DroverKernel
import DroverSessionProtocol
import Foundation

/// A session's own folder, `<server-data-dir>/run/<id>`: where a `unix-socket` program binds
/// its socket and where a program that checks a secret reads it.
///
/// The tree (`run/`) is root's, mode 0711: users pass through it to their own session's folder
/// but cannot list it or create anything in it, so nobody can plant a folder or a link at a
/// session's path before the guard makes it. The session's folder is the user's, mode 0700:
/// other users cannot reach the socket or the secret in it. What the user puts inside it
/// (links, other sockets) is the user's business; droverd connects there with the user's rights
/// and checks who listens, and the folder is removed through directory descriptors, never by
/// following a path inside it.
enum RunDirectory {
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    static func make(_ path: String, uid: uid_t, gid: gid_t, secret: String?) throws {
        let tree = (path as NSString).deletingLastPathComponent
        mkdir(tree, 0o711)
        var info = stat()
        guard lstat(tree, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR, info.st_uid == geteuid() else {
            throw Failure(description: "\(tree) must be a directory owned by droverd's user; remove whatever is there")
        }
        chmod(tree, 0o711)
        // A folder left by a guard that died is removed first; nobody but root can have made it.
        remove(path, uid: uid)
        // What could not be removed (nested past 1,024 levels, a folder of someone else's moved
        // in) is moved aside in root's tree, out of the way of this start.
        if access(path, F_OK) == 0 { rename(path, tree + "/.stale-" + (path as NSString).lastPathComponent + "-" + String(UInt32.random(in: 0...UInt32.max), radix: 16)) }
        guard mkdir(path, 0o700) == 0 else {
            throw Failure(description: "cannot make the session's folder \(path) (\(String(cString: strerror(errno))))")
        }
        if let secret {
            let fd = open(path + "/" + SessionGuardProtocol.Spec.secretFileName, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
            guard fd >= 0 else { throw Failure(description: "cannot write the session's secret (\(String(cString: strerror(errno))))") }
            defer { close(fd) }
            let bytes = Array(secret.utf8)
            guard bytes.withUnsafeBytes({ write(fd, $0.baseAddress, $0.count) }) == bytes.count, fchown(fd, uid, gid) == 0 else {
                throw Failure(description: "cannot write the session's secret (\(String(cString: strerror(errno))))")
            }
        }
        // Made by root in a folder only root may write, so the path is still the folder made above.
        guard lchown(path, uid, gid) == 0 else {
            throw Failure(description: "cannot give the session's folder to uid \(uid) (\(String(cString: strerror(errno))))")
        }
    }

    /// Removes the folder and everything in it, through descriptors opened without following
    /// links: a link the user left inside leads nowhere. It goes down only into folders of the
    /// session's user on the folder's own file system: a folder of someone else's that the user
    /// moved in (a shared project tree whose parent they may write) is left alone, not emptied
    /// with root's rights.
    static func remove(_ path: String, uid: uid_t) {
        let parent = open((path as NSString).deletingLastPathComponent, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard parent >= 0 else { return }
        defer { close(parent) }
        var top = stat()
        guard fstatat(parent, (path as NSString).lastPathComponent, &top, AT_SYMLINK_NOFOLLOW) == 0 else { return }
        removeEntry(named: (path as NSString).lastPathComponent, in: parent, depth: 0, uid: uid, device: top.st_dev)
    }

    private static func removeEntry(named name: String, in parent: Int32, depth: Int, uid: uid_t, device: dev_t) {
        if unlinkat(parent, name, 0) == 0 || errno == ENOENT { return }
        guard errno == EISDIR || errno == EPERM, depth < 1024 else { return }
        let fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { return }
        var info = stat()
        guard fstat(fd, &info) == 0, info.st_dev == device, info.st_uid == uid || (depth == 0 && info.st_uid == geteuid()) else {
            close(fd)
            return
        }
        if let listing = fdopendir(dup(fd)) {
            var names: [String] = []
            while let entry = readdir(listing) {
                let entryName = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
                if entryName != ".", entryName != ".." { names.append(entryName) }
            }
            closedir(listing)
            for entryName in names { removeEntry(named: entryName, in: fd, depth: depth + 1, uid: uid, device: device) }
        }
        close(fd)
        unlinkat(parent, name, AT_REMOVEDIR)
    }
}

