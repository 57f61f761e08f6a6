import COpenSSL
import CShims
public import Foundation

/// Small, allocation-light wrappers over OpenSSL's libcrypto.
///
/// Everything in Drover that signs, hashes or encrypts goes through here, so the rest of the
/// code base never sees a C type.
public enum Crypto {
    /// HMAC-SHA256 of `message` under `key`.
    public static func hmacSHA256(key: some DataProtocol, message: some DataProtocol) -> [UInt8] {
        let keyBytes = Array(key)
        let messageBytes = Array(message)
        var out = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var outLength: UInt32 = 0
        let result = keyBytes.withUnsafeBytes { k in
            messageBytes.withUnsafeBytes { m in
                HMAC(EVP_sha256(), k.baseAddress, Int32(k.count),
                     m.baseAddress?.assumingMemoryBound(to: UInt8.self), m.count,
                     &out, &outLength)
            }
        }
        precondition(result != nil, "HMAC-SHA256 failed inside libcrypto")
        return Array(out.prefix(Int(outLength)))
    }

    /// An HMAC-SHA256 key made ready once (its padded blocks hashed), for keys that sign many
    /// messages: OpenSSL 3's one-shot `HMAC()` sets the algorithm and the key up on every call,
    /// several times the cost of the hashing (drover_hmac.c).
    public struct PreparedHMACKey: @unchecked Sendable {
        // Read only once made: one prepared key may sign from several threads at once.
        private var prepared = drover_hmac_sha256_key()

        public init(_ key: [UInt8]) {
            key.withUnsafeBufferPointer { drover_hmac_sha256_prepare(&prepared, $0.baseAddress, $0.count) }
        }

        /// HMAC-SHA256 of `message`, the same as ``Crypto/hmacSHA256(key:message:)`` under this key.
        public func authenticate(_ message: [UInt8]) -> [UInt8] {
            var out = [UInt8](repeating: 0, count: 32)
            withUnsafePointer(to: prepared) { key in
                message.withUnsafeBufferPointer { m in
                    out.withUnsafeMutableBufferPointer { drover_hmac_sha256(key, m.baseAddress, m.count, $0.baseAddress) }
                }
            }
            return out
        }
    }

    /// SHA-256 digest of `data`.
    public static func sha256(_ data: some DataProtocol) -> [UInt8] {
        let bytes = Array(data)
        var out = [UInt8](repeating: 0, count: Int(SHA256_DIGEST_LENGTH))
        bytes.withUnsafeBufferPointer { b in
            out.withUnsafeMutableBufferPointer { drover_sha256(b.baseAddress, b.count, $0.baseAddress) }
        }
        return out
    }

    /// Whether the first certificate of the PEM file at `path` is valid for the host name `host`
    /// (its subject alternative names, wildcards included, as a browser matches them); nil when
    /// the file cannot be read as a PEM certificate.
    public static func certificate(atPath path: String, matchesHost host: String) -> Bool? {
        guard let file = fopen(path, "r") else { return nil }
        defer { fclose(file) }
        guard let certificate = PEM_read_X509(file, nil, nil, nil) else { return nil }
        defer { X509_free(certificate) }
        return X509_check_host(certificate, host, host.utf8.count, 0, nil) == 1
    }

    /// `count` bytes from OpenSSL's cryptographically secure generator.
    public static func randomBytes(_ count: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        let ok = out.withUnsafeMutableBytes { RAND_bytes($0.baseAddress?.assumingMemoryBound(to: UInt8.self), Int32(count)) }
        precondition(ok == 1, "RAND_bytes failed: the system has no entropy source")
        return out
    }

    /// Constant-time comparison, so signature checks leak nothing through timing.
    public static func constantTimeEquals(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        return a.withUnsafeBytes { x in b.withUnsafeBytes { y in CRYPTO_memcmp(x.baseAddress, y.baseAddress, a.count) == 0 } }
    }

