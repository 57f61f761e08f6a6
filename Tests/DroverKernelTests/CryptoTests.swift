import DroverKernel
import Testing

@Suite struct CryptoTests {
    @Test func hmacSHA256MatchesRFC4231TestCase2() {
        let mac = Crypto.hmacSHA256(key: Array("Jefe".utf8), message: Array("what do ya want for nothing?".utf8))
        #expect(mac.hexString == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
    }

    /// The prepared key (drover_hmac.c, hashing the padded key once) gives OpenSSL's HMAC for
    /// keys shorter than, as long as and longer than SHA-256's 64-byte block (a long key is
    /// hashed first), and for messages across block boundaries; RFC 4231 case 6 is a long key.
    @Test func aPreparedHMACKeySignsAsOpenSSLDoes() {
        #expect(Crypto.PreparedHMACKey(Array("Jefe".utf8)).authenticate(Array("what do ya want for nothing?".utf8)).hexString
            == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        #expect(Crypto.PreparedHMACKey([UInt8](repeating: 0xaa, count: 131))
            .authenticate(Array("Test Using Larger Than Block-Size Key - Hash Key First".utf8)).hexString
            == "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54")
        for keyLength in [0, 1, 16, 32, 63, 64, 65, 200] {
            let key = Crypto.randomBytes(max(keyLength, 1)).prefix(keyLength)
            let prepared = Crypto.PreparedHMACKey(Array(key))
            for messageLength in [0, 1, 55, 56, 63, 64, 65, 119, 128, 300] {
                let message = Crypto.randomBytes(max(messageLength, 1)).prefix(messageLength)
                #expect(prepared.authenticate(Array(message)) == Crypto.hmacSHA256(key: Array(key), message: Array(message)),
                        "key \(keyLength) bytes, message \(messageLength) bytes")
            }
        }
    }

    /// Signing under a derived key (the prepared keys a SecureCookieKey keeps) is HMAC-SHA256
    /// under that derived key, the same on the first use of a purpose and after it.
    @Test func signingUnderAPurposeIsTheHMACOfItsDerivedKey() {
        let key = SecureCookieKey(bytes: Crypto.randomBytes(32))
        let message = Array("GET\n/s/x/\n".utf8)
        let expected = Crypto.hmacSHA256(key: key.derivedKey(purpose: "p"), message: message)
        #expect(key.sign(message, purpose: "p") == expected)
        #expect(key.sign(message, purpose: "p") == expected)
        #expect(key.sign(message, purpose: "q") != expected)
    }

    @Test func sha256OfABC() {
        #expect(Crypto.sha256(Array("abc".utf8)).hexString == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(Crypto.sha256([UInt8]()).hexString == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    }

    @Test func aesGCMRoundTripsAndRefusesAnotherKeyOrAlteredData() async throws {
        let key = Crypto.randomBytes(32)
        let sealed = try Crypto.aes256GCMSeal(Array("correct horse".utf8), key: key)
        #expect(try Crypto.aes256GCMOpen(sealed, key: key) == Array("correct horse".utf8))
        #expect(throws: CryptoError.authenticationFailed) { try Crypto.aes256GCMOpen(sealed, key: Crypto.randomBytes(32)) }
        var altered = sealed
        altered[14] ^= 1
        #expect(throws: CryptoError.authenticationFailed) { try Crypto.aes256GCMOpen(altered, key: key) }
        #expect(throws: CryptoError.authenticationFailed) { try Crypto.aes256GCMOpen([1, 2, 3], key: key) }
    }

    @Test func hexRoundTrip() {
        #expect([UInt8](hexString: "00ff10Ab") == [0, 255, 16, 171])
        #expect([UInt8](hexString: "abc") == nil)
        #expect([UInt8](hexString: "zz") == nil)
        #expect(Crypto.constantTimeEquals([1, 2], [1, 2]))
        #expect(!Crypto.constantTimeEquals([1, 2], [1, 3]))
        #expect(!Crypto.constantTimeEquals([1], [1, 2]))
    }
}
