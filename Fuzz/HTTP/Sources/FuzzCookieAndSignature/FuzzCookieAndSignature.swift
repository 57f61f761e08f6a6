import DroverCluster
import DroverKernel
import DroverServer
import Foundation

// libFuzzer target: sign-in cookies and node-to-node signatures built from arbitrary bytes must
// be refused cleanly (never crash, never accepted without the key).
let fuzzKey = SecureCookieKey(bytes: Array("fuzzing-key-0123456789abcdef".utf8))

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzCookieAndSignature(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    let text = String(decoding: bytes, as: UTF8.self)
    if let user = try? SignInCookie.verify(text, key: fuzzKey, now: Date(timeIntervalSince1970: 1_800_000_000)) {
        // Only a cookie this key signed can name a user.
        precondition(SignInCookie.issue(username: user, lifetime: 0, key: fuzzKey).split(separator: ".").count == 5)
        precondition(SignInCookie.user(of: text) == user, "the unchecked reading of the user differs from the verified one")
    }
    // The unchecked readers used for revocations take anything without crashing.
    _ = SignInCookie.user(of: text)
    _ = SignInCookie.expiry(of: text)
    _ = SignInCookie.digest(of: text)
    _ = SignInCookie.value(named: SignInCookie.name, inHeader: text)
    let parts = text.split(separator: "\n", maxSplits: 5, omittingEmptySubsequences: false).map(String.init)
    let headers: [String: String] = [
        InternalRequestSignature.timestampHeader: parts.count > 0 ? parts[0] : "",
        InternalRequestSignature.nonceHeader: parts.count > 1 ? parts[1] : "",
        InternalRequestSignature.signatureHeader: parts.count > 2 ? parts[2] : "",
        InternalRequestSignature.destinationHeader: parts.count > 3 ? parts[3] : "127.0.0.1:8787",
    ]
    let path = parts.count > 4 ? parts[4] : "/load-balancer/ping"
    let body = Array((parts.count > 5 ? parts[5] : "").utf8)
    if (try? InternalRequestSignature.verify(method: "POST", path: path, body: body, header: { headers[$0] }, key: fuzzKey,
                                             isOwnDestination: { _ in true }, now: Date(timeIntervalSince1970: 1_800_000_000))) != nil {
        // A forged signature would mean HMAC-SHA256 broke: report it as a crash.
        fatalError("accepted a signature built from fuzz input: \(headers)")
    }
    return 0
}
