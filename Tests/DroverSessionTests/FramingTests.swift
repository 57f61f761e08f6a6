import DroverKernel
import DroverTesting
import Foundation
import Testing

/// Issue 34, item 3: `Connection` cannot remove the fields that frame a message. A request that
/// names `Content-Length` or `Transfer-Encoding` there would reach the session unframed, its body
/// read as further requests the node never saw; a session's answer that names `Content-Length`
/// there reached the client without its length and stalled the connection.
@Suite struct FramingTests {
    /// A session that records the request line of everything it reads (framed by
    /// `Content-Length` alone, as a simple server does), answers `/seen` with them, and answers
    /// everything else `hello` with `Connection: Content-Length`.
    static let session = """
        #!/usr/bin/env python3
        import os, socket, threading
        listener = socket.socket(fileno=int(os.environ["DROVER_SESSION_LISTEN_FD"]))
        seen = []
        def serve(c):
            data = b""
            while True:
                while b"\\r\\n\\r\\n" not in data:
                    chunk = c.recv(65536)
                    if not chunk:
                        c.close()
                        return
                    data += chunk
                head, data = data.split(b"\\r\\n\\r\\n", 1)
                lines = head.decode("latin-1").split("\\r\\n")
                seen.append(lines[0])
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value.strip())
                while len(data) < length:
                    data += c.recv(65536)
                data = data[length:]
                if "/seen" in lines[0]:
                    body = "\\n".join(seen).encode()
                    c.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: %d\\r\\n\\r\\n" % len(body) + body)
                else:
                    c.sendall(b"HTTP/1.1 200 OK\\r\\nConnection: Content-Length\\r\\nContent-Length: 5\\r\\n\\r\\nhello")
        while True:
            c, _ = listener.accept()
            threading.Thread(target=serve, args=(c,), daemon=True).start()
        """

    /// Sends `request` as raw bytes and returns what came back within a second.
    static let rawClient = """
        import socket, sys, time
        s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
        s.sendall(sys.stdin.buffer.read())
        s.settimeout(1)
        out = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk: break
                out += chunk
        except socket.timeout:
            pass
        sys.stdout.write(out.decode("latin-1"))
        """

    static func raw(_ node: ConfigDirectory, _ request: String) async throws -> String {
        try await Executable.run("/usr/bin/python3", ["-c", rawClient, node.address, String(node.port)], stdin: request).stdout
    }

    @Test func framingFieldsCannotBeNamedInConnection() async throws {
        let scripts = TemporaryDirectory(prefix: "drover-framing")
        try scripts.write("session", Self.session, mode: 0o755)
        let cluster = try await TestCluster(addresses: ["127.0.0.1"], backend: .sqlite,
                                            rserver: "session-command=\(scripts.url("session"))\nauth-none=1\n")
        try await cluster.start(0)
        let node = cluster.nodes[0]
        let id = try #require(try await startSessions(cluster, count: 1).first?.id)

        // A request whose body is another request, its length removed by `Connection`.
        let smuggled = "GET /s/\(id)/smuggled-by-length HTTP/1.1\r\nHost: x\r\n\r\n"
        let byLength = try await Self.raw(node, "POST /s/\(id)/outer HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive, Content-Length\r\n"
                                             + "Content-Length: \(smuggled.utf8.count)\r\n\r\n" + smuggled)
        #expect(byLength.hasPrefix("HTTP/1.1 400"), "\(byLength)")
        let chunkedBody = "GET /s/\(id)/smuggled-by-chunks HTTP/1.1\r\nHost: x\r\n\r\n"
        let byChunks = try await Self.raw(node, "POST /s/\(id)/outer HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Transfer-Encoding\r\n"
                                             + "Transfer-Encoding: chunked\r\n\r\n" + String(chunkedBody.utf8.count, radix: 16) + "\r\n" + chunkedBody + "\r\n0\r\n\r\n")
        #expect(byChunks.hasPrefix("HTTP/1.1 400"), "\(byChunks)")
        let seen = try await RawHTTPClient.request(host: node.address, port: node.port, path: "/s/\(id)/seen")
        #expect(!seen.body.contains("smuggled") && !seen.body.contains("outer"), "the session read: \(seen.body)")

        // The session's answer names its length in `Connection`: the client still gets it, and
        // the connection goes on at once.
        let connection = try await RawHTTPClient.KeepAlive(host: node.address, port: node.port)
        let started = Date()
        let first = try await connection.request(path: "/s/\(id)/a")
        #expect(first.status == 200 && first.body == "hello" && first.header("Content-Length") == "5", "\(first.headers)")
        #expect(try await connection.request(path: "/s/\(id)/b").body == "hello")
        #expect(Date().timeIntervalSince(started) < 10, "the connection stalled")
        #expect(try await cluster.stop(0) == 0)
    }
}
