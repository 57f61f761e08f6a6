import Foundation
import Synchronization

/// The secret every node of a cluster shares. It signs cookies and node-to-node calls, encrypts
/// database passwords, and its hash identifies the cluster.
///
/// The key is the file's contents with surrounding white space trimmed. It must be at least
/// 16 bytes and its file readable by its owner only.
public struct SecureCookieKey: Sendable, Equatable {
    public static let defaultFileName = "secure-cookie-key"
    public static let minimumLength = 16
    /// The label whose HMAC identifies a cluster's key without revealing it.
    static let clusterHashLabel = "drover cluster key v1"

    /// The file it was read from.
    public let path: String
    let bytes: [UInt8]
    /// The derived keys, made ready for signing as each purpose is first used: every request
    /// between nodes is signed and verified, and every sign-in cookie checked, under one.
    private let signingKeys = SigningKeys()

    /// A key from raw bytes (tests, and keys held in memory).
    public init(bytes: [UInt8], path: String = "<memory>") {
        self.bytes = bytes
        self.path = path
    }

    /// Reads and checks the key file.
    /// - Throws: ``ConfigurationError`` naming the file and the fix, when it is missing,
    ///   unreadable, readable by others, or too short.
    public static func load(from path: String) throws(ConfigurationError) -> SecureCookieKey {
        var info = stat()
        guard stat(path, &info) == 0 else {
            if errno == ENOENT {
                throw ConfigurationError(file: path, "no secure cookie key; create one with: drover generate-key --output \(path)")
            }
            throw ConfigurationError(file: path, "cannot read the secure cookie key (\(String(cString: strerror(errno))))")
        }
        guard info.st_mode & S_IFMT == S_IFREG else {
            throw ConfigurationError(file: path, "the secure cookie key is not a regular file; replace it with: drover generate-key --output \(path) --force")
        }
        // Whoever owns the key can change it, and so sign cookies for any user.
        guard info.st_uid == geteuid() || info.st_uid == 0 else {
            throw ConfigurationError(file: path,
                "the secure cookie key is owned by uid \(info.st_uid), not by root or the user running this (uid \(geteuid())); "
                + "run: chown \(geteuid()) \(path)")
        }
        // Nor may anyone else be able to put another key in its place.
        let folder = (path as NSString).deletingLastPathComponent.isEmpty ? "." : (path as NSString).deletingLastPathComponent
        var folderInfo = stat()
        if stat(folder, &folderInfo) == 0, folderInfo.st_mode & 0o022 != 0, folderInfo.st_mode & S_ISVTX == 0 {
            throw ConfigurationError(file: path,
                "the secure cookie key's folder \(folder) may be written by other users (mode \(String(format: "%04o", folderInfo.st_mode & 0o777))), "
                + "who could put another key in its place; run: chmod go-w \(folder)")
        }
        let mode = info.st_mode & 0o777
        guard mode & 0o077 == 0 else {
            throw ConfigurationError(file: path,
                "the secure cookie key has mode \(String(format: "%04o", mode)) and may be read by other users; run: chmod 0600 \(path)")
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigurationError(file: path, "cannot read the secure cookie key (permission denied); check its owner")
        }
        var slice = data[...]
        while let last = slice.last, last == 0x0a || last == 0x0d || last == 0x20 || last == 0x09 { slice = slice.dropLast() }
        while let first = slice.first, first == 0x0a || first == 0x0d || first == 0x20 || first == 0x09 { slice = slice.dropFirst() }
        guard slice.count >= minimumLength else {
            throw ConfigurationError(file: path,
                "the secure cookie key is \(slice.count) bytes; it must be at least \(minimumLength). "
                + "Replace it with: drover generate-key --output \(path) --force")
        }
        return SecureCookieKey(bytes: Array(slice), path: path)
    }

    /// Writes a fresh random key (32 random bytes, hex) with mode 0600, atomically: readers see
    /// either no file, the old key, or the whole new key.
    /// - Parameters:
    ///   - force: replace an existing key; without it an existing file is an error.
    public static func generate(at path: String, force: Bool) throws(ConfigurationError) -> SecureCookieKey {
        let text = Crypto.randomBytes(32).hexString + "\n"
        let directory = (path as NSString).deletingLastPathComponent
        let temporary = "\(directory.isEmpty ? "." : directory)/.\((path as NSString).lastPathComponent).\(getpid()).\(Crypto.randomBytes(4).hexString)"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw ConfigurationError(file: path, "cannot write a key here (\(String(cString: strerror(errno)))); check the directory exists and is writable")
        }
        defer { unlink(temporary) }
        let bytes = Array(text.utf8)
        let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        let synced = fchmod(fd, 0o600) == 0 && fsync(fd) == 0
        close(fd)
        guard written == bytes.count, synced else {
            throw ConfigurationError(file: path, "writing the key failed (\(String(cString: strerror(errno))))")
        }
        if force {
            guard rename(temporary, path) == 0 else {
                throw ConfigurationError(file: path, "cannot replace the key (\(String(cString: strerror(errno))))")
            }
        } else if link(temporary, path) != 0 {
            // link() fails when the target exists, so an existing key is never overwritten, even by a race.
            if errno == EEXIST {
                throw ConfigurationError(file: path, "a key already exists; keep it, or pass --force to replace it (every node must then get the new key)")
            }
            throw ConfigurationError(file: path, "cannot create the key (\(String(cString: strerror(errno))))")
        }
        return SecureCookieKey(bytes: Array(text.utf8.dropLast()), path: path)
    }

    /// Identifies the cluster's key: HMAC-SHA256 of a fixed label under the key, hex.
    public var clusterHash: String {
        Crypto.hmacSHA256(key: bytes, message: Array(Self.clusterHashLabel.utf8)).hexString
    }

    /// A 32-byte key for one purpose (signing, encryption), so no two uses share key material.
    public func derivedKey(purpose: String) -> [UInt8] {
        Crypto.hmacSHA256(key: bytes, message: Array("drover derived key: \(purpose)".utf8))
    }

    /// HMAC-SHA256 of `message` under the key derived for `purpose`.
    public func sign(_ message: [UInt8], purpose: String) -> [UInt8] {
        signingKeys.key(for: purpose) { Crypto.PreparedHMACKey(derivedKey(purpose: purpose)) }.authenticate(message)
    }

    /// The prepared signing key of each purpose used so far (a handful: cookies, CSRF tokens,
    /// node-to-node calls).
    private final class SigningKeys: Sendable {
        private let keys = Mutex<[String: Crypto.PreparedHMACKey]>([:])

        func key(for purpose: String, make: () -> Crypto.PreparedHMACKey) -> Crypto.PreparedHMACKey {
            if let key = keys.withLock({ $0[purpose] }) { return key }
            let key = make()
            keys.withLock { $0[purpose] = key }
            return key
        }
    }

    public static func == (lhs: SecureCookieKey, rhs: SecureCookieKey) -> Bool {
        Crypto.constantTimeEquals(lhs.bytes, rhs.bytes)
    }
}

extension SecureCookieKey: CustomStringConvertible {
    /// Never the secret itself.
    public var description: String { "SecureCookieKey(\(path))" }
}