    /// Encrypts with AES-256-GCM; the result is `nonce(12) || ciphertext || tag(16)`.
    public static func aes256GCMSeal(_ plaintext: [UInt8], key: [UInt8]) throws(CryptoError) -> [UInt8] {
        precondition(key.count == 32, "AES-256 needs a 32-byte key")
        let nonce = randomBytes(12)
        guard let ctx = EVP_CIPHER_CTX_new() else { throw CryptoError.failed("EVP_CIPHER_CTX_new") }
        defer { EVP_CIPHER_CTX_free(ctx) }
        guard EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), nil, key, nonce) == 1 else { throw CryptoError.failed("encrypt init") }
        var cipher = [UInt8](repeating: 0, count: plaintext.count + 16)
        var length: Int32 = 0
        if !plaintext.isEmpty {
            guard EVP_EncryptUpdate(ctx, &cipher, &length, plaintext, Int32(plaintext.count)) == 1 else {
                throw CryptoError.failed("encrypt update")
            }
        }
        var total = Int(length)
        var finalLength: Int32 = 0
        let finalOK = cipher.withUnsafeMutableBufferPointer { EVP_EncryptFinal_ex(ctx, $0.baseAddress! + total, &finalLength) }
        guard finalOK == 1 else { throw CryptoError.failed("encrypt final") }
        total += Int(finalLength)
        var tag = [UInt8](repeating: 0, count: 16)
        guard EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, 16, &tag) == 1 else { throw CryptoError.failed("get tag") }
        return nonce + cipher.prefix(total) + tag
    }

    /// Decrypts the output of ``aes256GCMSeal(_:key:)``; a wrong key or altered data is
    /// ``CryptoError/authenticationFailed``.
    public static func aes256GCMOpen(_ sealed: [UInt8], key: [UInt8]) throws(CryptoError) -> [UInt8] {
        precondition(key.count == 32, "AES-256 needs a 32-byte key")
        guard sealed.count >= 28 else { throw CryptoError.authenticationFailed }
        let nonce = Array(sealed.prefix(12))
        var tag = Array(sealed.suffix(16))
        let cipher = Array(sealed.dropFirst(12).dropLast(16))
        guard let ctx = EVP_CIPHER_CTX_new() else { throw CryptoError.failed("EVP_CIPHER_CTX_new") }
        defer { EVP_CIPHER_CTX_free(ctx) }
        guard EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), nil, key, nonce) == 1 else { throw CryptoError.failed("decrypt init") }
        var plain = [UInt8](repeating: 0, count: cipher.count + 16)
        var length: Int32 = 0
        if !cipher.isEmpty {
            guard EVP_DecryptUpdate(ctx, &plain, &length, cipher, Int32(cipher.count)) == 1 else {
                throw CryptoError.authenticationFailed
            }
        }
        guard EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, 16, &tag) == 1 else { throw CryptoError.failed("set tag") }
        var finalLength: Int32 = 0
        let total = Int(length)
        let ok = plain.withUnsafeMutableBufferPointer { EVP_DecryptFinal_ex(ctx, $0.baseAddress! + total, &finalLength) }
        guard ok == 1 else { throw CryptoError.authenticationFailed }
        return Array(plain.prefix(total + Int(finalLength)))
    }
}

/// A failure inside libcrypto, or data that does not authenticate.
public enum CryptoError: Error, Equatable, CustomStringConvertible {
    case failed(String)
    case authenticationFailed

    public var description: String {
        switch self {
        case .failed(let step): "libcrypto failed at \(step)"
        case .authenticationFailed: "the data does not authenticate under this key"
        }
    }
}

extension Sequence<UInt8> {
    /// Lower-case hexadecimal.
    public var hexString: String {
        let bytes = Array(self)
        // Written as UTF-8 straight into the string's storage (signatures are made per request).
        return String(unsafeUninitializedCapacity: bytes.count * 2) { out in
            func digit(_ nibble: UInt8) -> UInt8 { nibble < 10 ? UInt8(ascii: "0") + nibble : UInt8(ascii: "a") + nibble - 10 }
            for (index, byte) in bytes.enumerated() {
                out[2 * index] = digit(byte >> 4)
                out[2 * index + 1] = digit(byte & 0x0f)
            }
            return bytes.count * 2
        }
    }
}

extension Array where Element == UInt8 {
    /// Parses lower- or upper-case hexadecimal; nil on odd length or a non-hex digit.
    public init?(hexString: some StringProtocol) {
        let chars = Array(hexString.utf8)
        guard chars.count % 2 == 0 else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(chars.count / 2)
        func nibble(_ c: UInt8) -> UInt8? {
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
            default: nil
            }
        }
        var i = 0
        while i < chars.count {
            guard let hi = nibble(chars[i]), let lo = nibble(chars[i + 1]) else { return nil }
            out.append(hi << 4 | lo)
            i += 2
        }
        self = out
    }
}
