import ArgumentParser
import DroverKernel
import Foundation

struct EncryptPassword: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "encrypt-password",
        abstract: "Encrypt a database password read from standard input, for password= in database.conf.",
        discussion: """
            The result is encrypted under this cluster's secure cookie key (AES-256-GCM), so \
            every node with the same key can use it. Example: \
            printf '%s' "$PGPASSWORD" | drover encrypt-password
            """)

    @OptionGroup var options: ConfigOptions

    func run() throws {
        let configuration = try options.load()
        let key: SecureCookieKey
        do {
            key = try SecureCookieKey.load(from: configuration.secureCookieKeyPath)
        } catch {
            throw CommandFailure("\(error)", status: 2)
        }
        let password: String
        if isatty(STDIN_FILENO) == 1, let typed = getpass("Password: ") {
            password = String(cString: typed)
        } else {
            var text = String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
            if text.hasSuffix("\n") { text.removeLast() }
            if text.hasSuffix("\r") { text.removeLast() }
            password = text
        }
        guard !password.isEmpty else { throw CommandFailure("no password on standard input", status: 2) }
        print(DatabasePassword.encrypt(password, key: key))
    }
}
