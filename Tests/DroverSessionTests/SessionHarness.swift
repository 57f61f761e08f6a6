import DroverKernel
import DroverTesting
import Foundation
import Synchronization
import Testing

/// The demo session program, where the tests' accounts can execute it.
let demoCommand = Executable.pathForUsers("drover-demo-session")

/// The Unix-socket server class the tests' Python session programs share (the program imports
/// `socketserver`): a thread per connection, and an address `http.server` can print.
let pythonUnixServerClass = #"""
class UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    def get_request(self):
        request, _ = self.socket.accept()
        return request, ("local", 0)
"""#

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
    // `__Host-drover-auth` where cookies are secure (`www-secure-cookies`, https).
    let setCookie = response.header("Set-Cookie").map { $0.hasPrefix("__Host-") ? String($0.dropFirst(7)) : $0 }
    guard response.status == 303, let setCookie, setCookie.hasPrefix("drover-auth="), !setCookie.hasPrefix("drover-auth=;") else {
        throw TestFailure("sign-in of \(user) refused: \(response.status) \(response.headers)")
    }
    let cookie = String(try #require(response.header("Set-Cookie")).split(separator: ";")[0])
    let me = try await RawHTTPClient.request(host: node.address, port: node.port, path: "/api/me", headers: [("Cookie", cookie)])
    guard let object = try JSONSerialization.jsonObject(with: Data(me.body.utf8)) as? [String: Any], let csrf = object["csrf"] as? String else {
        throw TestFailure("no CSRF token: \(me.body)")
    }
    return Visitor(cookie: cookie, csrf: csrf)
}

func json(_ response: RawHTTPClient.Response) -> [String: Any] {
    (try? JSONSerialization.jsonObject(with: Data(response.body.utf8))) as? [String: Any] ?? [:]
}

/// The sessions as node `node`'s user API lists them: id → (state, node).
func listedSessions(_ node: ConfigDirectory) async throws -> [String: (state: String, node: Int64?)] {
    let answer = try await RawHTTPClient.request(host: node.address, port: node.port, path: "/api/sessions")
    let rows = try #require(try JSONSerialization.jsonObject(with: Data(answer.body.utf8)) as? [[String: Any]], "\(answer.body)")
    return Dictionary(uniqueKeysWithValues: rows.map { ($0["id"] as? String ?? "", ($0["state"] as? String ?? "", ($0["node"] as? NSNumber)?.int64Value)) })
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

/// Starts `count` sessions through node 0 (from the cluster's client namespace, if any) and
/// returns them with their owner's index.
func startSessions(_ cluster: TestCluster, count: Int) async throws -> [(id: String, owner: Int)] {
    let ids = try await cluster.statuses().reduce(into: [Int64: Int]()) { map, row in
        map[row.id] = cluster.nodes.firstIndex { $0.address == row.host }
    }
    var sessions: [(String, Int)] = []
    let node = cluster.nodes[0]
    for _ in 0..<count {
        let created = try await RawHTTPClient.request("POST", host: node.address, port: node.port, path: "/api/sessions", timeout: 60,
                                                      networkNamespace: cluster.clientNamespace)
        #expect(created.status == 201, "\(created.body)")
        let object = json(created)
        let id = try #require(object["id"] as? String)
        let owner = try #require((object["node"] as? NSNumber).flatMap { ids[$0.int64Value] })
        sessions.append((id, owner))
    }
    return sessions
}

/// Samples /proc every 100 ms and remembers every session id of `ids` seen with two main
/// processes (other tests' sessions run on this machine too).
final class DoubleWatcher: Sendable {
    let ids: Set<String>
    let doubles = Mutex<Set<String>>([])
    let task = Mutex<Task<Void, Never>?>(nil)

    init(_ ids: [String]) {
        self.ids = Set(ids)
    }

    func start() {
        task.withLock {
            $0 = Task { [self] in
                while !Task.isCancelled {
                    let running = SystemUsers.runningSessions().map(\.id).filter { self.ids.contains($0) }
                    let twice = Dictionary(grouping: running, by: { $0 }).filter { $0.value.count > 1 }.keys
                    if !twice.isEmpty { self.doubles.withLock { $0.formUnion(twice) } }
                    try? await Task.sleep(for: .milliseconds(100))
                }
            }
        }
    }

    func stop() -> Set<String> {
        task.withLock { $0?.cancel() }
        return doubles.withLock { $0 }
    }
}
