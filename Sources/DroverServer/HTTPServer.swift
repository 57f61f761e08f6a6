public import Logging
public import NIOCore
import NIOHTTP1
import NIOPosix
public import ServiceLifecycle

/// The node's HTTP server: a ``Service`` that binds `www-address:www-port` and serves until
/// graceful shutdown.
public struct HTTPServer: Service {
    public let host: String
    public let port: Int
    let responder: any HTTPResponder
    let logger: Logger
    let onBound: @Sendable (SocketAddress) -> Void

    /// - Parameters:
    ///   - host: `www-address`.
    ///   - port: `www-port`.
    ///   - onBound: called once the socket is listening, with its address.
    public init(host: String, port: Int, responder: any HTTPResponder, logger: Logger,
                onBound: @escaping @Sendable (SocketAddress) -> Void = { _ in }) {
        self.host = host
        self.port = port
        self.responder = responder
        self.logger = logger
        self.onBound = onBound
    }

    /// Binds the listening socket, failing with a clear error when the address is taken.
    public func bind() async throws -> any Channel {
        let responder = self.responder
        let logger = self.logger
        do {
            return try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .serverChannelOption(.backlog, value: 512)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                        try channel.pipeline.syncOperations.addHandler(HTTPServerHandler(responder: responder, logger: logger))
                    }
                }
                .bind(host: host, port: port).get()
        } catch {
            throw HTTPServerError.cannotBind(host: host, port: port, reason: "\(error)")
        }
    }

    public func run() async throws {
        let channel = try await bind()
        if let address = channel.localAddress { onBound(address) }
        logger.info("listening", metadata: ["address": "\(host):\(port)"])
        try await withGracefulShutdownHandler {
            try await channel.closeFuture.get()
        } onGracefulShutdown: {
            channel.close(promise: nil)
        }
    }
}

/// The server could not start.
public enum HTTPServerError: Error, CustomStringConvertible {
    case cannotBind(host: String, port: Int, reason: String)

    public var description: String {
        switch self {
        case .cannotBind(let host, let port, let reason):
            "cannot listen on \(host):\(port) (\(reason)); free the port or change www-address/www-port in rserver.conf"
        }
    }
}
