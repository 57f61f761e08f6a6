import DroverKernel
import DroverTesting
import Foundation
import Testing

let demoCommand = Executable.path("drover-demo-session")

/// Python for a test session: `serve(ServerClass, Handler)` serves on the listening Unix socket
/// droverd hands the session as `DROVER_SESSION_LISTEN_FD`.
let pythonServeOnListenFD = """
    import socket
    def serve(server_class, handler):
        server = server_class(("", 0), handler, bind_and_activate=False)
        server.socket.close()
        server.socket = socket.socket(fileno=int(os.environ["DROVER_SESSION_LISTEN_FD"]))
        server.serve_forever()
    """

/// What a signed-in browser carries.
struct Visitor: Sendable {
    var cookie: String
    var csrf: String
    var headers: [(String, String)] { [("Cookie", cookie), ("X-CSRF-Token", csrf)] }
}

/// Signs `user` in on `node` through PAM and fetches the CSRF token.
func signIn(_ node: ConfigDirectory, user: String, password: String = SystemUsers.password) async throws -> Visitor {
    let body = "username=\(user)&password=\(password)"
    let response = try await RawHTTPClient.request("POST", host: node.address, port: node.port, path: "/sign-in",
                                             headers: [("Content-Type", "application/x-www-form-urlencoded")], body: body)
    guard response.status == 303, let setCookie = response.header("Set-Cookie"), setCookie.hasPrefix("drover-auth="),
          !setCookie.hasPrefix("drover-auth=;") else {
        throw TestFailure("sign-in of \(user) refused: \(response.status) \(response.headers)")
    }
    let cookie = String(setCookie.split(separator: ";")[0])
    let me = try await RawHTTPClient.request(host: node.address, port: node.port, path: "/api/me", headers: [("Cookie", cookie)])
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

/// Runs `count` calls of `body` at once and returns their results in order.
func concurrently<T: Sendable>(_ count: Int, _ body: @escaping @Sendable (Int) async -> T) async -> [T] {
    await withTaskGroup(of: (Int, T).self) { group in
        for index in 0..<count { group.addTask { (index, await body(index)) } }
        var results: [Int: T] = [:]
        for await (index, value) in group { results[index] = value }
        return (0..<count).map { results[$0]! }
    }
}
