import Foundation

extension DatabasePassword {
    static let encryptionPurpose = "database-password"

    /// Encrypts `password` under `key` (AES-256-GCM with a key derived from it), in the form
    /// `drover encrypt-password` prints for `database.conf`.
    public static func encrypt(_ password: String, key: SecureCookieKey) -> String {
        // Sealing with a 32-byte key and fresh nonce cannot fail short of libcrypto breaking.
        let sealed = (try? Crypto.aes256GCMSeal(Array(password.utf8), key: key.derivedKey(purpose: encryptionPurpose))) ?? []
        precondition(!sealed.isEmpty, "AES-256-GCM encryption failed inside libcrypto")
        return encryptedPrefix + Data(sealed).base64EncodedString()
    }

    /// The password in clear, decrypting an encrypted one under `key`.
    /// - Throws: ``ConfigurationError`` on `database.conf` when the value was encrypted under
    ///   another key or is damaged; the message never contains the secret.
    public func reveal(key: SecureCookieKey?, source: ConfigSource) throws(ConfigurationError) -> String {
        switch self {
        case .plain(let text):
            return text
        case .encrypted(let text):
            guard let key else {
                throw source.error("password", "the password is encrypted but no secure cookie key is loaded")
            }
            guard let sealed = Data(base64Encoded: text) else {
                throw source.error("password", "the encrypted password is damaged (not base64); encrypt it again with: drover encrypt-password")
            }
            guard let plain = try? Crypto.aes256GCMOpen(Array(sealed), key: key.derivedKey(purpose: Self.encryptionPurpose)),
                  let string = String(bytes: plain, encoding: .utf8) else {
                throw source.error("password", "the password was encrypted under a different secure cookie key (or altered); "
                    + "encrypt it again with this node's key: drover encrypt-password")
            }
            return string
        }
    }
}
