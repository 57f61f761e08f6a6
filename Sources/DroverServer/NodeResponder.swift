import NIOCore
import NIOHTTP1

/// Routes requests to the node's own endpoints.
public struct NodeResponder: HTTPResponder {
    public init() {}

    public func respond(to request: HTTPRequest) async -> HTTPResponse {
        switch (request.head.method, request.path) {
        case (.GET, "/health-check"), (.HEAD, "/health-check"):
            return .text(.ok, "ok\n")
        default:
            return .text(.notFound, "not found\n")
        }
    }
}
