import DroverKernel
import DroverTesting
import Foundation
import Testing

/// Clients that try to exhaust a node (issue 16, item 1), against a real droverd over loopback.
/// The timeouts keep the defaults' proportion (`www-header-timeout=30`,
/// `www-keep-alive-timeout=75`), scaled down together to 4 and 10 seconds.
@Suite(.serialized) struct HostileClientTests {
    static let limits = "www-header-timeout=4\nwww-keep-alive-timeout=10\n"

    /// One thousand connections (slowloris) that send a head a line every half second, and a
    /// stream of requests announcing 100 MB bodies, while a user works through the node.
    static let attack = #"""
    import asyncio, json, resource, sys, time
    host, port, slow_count, big_count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, slow_count + 512)), hard))
    ready = 0

    async def slow():
        global ready
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 20)
            writer.write(b"GET /health-check HTTP/1.1\r\nHost: node\r\n")
            await writer.drain()
        except Exception as error:
            return ("not connected", 0.0, repr(error))
        opened = time.monotonic()
        ready += 1
        while time.monotonic() - opened < 60:
            try:
                data = await asyncio.wait_for(reader.read(4096), 0.5)
                return ("closed" if data == b"" else "answered", time.monotonic() - opened, data[:60].decode(errors="replace"))
            except asyncio.TimeoutError:
                pass
            except (ConnectionError, OSError):
                return ("closed", time.monotonic() - opened, "reset")
            try:
                writer.write(b"X-Slow: a\r\n")
                await writer.drain()
            except (ConnectionError, OSError):
                return ("closed", time.monotonic() - opened, "reset on write")
        return ("open", 60.0, "")

    async def big():
        answers = []
        for _ in range(big_count):
            started = time.monotonic()
            try:
                reader, writer = await asyncio.open_connection(host, port)
                writer.write(b"POST /api/sessions HTTP/1.1\r\nHost: node\r\nContent-Length: 104857600\r\n\r\n" + b"a" * 65536)
                await writer.drain()
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                answers.append((head.split(b"\r\n")[0].decode(), time.monotonic() - started))
                writer.close()
            except Exception as error:
                answers.append((repr(error), time.monotonic() - started))
            await asyncio.sleep(0.05)
        return answers

    async def main():
        slow_tasks = [asyncio.create_task(slow()) for _ in range(slow_count)]
        while ready < slow_count and time.monotonic() < started + 30:
            await asyncio.sleep(0.05)
        print(json.dumps({"ready": ready}), flush=True)
        big_answers = await big()
        slow_results = await asyncio.gather(*slow_tasks)
        print(json.dumps({"slow": slow_results, "big": big_answers}), flush=True)

    started = time.monotonic()
    asyncio.run(main())
    """#

    /// A thousand connections load the machine: it takes its turn with the other heavy tests.
    @Test func slowlorisAndOversizedBodiesAreClosedAtTheirLimitsWhileAUserKeepsWorking() async throws {
        try await HeavyTests.run(.cores(0.3)) { try await slowloris() }
    }

    func slowloris() async throws {
        let cluster = try await TestCluster(addresses: ["127.0.0.1"], backend: .sqlite,
                                            rserver: "session-command=\(demoCommand)\nauth-none=1\n" + Self.limits)
        try await cluster.start(0)
        let node = cluster.nodes[0]
        let (id, _) = try #require(try await startSessions(cluster, count: 1).first)
        let script = TemporaryDirectory(prefix: "drover-attack")
        try script.write("attack.py", Self.attack)
        let attack = try RunningProcess("/usr/bin/env", ["python3", script.url("attack.py"), node.address, String(node.port), "1000", "40"])
        try await attack.waitUntil(timeout: 40, "the slow connections are open") { attack.stdout.contains("\"ready\"") }
        let ready = attack.stdout.split(separator: "\n").first.flatMap { line in
            (try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])?["ready"] as? Int
        }
        #expect(ready == 1000, "slow connections open at once: \(ready ?? -1)")

        // The user works through the node while the attack holds its connections open.
        var answered = 0
        for expected in 1...30 {
            let response = try await RawHTTPClient.request("POST", host: node.address, port: node.port, path: "/s/\(id)/count", timeout: 10)
            #expect(response.status == 200 && count(response) == expected, "\(response.status) \(response.body.prefix(200))")
            if response.status == 200 { answered += 1 }
            let listed = try await RawHTTPClient.request(host: node.address, port: node.port, path: "/api/sessions", timeout: 10)
            #expect(listed.status == 200)
        }
        #expect(answered == 30)

        _ = try await attack.wait(timeout: 90)
        let last = try #require(attack.stdout.split(separator: "\n").last)
        let result = try #require(try JSONSerialization.jsonObject(with: Data(last.utf8)) as? [String: Any])
        let slow = try #require(result["slow"] as? [[Any]])
        let outcomes = Dictionary(grouping: slow, by: { $0[0] as? String ?? "?" }).mapValues(\.count)
        #expect(outcomes == ["closed": 1000], "\(outcomes); e.g. \(slow.filter { $0[0] as? String != "closed" }.prefix(3))")
        // Closed at the header timeout, counted from the head's first byte: never before it.
        let closedAfter = slow.compactMap { $0[1] as? Double }
        #expect(closedAfter.min().map { $0 >= 3.8 } == true, "a slow connection was closed after \(closedAfter.min() ?? -1) s, before www-header-timeout")
        #expect(closedAfter.max().map { $0 < 30 } == true, "a slow connection lived \(closedAfter.max() ?? -1) s")
        // Every oversized body is refused at once, before it is sent (100 MB would take a while).
        let big = try #require(result["big"] as? [[Any]])
        #expect(big.count == 40)
        for answer in big {
            #expect(answer[0] as? String == "HTTP/1.1 413 Payload Too Large", "\(answer)")
        }
        #expect(try await cluster.stop(0) == 0)
    }

    @Test func anIdleKeepAliveConnectionIsClosedAtTheKeepAliveTimeoutAndAHeadlessOneAtTheHeaderTimeout() async throws {
        // Timeouts far enough apart that each close tells which one fired.
        let cluster = try await TestCluster(addresses: ["127.0.0.1"], backend: .sqlite,
                                            rserver: "auth-none=1\nwww-header-timeout=3\nwww-keep-alive-timeout=12\n")
        try await cluster.start(0)
        let node = cluster.nodes[0]
        let script = #"""
        import socket, sys, time
        host, port = sys.argv[1], int(sys.argv[2])
        def closed_after(send, then_part_of_a_head=False):
            s = socket.create_connection((host, port))
            if send:
                s.sendall(b"GET /health-check HTTP/1.1\r\nHost: node\r\n\r\n")
                answer = b""
                while not answer.endswith(b"ok\n"):
                    answer += s.recv(4096)
            if then_part_of_a_head:
                # Past the header timeout of the connection's start, within the keep-alive one.
                time.sleep(4)
                s.sendall(b"GET /health-check HTTP/1.1\r\nHost: no")
            started = time.monotonic()
            s.settimeout(60)
            try:
                while s.recv(4096):
                    pass
            except OSError:
                pass
            return time.monotonic() - started
        print(closed_after(True), closed_after(False), closed_after(True, then_part_of_a_head=True))
        """#
        let result = try await Executable.run("/usr/bin/env", ["python3", "-c", script, node.address, String(node.port)])
        let times = result.stdout.split(separator: " ").compactMap { Double($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        #expect(times.count == 3, "\(result.stdout) \(result.stderr)")
        if times.count == 3 {
            #expect(times[0] >= 11.8 && times[0] < 20, "idle keep-alive connection closed after \(times[0]) s (www-keep-alive-timeout=12)")
            #expect(times[1] >= 2.8 && times[1] < 8, "connection without a request closed after \(times[1]) s (www-header-timeout=3)")
            // Its second head's first bytes start the header timeout, which is shorter than
            // what is left of the keep-alive timeout running until then (8 s).
            #expect(times[2] >= 2.8 && times[2] < 6.5, "a stalled second head closed after \(times[2]) s (www-header-timeout=3)")
        }
        #expect(try await cluster.stop(0) == 0)
    }

    @Test func pastTheConnectionCapANewClientIsToldToComeBackAndTheOthersStillWork() async throws {
        let cluster = try await TestCluster(addresses: ["127.0.0.1"], backend: .sqlite, rserver: "auth-none=1\nwww-max-connections=20\n" + Self.limits)
        try await cluster.start(0)
        let node = cluster.nodes[0]
        let script = #"""
        import socket, sys, time
        host, port = sys.argv[1], int(sys.argv[2])
        client = ("127.0.0.9", 0)  # a client: this machine's own 127.0.0.1 is the CLI's, never starved
        held = []
        for _ in range(20):
            s = socket.create_connection((host, port), source_address=client)
            s.sendall(b"GET /health-check HTTP/1.1\r\nHost: node\r\n\r\n")
            answer = b""
            while not answer.endswith(b"ok\n"):
                answer += s.recv(4096)
            held.append(s)
        extra = socket.create_connection((host, port), source_address=client)
        extra.settimeout(10)
        refused = extra.recv(4096).split(b"\r\n")[0].decode()
        # The CLI on this machine (and the cluster's nodes) still get in: room is kept for them.
        cli = socket.create_connection((host, port), source_address=("127.0.0.1", 0))
        cli.sendall(b"GET /health-check HTTP/1.1\r\nHost: node\r\n\r\n")
        cli.settimeout(10)
        privileged = cli.recv(4096).split(b"\r\n")[0].decode()
        held[0].sendall(b"GET /health-check HTTP/1.1\r\nHost: node\r\n\r\n")
        held[0].settimeout(10)
        still = held[0].recv(4096).endswith(b"ok\n")
        held.pop().close()
        time.sleep(0.5)
        again = socket.create_connection((host, port), source_address=client)
        again.sendall(b"GET /health-check HTTP/1.1\r\nHost: node\r\n\r\n")
        again.settimeout(10)
        print(refused + "|" + str(still) + "|" + again.recv(4096).split(b"\r\n")[0].decode() + "|" + privileged)
        """#
        let result = try await Executable.run("/usr/bin/env", ["python3", "-c", script, node.address, String(node.port)])
        #expect(result.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "HTTP/1.1 503 Service Unavailable|True|HTTP/1.1 200 OK|HTTP/1.1 200 OK",
                "\(result.stdout) \(result.stderr)")
        #expect(try await cluster.stop(0) == 0)
    }

    /// Issue 34, item 2: a thousand connections from one address each send a head promising a
    /// body, then stall. The address gets no more than its share (www-max-connections-per-address),
    /// each stalled body ends at www-body-timeout, and meanwhile a user keeps working, `drover
    /// status` answers and the other node keeps seeing this one Online. Timeouts are the
    /// operator's defaults (30 s head, 75 s keep-alive, 60 s body) scaled down by ten together.
    @Test func stalledBodiesFromOneAddressStarveNoOne() async throws {
        let cluster = try await TestCluster(addresses: ["127.0.0.1", "127.0.0.2"], backend: .sqlite,
                                            rserver: "session-command=\(demoCommand)\nauth-none=1\nwww-header-timeout=3\nwww-keep-alive-timeout=7\n"
                                                + "www-body-timeout=6\nwww-max-connections=400\nwww-max-connections-per-address=100\n")
        for index in 0..<2 { try await cluster.start(index) }
        let node = cluster.nodes[0]
        let id = try #require(try await startSessions(cluster, count: 1).first?.id)
        let attacker = #"""
        import json, select, socket, sys, time
        host, port, session = sys.argv[1], int(sys.argv[2]), sys.argv[3]
        held, refused = [], 0
        for n in range(1000):
            try:
                s = socket.create_connection((host, port), source_address=("127.0.0.9", 0), timeout=5)
            except OSError:
                refused += 1
                continue
            path = "/api/sessions" if n % 2 else "/s/%s/count" % session
            s.sendall(("POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{" % path).encode())
            held.append(s)
        started = time.time()
        open_ = list(held)
        accepted = 0
        while open_ and time.time() - started < 30:
            ready, _, _ = select.select(open_, [], [], 1)
            for s in ready:
                try: data = s.recv(4096)
                except OSError: data = b""
                if not data or b"503" not in data:
                    pass
                if data.startswith(b"HTTP/1.1 503"): refused += 1
                else: accepted += 1
                open_.remove(s)
        print(json.dumps({"refused": refused, "accepted": accepted, "stillOpen": len(open_), "lastClosed": time.time() - started}))
        """#
        let flood = try RunningProcess("/usr/bin/python3", ["-c", attacker, node.address, String(node.port), id])
        defer { flood.signal(SIGKILL) }
        // The user works from another address through the flood, a request every 300 ms.
        var statuses: [Int] = []
        for _ in 0..<30 {
            let answer = try? await RawHTTPClient.request("POST", host: node.address, port: node.port, path: "/s/\(id)/count",
                                                          localAddress: "127.0.0.20", timeout: 10)
            statuses.append(answer?.status ?? 0)
            try await Task.sleep(for: .milliseconds(300))
        }
        #expect(statuses.allSatisfy { $0 == 200 }, "the user's requests during the flood: \(statuses)")
        #expect(try await cluster.drover(0, ["status"]).status == 0, "drover status answers")
        #expect(try await cluster.statuses(via: 1).allSatisfy { $0.status == "Online" }, "the other node sees this one Online")
        _ = try await flood.wait(timeout: 60)
        let report = try #require(try JSONSerialization.jsonObject(with: Data(flood.stdout.utf8)) as? [String: Any], "\(flood.stdout) \(flood.stderr)")
        #expect(report["stillOpen"] as? Int == 0 && (report["lastClosed"] as? Double ?? 99) < 20, "stalled bodies end at www-body-timeout: \(report)")
        #expect((report["refused"] as? Int ?? 0) >= 850, "one address holds at most its share: \(report)")
        for index in 0..<2 { #expect(try await cluster.stop(index) == 0) }
    }
}
