import DroverCluster
import Foundation
import Testing

/// The wire contract of the internal API: every call survives the trip through its request.
@Suite struct InternalCallTests {
    static let everyCall: [InternalCall] = [
        .ping, .suspendAll(by: nil), .suspendAll(by: "alice"), .reload, .offlineMode(.init(offline: true, by: "alice")), .move(.init(id: "abc", by: "alice")), .move(.init(id: "abc", to: 3, by: "bob")),
        .launch(.init(id: "0123456789abcdef"), isNew: true), .launch(.init(id: "0123456789abcdef"), isNew: false),
        .suspend(.init(id: "abc")), .quit(.init(id: "abc")),
        .notice(.nodeJoined(.init(id: 3, host: "node3.example.com", port: 8787))),
        .notice(.nodeLeft(.init(id: 3))), .notice(.nodeDeleted(.init(id: 4))),
        .notice(.nodeStatus(.init(id: 5, status: .offlineMode))), .notice(.sessionMoved(.init(id: "abc"))),
    ]

    @Test(arguments: everyCall)
    func aCallIsDecodedFromItsOwnRequest(call: InternalCall) throws {
        #expect(call.path.hasPrefix(NodeEndpoint.internalPrefix))
        #expect(try InternalCall(method: call.method, path: call.path, body: call.body) == call)
    }

    @Test func everyCallHasItsOwnPath() {
        #expect(Set(Self.everyCall.map(\.path)).count == Set(Self.everyCall.map(\.name)).count)
        #expect(Set(Self.everyCall.map(\.name)) == ["ping", "suspend-all", "reload", "launch", "suspend", "quit", "node-joined", "node-left",
                                                     "node-deleted", "node-status", "session-moved", "offline-mode", "move"])
    }

    @Test func theBodiesAreTheDocumentedJSON() {
        #expect(String(decoding: InternalCall.launch(.init(id: "abc"), isNew: true).body, as: UTF8.self) == #"{"id":"abc","new":true}"#)
        #expect(String(decoding: InternalCall.launch(.init(id: "abc"), isNew: false).body, as: UTF8.self) == #"{"id":"abc"}"#)
        #expect(String(decoding: InternalCall.notice(.nodeStatus(.init(id: 2, status: .online))).body, as: UTF8.self)
                == #"{"id":2,"status":"Online"}"#)
    }

    @Test func anUnknownCallOrABadBodyIsRefusedSayingWhat() {
        #expect(throws: InternalCall.Refusal.unknown(method: "POST", path: "/load-balancer/reboot")) {
            try InternalCall(method: .POST, path: "/load-balancer/reboot", body: [])
        }
        #expect(throws: InternalCall.Refusal.unknown(method: "GET", path: "/load-balancer/launch")) {
            try InternalCall(method: .GET, path: "/load-balancer/launch", body: [])
        }
        do {
            _ = try InternalCall(method: .POST, path: "/load-balancer/suspend", body: Array(#"{"session":"abc"}"#.utf8))
            Issue.record("a body without an id was accepted")
        } catch {
            #expect("\(error)".contains("suspend"))
            #expect("\(error)".contains("SessionCall"))
        }
        #expect(throws: InternalCall.Refusal.self) {
            try InternalCall(method: .POST, path: "/load-balancer/node-left", body: Array("not json".utf8))
        }
    }
}
