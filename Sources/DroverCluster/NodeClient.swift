public import DroverKernel
import Foundation
public import NIOCore
public import NIOHTTP1
public import NIOPosix
public import NIOSSL

/// Makes signed node-to-node calls over http or https, each bounded by the `timeout` setting.
public struct NodeClient: Sendable {
    /// What a peer answered.
    public struct Response: Sendable {
        public var status: Int
        public var body: [UInt8]
        public var text: String { String(decoding: body, as: UTF8.self) }
    }

    /// A peer call that failed: the peer is not available right now (503, retry).
    public enum Failure: CodedError, CustomStringConvertible {
        public var httpStatus: Int { 503 }
        public var retryAfterSeconds: Int? { 5 }

        case timedOut(String, seconds: Int, setting: String)
        case unreachable(String, reason: String)
        /// No connection was made, so the request was never sent: safe to try again.
        case notConnected(String, reason: String)
        case badResponse(String)

        public var description: String {
            switch self {
            case .timedOut(let peer, let seconds, let setting): "\(peer) did not answer within \(seconds) s (\(setting))"
            case .unreachable(let peer, let reason), .notConnected(let peer, let reason): "cannot reach \(peer) (\(reason))"
            case .badResponse(let peer): "\(peer) sent a malformed response"
            }
        }
    }

    let key: SecureCookieKey
    let clusterProtocol: ClusterProtocol
    /// Seconds to wait for a peer; 0 means no limit of ours (the system's own).
    private(set) var timeoutSeconds: Int
    let tls: NIOSSLContext?

    /// - Parameters:
    ///   - protocol: `http`, `https` (certificates verified) or `https-no-verify`.
    ///   - timeoutSeconds: `timeout` from `load-balancer`; 0 leaves it to the system.
    ///   - caFile: `ssl-ca-file`, trusted besides the system's store.
    public init(key: SecureCookieKey, protocol clusterProtocol: ClusterProtocol, timeoutSeconds: Int, caFile: String? = nil) throws {
        self.key = key
        self.clusterProtocol = clusterProtocol
        self.timeoutSeconds = timeoutSeconds
        tls = try Self.tlsContext(for: clusterProtocol, caFile: caFile)
    }

    /// Seconds a connection to a peer may take: `timeout`, or the system's usual 75 s for 0.
    public static func connectSeconds(timeout: Int) -> Int64 { Int64(timeout > 0 ? timeout : 75) }

    /// The name a peer's certificate must carry (and the SNI sent): its host name, or nil for
    /// a node known only by its address (its certificate is then checked against the address).
    public static func tlsName(forHost host: String) -> String? {
        NodeAddressResolver.isIPv4(host) ? nil : host
    }

    /// ``tlsName(forHost:)`` of a node's row.
    public static func tlsName(of node: NodeRecord) -> String? { tlsName(forHost: node.host) }

    /// The same client, waiting at most `seconds` for each call (its TLS context is shared).
    public func withTimeout(_ seconds: Int) -> NodeClient {
        var bounded = self
        bounded.timeoutSeconds = seconds
        return bounded
    }

    /// The client TLS context for talking to peers: none for http, verified for https (against
    /// the system's trust store and `caFile`), unverified for https-no-verify; TLS 1.2 or later.
    public static func tlsContext(for clusterProtocol: ClusterProtocol, caFile: String? = nil) throws -> NIOSSLContext? {
        switch clusterProtocol {
        case .http:
            return nil
        case .https, .httpsNoVerify:
            var configuration = TLSConfiguration.makeClientConfiguration()
            configuration.minimumTLSVersion = .tlsv12
            if clusterProtocol == .httpsNoVerify { configuration.certificateVerification = .none }
            if let caFile { configuration.additionalTrustRoots = [.file(caFile)] }
            return try NIOSSLContext(configuration: configuration)
        }
    }

