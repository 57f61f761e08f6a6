public import DroverKernel
import Foundation

/// A node-to-node call paired with the answer it gets (postgres-nio pairs its frontend and
/// backend messages so): the client sends ``call`` and decodes the answer in one place,
/// ``NodeClient/call(_:on:answerWithin:)``; any other status is a ``PeerRefusal``. The server
/// answers each ``InternalCall`` with exactly this type (`NodeResponder.answer`).
public struct TypedCall<Answer: Sendable>: Sendable {
    public let call: InternalCall
    /// The status a success has (200 with a body, 204 without).
    let success: Int
    let decode: @Sendable ([UInt8]) throws -> Answer

    /// The answer in `response`, or the peer's refusal.
    func answer(_ response: NodeClient.Response) throws -> Answer {
        guard response.status == success else {
            throw PeerRefusal(call: call.name, status: response.status, message: response.text.trimmingCharacters(in: .whitespacesAndNewlines))
        }
        do {
            return try decode(response.body)
        } catch {
            throw NodeClient.Failure.badResponse("the answer to \(call.name) (not the \(Answer.self) expected)")
        }
    }
}

/// The answer of a call that answers nothing (204).
public struct NoContent: Sendable, Equatable {
    public init() {}
}

/// `reload`'s answer: the settings now in force, as one line.
public struct ReloadAnswer: Sendable, Equatable {
    public var settings: String
}

/// A call a peer answered with another status than its success: the status and the peer's
/// one-line reason. For the session operations, the status is that of the ``SessionError`` the
/// peer threw (``sessionError(node:)`` gives it back).
public struct PeerRefusal: CodedError, Equatable, CustomStringConvertible {
    public var call: String
    public var status: Int
    public var message: String

    public var httpStatus: Int { status }
    public var retryAfterSeconds: Int? { nil }
    public var description: String { "answered \(status) to \(call)" + (message.isEmpty ? "" : ": \(message)") }

    /// The peer does not know the call: a node of an older release, within the protocol window
    /// during a rolling upgrade, answers a call added after its release so (404, "no internal
    /// call …", ``InternalCall/Refusal``). A caller of a new call handles it as "not yet".
    public var isUnknownCall: Bool { status == 404 && message.hasPrefix(InternalCall.Refusal.unknownPrefix) }

    /// The session error a peer's refusal of a session operation stands for, naming `node`.
    public func sessionError(node: String) -> SessionError {
        let said = "\(node): \(message)"
        switch status {
        case 429: return .busy(said)
        case 421: return .stopping(said)
        case 503: return .unavailable(said)
        case 409: return .moved(said)
        default: return .launchFailed(said)
        }
    }
}

extension TypedCall where Answer == NoContent {
    init(_ call: InternalCall) {
        self.init(call: call, success: 204) { _ in NoContent() }
    }

    public static func suspend(_ id: String) -> Self { Self(.suspend(.init(id: id))) }
    public static func quit(_ id: String) -> Self { Self(.quit(.init(id: id))) }
    public static func offlineMode(_ call: InternalCall.OfflineModeCall) -> Self { Self(.offlineMode(call)) }
    public static func notice(_ notice: PeerNotice) -> Self { Self(.notice(notice)) }
}

extension TypedCall where Answer: Decodable {
    /// 200 with the answer as JSON.
    init(json call: InternalCall) {
        self.init(call: call, success: 200) { try JSONDecoder().decode(Answer.self, from: Data($0)) }
    }
}

extension TypedCall where Answer == SessionDescription {
    /// The session as it runs now on the receiving node.
    public static func launch(_ id: String, isNew: Bool) -> Self { Self(json: .launch(.init(id: id), isNew: isNew)) }
    /// The session as it runs now, wherever it was moved.
    public static func move(_ call: InternalCall.MoveCall) -> Self { Self(json: .move(call)) }
}

extension TypedCall where Answer == InternalCall.SuspendAllAnswer {
    public static func suspendAll(by: String?) -> Self { Self(json: .suspendAll(by: by)) }
}

extension TypedCall where Answer == [SessionResourceReport] {
    public static var resources: Self { Self(json: .resources) }
}

extension TypedCall where Answer == ReloadAnswer {
    /// 200 with the settings in force; 409 with why the file was refused (a ``PeerRefusal``).
    public static var reload: Self {
        Self(call: .reload, success: 200) { ReloadAnswer(settings: String(decoding: $0, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)) }
    }
}

#if DROVER_TEST_NEXT_RELEASE
extension TypedCall where Answer == InternalCall.BuildAnswer {
    public static var build: Self { Self(json: .build) }
}
#endif

extension TypedCall where Answer == String {
    /// `pong`.
    public static var ping: Self { Self(call: .ping, success: 200) { String(decoding: $0, as: UTF8.self) } }
}

/// A session as the user API lists it and as `launch` and `move` answer: every field present,
/// `null` when absent.
public struct SessionDescription: Codable, Sendable, Equatable {
    public var id: String
    public var state: String
    public var node: Int64?
    public var label: String?
    public var kind: String
    public var created: String
    /// Why it was stopped and waits to be started again (it went over its memory limit).
    public var held: String?

    public init(_ session: SessionRecord) {
        id = session.id
        state = session.ownership.state.rawValue
        node = session.ownership.node
        label = session.label
        kind = session.kind
        created = session.createdAt.formatted(.iso8601)
        held = session.hold
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(id, forKey: .id)
        try container.encode(state, forKey: .state)
        try container.encode(node, forKey: .node)
        try container.encode(label, forKey: .label)
        try container.encode(kind, forKey: .kind)
        try container.encode(created, forKey: .created)
        try container.encode(held, forKey: .held)
    }

    enum CodingKeys: String, CodingKey { case id, state, node, label, kind, created, held }
}
