import DroverKernel
import DroverTesting
import Foundation
import Synchronization
import Testing

let demoCommand = Executable.path("drover-demo-session")

/// What a signed-in browser carries.
struct Visitor: Sendable {
    var cookie: String
    var csrf: String
    var headers: [(String, String)] { [("Cookie", cookie), ("X-CSRF-Token", csrf)] }
}

/// Signs `user` in on `node` through PAM and fetches the CSRF token.
func signIn(_ node: ConfigDirectory, user: String, password: String = SystemUsers.password) throws -> Visitor {
    let body = "username=\(user)&password=\(password)"
    let response = try RawHTTPClient.request("POST", host: node.address, port: node.port, path: "/sign-in",
                                             headers: [("Content-Type", "application/x-www-form-urlencoded")], body: body)
    guard response.status == 303, let setCookie = response.header("Set-Cookie"), setCookie.hasPrefix("drover-auth="),
          !setCookie.hasPrefix("drover-auth=;") else {
        throw TestFailure("sign-in of \(user) refused: \(response.status) \(response.headers)")
    }
    let cookie = String(setCookie.split(separator: ";")[0])
    let me = try RawHTTPClient.request(host: node.address, port: node.port, path: "/api/me", headers: [("Cookie", cookie)])
    guard let object = try JSONSerialization.jsonObject(with: Data(me.body.utf8)) as? [String: Any], let csrf = object["csrf"] as? String else {
        throw TestFailure("no CSRF token: \(me.body)")
    }
    return Visitor(cookie: cookie, csrf: csrf)
}

func json(_ response: RawHTTPClient.Response) -> [String: Any] {
    (try? JSONSerialization.jsonObject(with: Data(response.body.utf8))) as? [String: Any] ?? [:]
}

func count(_ response: RawHTTPClient.Response) -> Int? {
    json(response)["count"] as? Int
}

/// Starts `count` blocking calls at once on their own threads (not the cooperative pool).
func concurrently<T: Sendable>(_ count: Int, _ body: @escaping @Sendable (Int) -> T) async -> [T] {
    await withCheckedContinuation { continuation in
        let results = Mutex<[Int: T]>([:])
        let group = DispatchGroup()
        for index in 0..<count {
            group.enter()
            Thread {
                let value = body(index)
                results.withLock { $0[index] = value }
                group.leave()
            }.start()
        }
        group.notify(queue: .global()) {
            continuation.resume(returning: results.withLock { stored in (0..<count).map { stored[$0]! } })
        }
    }
}
