#if os(Linux)
import CShims
import DroverCluster
import Foundation
import Glibc
import Logging
import NIOCore
import NIOHTTP1
import Synchronization

// SPIKE (issue 39, step 2): a data path for plaintext keep-alive `/s/<id>/` traffic outside NIO's
// channel pipeline, measured against the gate (instructions a request, kernel time) and
// then kept or removed. Not a product path: it serves what the benchmark sends and refuses the
// rest.
//
// - One epoll loop per thread, each with its own `SO_REUSEPORT` listener on the spike's port.
// - Connections are structs in a slab (an array indexed by the epoll token), no class per
//   connection, no channel, no handler, no promise.
// - The client's bytes are read into one buffer per connection and framed by the same
//   `ClientRequestFramer` as NIO's path; the session's answers by the same
//   `UpstreamResponseFramer`; what to do next by the same `ProxyConnectionStateMachine`; where a
//   request goes by the node's `ProxyResolver` (its cached decision: every check it makes).
// - One `read` a side a request, and the answer's pieces go out in one `writev`.
//
// - A decision not in the resolver's cache is made on a task (the slow path, as NIO's path makes
//   it) and handed back to the loop through an eventfd.
//
// Left out (what landing it would need): the node's own endpoints, TLS, the header, body and keep-alive deadlines, the
// response timer, tunnels (WebSockets), hops to other nodes, `loopbackPort` endpoints, the
// connection caps and trusted proxies.

/// Starts the spike's loops on `host:port` (`DROVER_SPIKE_RAW_PORT=<port>` in droverd's
/// environment; the host is the node's `www-address`, an IPv4 address).
enum RawDataPath {
    static func start(host: String, port: Int, loops: Int, proxy: any ProxyResolver, responseTimeout: TimeAmount, logger: Logger) {
        for index in 0..<loops {
            let listener = listen(host: host, port: port)
            guard listener >= 0 else {
                logger.error("the raw data path spike cannot listen", metadata: ["port": "\(port)", "errno": "\(errno)"])
                return
            }
            let thread = Thread {
                let loop = RawLoop(listener: listener, proxy: proxy, responseTimeout: responseTimeout)
                loop.run()
            }
            thread.name = "drover-raw-\(index)"
            thread.start()
        }
        logger.notice("the raw data path spike listens", metadata: ["port": "\(port)", "loops": "\(loops)"])
    }

    private static func listen(host: String, port: Int) -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr(host)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, Glibc.listen(fd, 1024) == 0 else {
            close(fd)
            return -1
        }
        return fd
    }
}

/// One connection of the spike: its two descriptors and everything read or due on them.
struct RawConnection {
    let slot: Int
    /// Which connection this is, for a decision that comes back after it may have gone.
    let serial: UInt64
    var client: Int32
    var peer: String
    var upstream: Int32 = -1
    var input = ByteBuffer()
    var framer = ClientRequestFramer()
    var responseFramer = UpstreamResponseFramer()
    var machine: ProxyConnectionStateMachine
    var requestFraming = RequestBodyFraming.asItIs
    /// What is due to the client, written at the end of each event.
    var clientOut: [ByteBuffer] = []
    var upstreamOut: [ByteBuffer] = []
    var closing = false
}

/// Decisions made off the loop (the resolver's slow path), handed back to it.
final class RawInbox: Sendable {
    struct Decided: Sendable {
        let slot: Int
        let serial: UInt64
        let head: HTTPRequestHead
        let decision: ProxyDecision
    }

    let wake = eventfd(0, Int32(EFD_NONBLOCK) | Int32(EFD_CLOEXEC))
    private let decided = Mutex<[Decided]>([])

    func post(_ item: Decided) {
        decided.withLock { $0.append(item) }
        var one: UInt64 = 1
        _ = Glibc.write(wake, &one, 8)
    }

    func take() -> [Decided] {
        var count: UInt64 = 0
        _ = Glibc.read(wake, &count, 8)
        return decided.withLock { items in
            defer { items.removeAll() }
            return items
        }
    }
}

/// One epoll loop and its connections; only its own thread touches it. A connection is taken
/// out of the slab while an event is handled and put back after, so that the handling works on
/// one `inout` struct (no copy, no overlapping access to the slab).
final class RawLoop {
    private let epoll: Int32
    private let listener: Int32
    private let proxy: any ProxyResolver
    private let responseTimeout: TimeAmount
    private var slab: [RawConnection?] = []
    private var free: [Int] = []
    private var serials: UInt64 = 0
    private let inbox = RawInbox()

