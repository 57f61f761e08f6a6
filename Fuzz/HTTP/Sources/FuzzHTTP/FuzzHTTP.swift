import DroverCluster
import DroverKernel
import DroverPlugins
import DroverServer
import DroverTesting
import Foundation
import Logging
import Synchronization

// libFuzzer target: arbitrary bytes sent over a real TCP connection to a node's own HTTP server,
// built by the same `HTTPServer.node` as droverd's (the client request framer, the routing handler,
// the node's endpoints, the user API with auth-none, and the session proxy's resolver, with the
// edge's limits scaled down: header and keep-alive timeouts, the connection cap, allowed origins) on an in-memory
// registry and lock table, with no session command. Any crash, sanitizer report, or the server
// no longer answering its health check is a finding.

/// One node, started on first use and kept for the whole run.
final class FuzzNode: Sendable {
    let port: Int
    let server: HTTPServer

    init() throws {
        let directory = NSTemporaryDirectory() + "drover-fuzz-http-\(getpid())"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        port = try FreePort.find()
        try """
            www-address=127.0.0.1
            www-port=\(port)
            server-data-dir=\(directory)/data
            server-shared-storage-path=\(directory)/shared
            auth-none=1
            www-header-timeout=2
            www-keep-alive-timeout=5
            www-max-connections=64
            www-allowed-origins=https://app.example

            """.write(toFile: directory + "/rserver.conf", atomically: true, encoding: .utf8)
        let logger = {
            var logger = Logger(label: "fuzz-http")
            logger.logLevel = .critical
            return logger
        }()
        let setup = try NodeSetup(configDirectory: directory, catalog: .builtin, createKeyIfMissing: true, logger: logger)
        let port = self.port
        server = try blocking {
            let address = NodeAddress(host: "127.0.0.1", ipv4: "127.0.0.1", port: port, source: .wwwAddress)
            let runtime = try NodeRuntime(setup: setup, store: InMemoryRegistryStore(), address: address, logger: logger)
            let membership = ClusterMembership(runtime: runtime)
            _ = try await membership.join()
            let sessions = SessionManager(runtime: runtime)
            let server = try await HTTPServer.node(membership: membership, sessions: sessions, logger: logger)
            // Serving starts with run(), as in droverd; it serves until the process ends.
            Task { try? await server.run() }
            return server
        }
    }

    static let shared: FuzzNode = {
        do { return try FuzzNode() } catch { fatalError("cannot start the node under test: \(error)") }
    }()
}

/// Runs async work from libFuzzer's (non-Swift-concurrency) thread.
func blocking<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) throws -> T {
    let result = Mutex<Result<T, any Error>?>(nil)
    let done = DispatchSemaphore(value: 0)
    Task {
        let outcome: Result<T, any Error>
        do { outcome = .success(try await body()) } catch { outcome = .failure(error) }
        result.withLock { $0 = outcome }
        done.signal()
    }
    done.wait()
    return try result.withLock { $0! }.get()
}

/// Sends `bytes`, closes the sending side, and reads until the server closes; returns what
/// came back, or nil if the server kept the connection open for `timeout` seconds.
func exchange(_ bytes: UnsafeRawBufferPointer, port: Int, timeout: Int = 5) -> [UInt8]? {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    precondition(fd >= 0, "socket: \(String(cString: strerror(errno)))")
    defer { close(fd) }
    var tv = timeval(tv_sec: timeout, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    address.sin_addr.s_addr = in_addr_t(0x7f00_0001).bigEndian
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    precondition(connected == 0, "the server refused a connection: \(String(cString: strerror(errno)))")
    var offset = 0
    while offset < bytes.count {
        let sent = send(fd, bytes.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL))
        if sent <= 0 { break }  // the server may close early on a malformed request
        offset += sent
    }
    shutdown(fd, Int32(SHUT_WR))
    var answer: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let count = recv(fd, &buffer, buffer.count, 0)
        if count == 0 { return answer }
        if count < 0 { return errno == EAGAIN || errno == EWOULDBLOCK ? nil : answer }
        answer += buffer[0..<count]
    }
}

let inputs = Atomic<Int>(0)

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzHTTP(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let node = FuzzNode.shared
    _ = exchange(UnsafeRawBufferPointer(start: data, count: size), port: node.port)
    // Every so often, and after the very first input: the node still serves.
    if inputs.add(1, ordering: .relaxed).newValue % 64 == 1 {
        let probe = Array("GET /health-check HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".utf8)
        let answer = probe.withUnsafeBytes { exchange($0, port: node.port) }
        guard let answer, String(decoding: answer, as: UTF8.self).hasPrefix("HTTP/1.1 200") else {
            fatalError("the node stopped answering its health check after \(inputs.load(ordering: .relaxed)) inputs")
        }
    }
    return 0
}
