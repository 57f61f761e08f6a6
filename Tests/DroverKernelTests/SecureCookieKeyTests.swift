import DroverKernel
import DroverTesting
import Foundation
import Testing

@Suite struct SecureCookieKeyTests {
    @Test func loadsATrimmedKey() async throws {
        let dir = TemporaryDirectory()
        let path = try dir.write("k", "a55e5dc0-d6ae-11e3-9334-000c29635f71\n", mode: 0o600)
        let key = try SecureCookieKey.load(from: path)
        #expect(key == SecureCookieKey(bytes: Array("a55e5dc0-d6ae-11e3-9334-000c29635f71".utf8)))
        #expect("\(key)".contains("a55e") == false)
    }

    @Test func refusesAShortKey() async throws {
        let dir = TemporaryDirectory()
        let path = try dir.write("k", "only15bytes1234\n", mode: 0o600)
        #expect(throws: ConfigurationError(file: path,
            "the secure cookie key is 15 bytes; it must be at least 16. Replace it with: drover generate-key --output \(path) --force")) {
            try SecureCookieKey.load(from: path)
        }
        let ok = try dir.write("k16", "exactly16bytes!!", mode: 0o600)
        #expect(throws: Never.self) { try SecureCookieKey.load(from: ok) }
    }

    @Test(arguments: [0o644, 0o640, 0o604, 0o660])
    func refusesALooseMode(mode: Int) async throws {
        let dir = TemporaryDirectory()
        let path = try dir.write("k", "0123456789abcdef0123", mode: mode)
        #expect(throws: ConfigurationError(file: path,
            "the secure cookie key has mode \(String(format: "%04o", mode)) and may be read by other users; run: chmod 0600 \(path)")) {
            try SecureCookieKey.load(from: path)
        }
    }

    /// Whoever can change the key can sign cookies for any user: it must be a regular file of
    /// root or of the user running Drover, in a folder others cannot write to.
    @Test func refusesAKeyThatIsNotAFileOrIsAnotherUsersOrLivesInAFolderOthersCanWrite() async throws {
        let dir = TemporaryDirectory()
        let folder = dir.url("keydir")
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        #expect(mkfifo(folder + "/fifo", 0o600) == 0)
        #expect(throws: ConfigurationError(file: folder + "/fifo",
            "the secure cookie key is not a regular file; replace it with: drover generate-key --output \(folder)/fifo --force")) {
            try SecureCookieKey.load(from: folder + "/fifo")
        }
        let path = try dir.write("keydir/k", "0123456789abcdef0123", mode: 0o600)
        #expect(throws: Never.self) { try SecureCookieKey.load(from: path) }
        chmod(folder, 0o777)
        #expect(throws: ConfigurationError(file: path,
            "the secure cookie key's folder \(folder) may be written by other users (mode 0777), who could put another key in its place; run: chmod go-w \(folder)")) {
            try SecureCookieKey.load(from: path)
        }
        chmod(folder, 0o1777)
        #expect(throws: Never.self, "a sticky folder (like /tmp): others cannot replace our file") { try SecureCookieKey.load(from: path) }
        chmod(folder, 0o700)
        if geteuid() == 0 {
            #expect(chown(path, 65534, 65534) == 0)
            #expect(throws: ConfigurationError(file: path,
                "the secure cookie key is owned by uid 65534, not by root or the user running this (uid 0); run: chown 0 \(path)")) {
                try SecureCookieKey.load(from: path)
            }
        }
    }

    @Test func missingKeySaysHowToCreateIt() {
        #expect(throws: ConfigurationError(file: "/nonexistent/k", "no secure cookie key; create one with: drover generate-key --output /nonexistent/k")) {
            try SecureCookieKey.load(from: "/nonexistent/k")
        }
    }

    @Test func generatesARandomKeyWithMode0600AndNeverOverwritesWithoutForce() async throws {
        let dir = TemporaryDirectory()
        let path = dir.url("secure-cookie-key")
        let first = try SecureCookieKey.generate(at: path, force: false)
        var info = stat()
        stat(path, &info)
        #expect(info.st_mode & 0o777 == 0o600)
        #expect(try SecureCookieKey.load(from: path) == first)
        #expect(dir.read("secure-cookie-key")?.count == 65)

        #expect(throws: ConfigurationError.self) { try SecureCookieKey.generate(at: path, force: false) }
        #expect(try SecureCookieKey.load(from: path) == first)

        let second = try SecureCookieKey.generate(at: path, force: true)
        #expect(second != first)
        #expect(try SecureCookieKey.load(from: path) == second)
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: dir.path)
        #expect(leftovers == ["secure-cookie-key"])
    }

    @Test func generateIntoMissingDirectoryFails() {
        #expect(throws: ConfigurationError.self) { try SecureCookieKey.generate(at: "/nonexistent/dir/k", force: false) }
    }

    @Test func clusterHashIsStablePerKeyAndDiffersBetweenKeys() {
        let a = SecureCookieKey(bytes: Array("0123456789abcdef".utf8))
        let b = SecureCookieKey(bytes: Array("0123456789abcdeF".utf8))
        #expect(a.clusterHash == SecureCookieKey(bytes: Array("0123456789abcdef".utf8)).clusterHash)
        #expect(a.clusterHash != b.clusterHash)
        #expect(a.clusterHash.count == 64)
        #expect(a.derivedKey(purpose: "x") != a.derivedKey(purpose: "y"))
    }
}
