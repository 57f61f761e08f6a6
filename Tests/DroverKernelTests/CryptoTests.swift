import DroverKernel
import Testing

@Suite struct CryptoTests {
    @Test func hmacSHA256MatchesRFC4231TestCase2() {
        let mac = Crypto.hmacSHA256(key: Array("Jefe".utf8), message: Array("what do ya want for nothing?".utf8))
        #expect(mac.hexString == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
    }

    @Test func sha256OfABC() {
        #expect(Crypto.sha256(Array("abc".utf8)).hexString == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
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