    /// Sends a signed request to `host:port` and collects the whole (bounded) answer.
    ///
    /// Connecting is bounded by `timeout`; so is the answer, unless the call names a longer
    /// bound of its own (a forwarded session start may take as long as a local one). Both
    /// bounds are kept by timers on the connection's event loop, not by tasks, so a busy
    /// cooperative thread pool cannot make them late.
    /// - Parameters:
    ///   - answerWithin: seconds the peer may take to answer once connected, and what that
    ///     bound is called in the error; nil means `timeout`.
    ///   - name: the host name the peer's certificate must carry (sent as SNI); nil: `host`
    ///     when it is a name, else the address is checked.
    public func send(_ method: HTTPMethod, _ path: String, body: [UInt8] = [], to host: String, port: Int, name: String? = nil,
                     answerWithin: AnswerBound? = nil) async throws -> Response {
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: "\(name ?? host):\(port)")
        headers.add(name: "Content-Type", value: "application/json")
        headers.add(name: "Content-Length", value: String(body.count))
        headers.add(name: "Connection", value: "close")
        for (name, value) in InternalRequestSignature.headers(method: method.rawValue, path: path, body: body,
                                                              destination: NodeRuntime.destination(host: host, port: port), key: key) {
            headers.add(name: name, value: value)
        }
        let head = HTTPRequestHead(version: .http1_1, method: method, uri: path, headers: headers)
        let bound = answerWithin ?? AnswerBound(seconds: timeoutSeconds, setting: "timeout in load-balancer")
        return try await exchange(head, body: body, host: host, port: port, name: name ?? Self.tlsName(forHost: host),
                                  answerBound: bound)
    }

    /// How long a peer may take to answer a call, and the setting that says so.
    public struct AnswerBound: Sendable {
        /// Seconds; 0 means no limit of ours.
        public var seconds: Int
        /// Named in the error, e.g. `timeout in load-balancer`.
        public var setting: String

        public init(seconds: Int, setting: String) {
            self.seconds = seconds
            self.setting = setting
        }
    }

    private func exchange(_ head: HTTPRequestHead, body: [UInt8], host: String, port: Int, name: String?,
                          answerBound: AnswerBound) async throws -> Response {
        let peer = name.map { "\($0) (\(host)):\(port)" } ?? "\(host):\(port)"
        let tls = self.tls
        let collector = NIOLoopBoundBox<ResponseCollector?>.makeEmptyBox(eventLoop: MultiThreadedEventLoopGroup.singleton.any())
        let channel: any Channel
        do {
            let bootstrap = ClientBootstrap(group: collector.eventLoop)
                .connectTimeout(.seconds(Self.connectSeconds(timeout: timeoutSeconds)))
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        if let tls {
                            let handler = try NIOSSLClientHandler(context: tls, serverHostname: name)
                            try channel.pipeline.syncOperations.addHandler(handler)
                        }
                        try channel.pipeline.syncOperations.addHTTPClientHandlers()
                        let handler = ResponseCollector(promise: channel.eventLoop.makePromise())
                        collector.value = handler
                        try channel.pipeline.syncOperations.addHandler(handler)
                    }
                }
            channel = try await bootstrap.connect(peer: host, port: port).get()
        } catch {
            throw Failure.notConnected(peer, reason: "\(error)")
        }
        let done: EventLoopFuture<Response> = channel.eventLoop.flatSubmit {
            guard let handler = collector.value else { return channel.eventLoop.makeFailedFuture(Failure.badResponse(peer)) }
            if answerBound.seconds > 0 {
                let promise = handler.promise
                let timer = channel.eventLoop.scheduleTask(in: .seconds(Int64(answerBound.seconds))) {
                    promise.fail(Failure.timedOut(peer, seconds: answerBound.seconds, setting: answerBound.setting))
                    channel.close(promise: nil)
                }
                promise.futureResult.whenComplete { _ in timer.cancel() }
            }
            channel.write(HTTPClientRequestPart.head(head), promise: nil)
            if !body.isEmpty { channel.write(HTTPClientRequestPart.body(.byteBuffer(ByteBuffer(bytes: body))), promise: nil) }
            channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
            return handler.promise.futureResult
        }
        return try await withTaskCancellationHandler {
            do {
                let response = try await done.get()
                channel.close(promise: nil)
                return response
            } catch {
                channel.close(promise: nil)
                if error is Failure { throw error }
                throw Failure.unreachable(peer, reason: "\(error)")
            }
        } onCancel: {
            channel.close(promise: nil)
        }
    }
}

/// Gathers one response; fails on a closed connection or a body over 4 MiB.
private final class ResponseCollector: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart
    let promise: EventLoopPromise<NodeClient.Response>
    private var status = 0
    private var body: [UInt8] = []

    init(promise: EventLoopPromise<NodeClient.Response>) {
        self.promise = promise
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            status = Int(head.status.code)
        case .body(let buffer):
            if body.count + buffer.readableBytes > 4 << 20 {
                promise.fail(NodeClient.Failure.badResponse("\(context.remoteAddress.map { "\($0)" } ?? "peer")"))
                context.close(promise: nil)
                return
            }
            body += buffer.readableBytesView
        case .end:
            promise.succeed(NodeClient.Response(status: status, body: body))
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise.fail(NodeClient.Failure.badResponse("connection closed before the response ended"))
    }

    /// A connection that failed before it became active never reports inactive; the promise
    /// must still be completed.
    func handlerRemoved(context: ChannelHandlerContext) {
        promise.fail(NodeClient.Failure.badResponse("connection closed before the response ended"))
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        promise.fail(error)
        context.close(promise: nil)
    }
}

extension ClientBootstrap {
    /// Connects to a node (or a session on one) at `host`: an IPv4 address, the usual case,
    /// directly; a name through NIO's resolver (getaddrinfo on a dispatch queue per event loop,
    /// where a burst of calls queues up behind each other).
    public func connect(peer host: String, port: Int) -> EventLoopFuture<any Channel> {
        if let address = try? SocketAddress(ipAddress: host, port: port) { return connect(to: address) }
        return connect(host: host, port: port)
    }
}