    /// Epoll tokens: the listener is 0, the inbox 1; connection `n`'s client is `2n + 2`, its upstream `2n + 3`.
    init(listener: Int32, proxy: any ProxyResolver, responseTimeout: TimeAmount) {
        self.listener = listener
        self.proxy = proxy
        self.responseTimeout = responseTimeout
        epoll = epoll_create1(Int32(EPOLL_CLOEXEC))
        watch(listener, token: 0)
        watch(inbox.wake, token: 1)
    }

    private func watch(_ fd: Int32, token: UInt64) {
        var event = epoll_event()
        event.events = EPOLLIN.rawValue | EPOLLRDHUP.rawValue | EPOLLET.rawValue
        event.data.u64 = token
        epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &event)
    }

    func run() {
        var events = [epoll_event](repeating: epoll_event(), count: 256)
        while true {
            let count = events.withUnsafeMutableBufferPointer { epoll_wait(epoll, $0.baseAddress, 256, -1) }
            guard count > 0 else { continue }
            for index in 0..<Int(count) {
                let token = events[index].data.u64
                if token == 0 {
                    accept()
                } else if token == 1 {
                    for item in inbox.take() {
                        handle(item.slot, serial: item.serial) { this, connection in this.apply(&connection, item.decision, head: item.head) }
                    }
                } else {
                    let upstream = token & 1 == 1
                    handle(Int(token / 2) - 1, serial: nil) { this, connection in
                        if upstream { this.upstreamReadable(&connection) } else { this.clientReadable(&connection) }
                    }
                }
            }
        }
    }

    /// Takes connection `slot` out of the slab (when it is still connection `serial`), lets `body`
    /// work on it, writes what is due, and puts it back or closes it.
    private func handle(_ slot: Int, serial: UInt64?, _ body: (RawLoop, inout RawConnection) -> Void) {
        guard slot < slab.count, var connection = slab[slot].take() else { return }
        guard serial == nil || connection.serial == serial else {
            slab[slot] = connection
            return
        }
        body(self, &connection)
        // Bytes already read may hold the rest of a request the machine was not ready for
        // (its destination was being decided): no new read will announce them.
        frame(&connection)
        flush(&connection)
        if connection.closing {
            if connection.upstream >= 0 { close(connection.upstream) }
            close(connection.client)
            free.append(slot)
        } else {
            slab[slot] = connection
        }
    }

    private func accept() {
        while true {
            var address = sockaddr_in()
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            let fd = withUnsafeMutablePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.accept(listener, $0, &length) }
            }
            guard fd >= 0 else { return }
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            var one: Int32 = 1
            setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            var text = [CChar](repeating: 0, count: Int(INET_ADDRSTRLEN))
            inet_ntop(AF_INET, &address.sin_addr, &text, socklen_t(INET_ADDRSTRLEN))
            let slot = free.popLast() ?? slab.count
            serials += 1
            let connection = RawConnection(slot: slot, serial: serials, client: fd, peer: String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self),
                                           machine: ProxyConnectionStateMachine(responseTimeout: responseTimeout))
            if slot == slab.count { slab.append(connection) } else { slab[slot] = connection }
            watch(fd, token: UInt64(slot + 1) * 2)
        }
    }

    // MARK: reading

    /// Reads what `fd` has into `buffer`: whether the peer is still there, and whether anything came.
    private static func read(_ fd: Int32, into buffer: inout ByteBuffer) -> (open: Bool, got: Bool) {
        var got = false
        while true {
            var count = 0
            buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: 16 * 1024) { room in
                count = Glibc.read(fd, room.baseAddress, room.count)
                return max(count, 0)
            }
            if count > 0 {
                got = true
                if buffer.writableBytes > 0 { return (true, got) }  // less than there was room for: drained
                continue
            }
            if count == 0 { return (false, got) }
            return (errno == EAGAIN || errno == EINTR, got)
        }
    }

    private func clientReadable(_ connection: inout RawConnection) {
        if connection.input.readableBytes == 0 { connection.input.clear() }
        let (open, _) = Self.read(connection.client, into: &connection.input)
        frame(&connection)
        if !open {
            run(&connection, connection.machine.clientClosed())
            connection.closing = true
        }
    }

    /// Frames and handles the client's requests while the machine takes them.
    private func frame(_ connection: inout RawConnection) {
        while !connection.closing, connection.machine.wantsReads {
            let part: HTTPServerRequestPart?
            do {
                part = try connection.framer.next(&connection.input)
            } catch {
                connection.clientOut.append(ByteBuffer(staticString: RoutingServerHandler.badRequest))
                connection.closing = true
                return
            }
            guard let part else { return }
            handle(&connection, part)
        }
    }

    private func handle(_ connection: inout RawConnection, _ part: HTTPServerRequestPart) {
        switch part {
        case .head(let head): run(&connection, connection.machine.requestHead(head, proxied: head.uri.hasPrefix("/s/")))
        case .body(let chunk): run(&connection, connection.machine.requestBody(chunk))
        case .end(let trailers): run(&connection, connection.machine.requestEnd(trailers))
        }
    }

    private func upstreamReadable(_ connection: inout RawConnection) {
        guard connection.upstream >= 0 else { return }
        let upstream = connection.upstream
        var input = ByteBuffer()
        let (open, got) = Self.read(upstream, into: &input)
        if got {
            connection.responseFramer.receive(input)
            do {
                while connection.upstream == upstream, let event = try connection.responseFramer.next() {
                    switch event {
                    case .head(let head): run(&connection, connection.machine.upstreamHead(head))
                    case .body(let chunk): run(&connection, connection.machine.upstreamBody(chunk))
                    case .end:
                        if !connection.responseFramer.reusable {
                            // The session said it closes: forgotten now, so that the next request connects anew.
                            closeUpstream(&connection)
                            connection.machine.upstreamRetired()
                        }
                        run(&connection, connection.machine.upstreamEnd())
                    }
                }
            } catch {
                closeUpstream(&connection)
                run(&connection, connection.machine.upstreamMalformed(error))
            }
        }
        if !open, connection.upstream == upstream {
            if case .end = connection.responseFramer.connectionClosed() { run(&connection, connection.machine.upstreamEnd()) }
            closeUpstream(&connection)
            run(&connection, connection.machine.upstreamClosed())
        }
    }

    // MARK: the machine's actions

    private func run(_ connection: inout RawConnection, _ action: ProxyConnectionStateMachine.Action) {
        switch action {
        case .none, .closeNewUpstream, .scheduleTimer:
            break
        case .resolve(let head), .resolveAgain(let head, _):
            resolve(&connection, head)
        case .respondLocally:
            run(&connection, connection.machine.localResponse(.text(.serviceUnavailable, "503: the raw data path spike serves session traffic only\n")))
        case .respond(let response), .reportUpstreamFailure(let response), .abandonUpstream(let response):
            if case .abandonUpstream = action { closeUpstream(&connection) }
            connection.clientOut.append(response.head.serialized(body: response.body))
            carryOut(&connection, response.next)
        case .connect(let target, _, let closingCurrent):
            if closingCurrent { closeUpstream(&connection) }
            connect(&connection, to: target)
        case .send(let head, let parts, _):
            send(&connection, head, parts: parts)
        case .forwardBody(let chunk):
            connection.upstreamOut.append(connection.requestFraming.body(chunk))
        case .forwardEnd(let trailers, let next):
            if let end = connection.requestFraming.end(trailers) { connection.upstreamOut.append(end) }
            if let next { carryOut(&connection, next) }
        case .writeHead(let bytes, _), .writeBytes(let bytes):
            connection.clientOut.append(bytes)
        case .writeEnd(let next), .finish(let next):
            carryOut(&connection, next)
        case .writeEndThenOpenTunnel, .acceptSplice, .openTunnel, .close:
            connection.closing = true  // no tunnels in the spike
        case .closeUpstream:
            closeUpstream(&connection)
        }
    }

    private func resolve(_ connection: inout RawConnection, _ head: HTTPRequestHead) {
        guard let decision = proxy.cachedDecision(for: head, origin: nil) else {
            connection.machine.resolutionDeferred()
            let (inbox, proxy, slot, serial) = (inbox, proxy, connection.slot, connection.serial)
            Task { inbox.post(.init(slot: slot, serial: serial, head: head, decision: await proxy.decision(for: head, origin: nil))) }
            return
        }
        apply(&connection, decision, head: head)
    }

    private func apply(_ connection: inout RawConnection, _ decision: ProxyDecision, head: HTTPRequestHead) {
        switch decision {
        case .respond(let response):
            run(&connection, connection.machine.decided(response))
        case .splice:
            run(&connection, connection.machine.decided(.text(.serviceUnavailable, "503: no hops in the spike\n")))
        case .forward(let target, let tls, let extra, let stripping, _):
            var outgoing = ForwardedRequest.head(for: head, clientAddress: connection.peer, isTLS: false, adding: extra,
                                                 upgrade: connection.machine.upgradeRequested, forwardedHost: nil)
            if let stripping { outgoing.uri = ForwardedRequest.stripping(stripping, from: outgoing.uri) }
            run(&connection, connection.machine.forward(outgoing, to: target, tls: tls, upstreamActive: connection.upstream >= 0, now: .now()))
        }
    }

    private func connect(_ connection: inout RawConnection, to target: Upstream) {
        var fd: Int32 = -1
        switch target {
        case .session(let endpoint):
            switch endpoint.address {
            case .guardSocket(let path): fd = Self.connectUnix(path)
            case .userSocket: fd = (try? SessionConnector().connect(endpoint, timeout: 0)) ?? -1
            case .loopbackPort: fd = -1
            }
        case .unix(let path):
            fd = Self.connectUnix(path)
        case .tcp, .node:
            fd = -1
        }
        guard fd >= 0 else {
            run(&connection, connection.machine.upstreamConnectFailed())
            return
        }
        connection.upstream = fd
        connection.responseFramer = UpstreamResponseFramer()
        watch(fd, token: UInt64(connection.slot + 1) * 2 + 1)
        run(&connection, connection.machine.upstreamConnected(now: .now()))
    }

    private static func connectUnix(_ path: String) -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { close(fd); return -1 }
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard connected == 0 else { close(fd); return -1 }
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        return fd
    }

    private func send(_ connection: inout RawConnection, _ head: HTTPRequestHead, parts: [HTTPServerRequestPart]) {
        connection.responseFramer.expect(method: head.method, dechunk: head.version == .http1_0)
        connection.requestFraming = RequestBodyFraming(head)
        connection.upstreamOut.append(head.serialized())
        for part in parts {
            switch part {
            case .body(let chunk): connection.upstreamOut.append(connection.requestFraming.body(chunk))
            case .end(let trailers): if let end = connection.requestFraming.end(trailers) { connection.upstreamOut.append(end) }
            case .head: break
            }
        }
    }

    private func carryOut(_ connection: inout RawConnection, _ next: ProxyConnectionStateMachine.Next) {
        switch next {
        case .awaitRequestEnd:
            break
        case .close:
            connection.closing = true
        case .nextRequest(let replay):
            for part in replay { handle(&connection, part) }
            frame(&connection)
        }
    }

    // MARK: writing

    /// Writes `buffers` to `fd` with `writev`; false when it fails. The spike does not wait for
    /// a full socket: what does not fit closes the connection.
    private static func writev(_ fd: Int32, _ buffers: inout [ByteBuffer]) -> Bool {
        defer { buffers.removeAll(keepingCapacity: true) }
        var vectors: (iovec, iovec, iovec, iovec, iovec, iovec, iovec, iovec) = (iovec(), iovec(), iovec(), iovec(), iovec(), iovec(), iovec(), iovec())
        var offset = 0
        while offset < buffers.count {
            let count = min(buffers.count - offset, 8)
            let written: Int = withUnsafeMutableBytes(of: &vectors) { raw in
                let vector = raw.bindMemory(to: iovec.self)
                var total = 0
                for index in 0..<count {
                    buffers[offset + index].withUnsafeReadableBytes { bytes in
                        vector[index] = iovec(iov_base: UnsafeMutableRawPointer(mutating: bytes.baseAddress), iov_len: bytes.count)
                    }
                    total += buffers[offset + index].readableBytes
                }
                let written = Glibc.writev(fd, vector.baseAddress, Int32(count))
                return written == total ? written : -1
            }
            guard written >= 0 else { return false }
            offset += count
        }
        return true
    }

    /// Writes what is due: the client's answers first, then the session's next request.
    private func flush(_ connection: inout RawConnection) {
        if !connection.clientOut.isEmpty, !Self.writev(connection.client, &connection.clientOut) {
            connection.closing = true
        }
        if !connection.upstreamOut.isEmpty, connection.upstream >= 0, !Self.writev(connection.upstream, &connection.upstreamOut) {
            closeUpstream(&connection)
            run(&connection, connection.machine.upstreamClosed())
            if !connection.clientOut.isEmpty, !Self.writev(connection.client, &connection.clientOut) { connection.closing = true }
        }
    }

    private func closeUpstream(_ connection: inout RawConnection) {
        guard connection.upstream >= 0 else { return }
        close(connection.upstream)  // closing removes it from the epoll set
        connection.upstream = -1
        connection.upstreamOut.removeAll(keepingCapacity: true)
    }
}
#endif
