import DroverCluster
import DroverKernel
import DroverSessionProtocol
import Foundation
import DroverTesting
import Testing

@Suite struct NodeAddressResolverTests {
    func environment(hostName: String? = "box", resolves: [String: String] = ["box": "10.1.2.3"],
                     interfaces: [String] = ["127.0.0.1", "10.9.9.9", "172.16.0.5"]) -> NodeAddressResolver.Environment {
        NodeAddressResolver.Environment(hostName: { hostName }, resolveIPv4: { resolves[$0] }, interfaceIPv4s: { interfaces })
    }

    @Test func wwwHostNameComesFirst() {
        let address = NodeAddressResolver.resolve(wwwHostName: "server1.example.com", wwwAddress: "127.0.0.2", wwwPort: 8787,
                                                  environment: environment(resolves: ["server1.example.com": "192.0.2.10"]))
        #expect(address == NodeAddress(host: "server1.example.com", ipv4: "192.0.2.10", port: 8787, source: .wwwHostName))
    }

    @Test func anExplicitHostNameThatDoesNotResolveIsKeptUnresolved() {
        let address = NodeAddressResolver.resolve(wwwHostName: "rsw-primaryyy", wwwAddress: "0.0.0.0", wwwPort: 8787, environment: environment())
        #expect(address == NodeAddress(host: "rsw-primaryyy", ipv4: nil, port: 8787, source: .wwwHostName))
    }

    @Test func thenWwwAddressWithWwwPort() {
        let address = NodeAddressResolver.resolve(wwwHostName: nil, wwwAddress: "127.0.0.2", wwwPort: 9000, environment: environment())
        #expect(address == NodeAddress(host: "127.0.0.2", ipv4: "127.0.0.2", port: 9000, source: .wwwAddress))
    }

    @Test func thenTheHostnameSystemCall() {
        let address = NodeAddressResolver.resolve(wwwHostName: nil, wwwAddress: "0.0.0.0", wwwPort: 8787, environment: environment())
        #expect(address == NodeAddress(host: "box", ipv4: "10.1.2.3", port: 8787, source: .hostname))
    }

    @Test func thenTheLastNonLoopbackIPv4() {
        let address = NodeAddressResolver.resolve(wwwHostName: nil, wwwAddress: "0.0.0.0", wwwPort: 8787,
                                                  environment: environment(hostName: "box", resolves: [:]))
        #expect(address == NodeAddress(host: "172.16.0.5", ipv4: "172.16.0.5", port: 8787, source: .interface))
        let none = NodeAddressResolver.resolve(wwwHostName: nil, wwwAddress: "0.0.0.0", wwwPort: 8787,
                                               environment: environment(hostName: nil, resolves: [:], interfaces: ["127.0.0.1"]))
        #expect(none == nil)
    }

    @Test func theRealMachineResolvesSomething() {
        #expect(NodeAddressResolver.resolve(wwwHostName: nil, wwwAddress: "127.0.0.5", wwwPort: 1) != nil)
        #expect(NodeAddressResolver.resolve(wwwHostName: "localhost", wwwAddress: "0.0.0.0", wwwPort: 1)?.ipv4?.hasPrefix("127.") == true)
    }
}

@Suite struct StatusReportTests {
    func node(_ id: Int64, _ ip: String, status: NodeStatus = .online, seen: TimeInterval = 0, load: LoadAverage = .zero,
              version: (String, Int) = ("0.3.0", 1)) -> NodeRecord {
        NodeRecord(id: id, host: "h\(id)", ipv4: ip, port: 8787, status: status, lastSeen: Date(timeIntervalSince1970: 1000 - seen),
                   load: load, cpus: 2, startedAt: Date(timeIntervalSince1970: 0), version: version.0, configHash: "c", launcherFingerprint: nil,
                   protocolVersion: version.1)
    }

    @Test func rendersTheSeedsExample() {
        let nodes = [node(1, "192.168.55.101", load: LoadAverage(one: 0.45, five: 0.66, fifteen: 0.32)),
                     node(2, "192.168.55.102", load: LoadAverage(one: 1, five: 0.75, fifteen: 0.31), version: ("0.4.0", 2)),
                     node(3, "192.168.55.103", seen: 60),
                     node(4, "192.168.55.104", status: .offlineMode, load: LoadAverage(one: 0.033, five: 0.38, fifteen: 0.24))]
        func session(_ id: String, _ user: String, _ node: Int64, _ pid: Int32, _ state: SessionState = .running) -> SessionRecord {
            SessionRecord(id: id, username: user, ownership: SessionOwnership(node: node, state: state, pid: pid, port: 1),
                          createdAt: Date(timeIntervalSince1970: 0), lastActive: Date(timeIntervalSince1970: 0), label: nil)
        }
        let sessions = [session("a", "jdoe", 1, 12108), session("b", "kmccurdy", 1, 12202), session("c", "bdylan", 2, 3404),
                        session("d", "ghost", 2, 999, .suspended)]
        let text = StatusReport.render(nodes: nodes, sessions: sessions, now: Date(timeIntervalSince1970: 1000), heartbeatInterval: 5)
        #expect(text == """
            192.168.55.101:8787 Load: 0.45, 0.66, 0.32 Version: 0.3.0 (protocol 1)
               12108 - jdoe
               12202 - kmccurdy
            192.168.55.102:8787 Load: 1, 0.75, 0.31 Version: 0.4.0 (protocol 2)
               3404 - bdylan
            192.168.55.103:8787 (unreachable) Load: 0, 0, 0 Version: 0.3.0 (protocol 1)
            192.168.55.104:8787 (offline) Load: 0.033, 0.38, 0.24 Version: 0.3.0 (protocol 1)

            """)
    }

    @Test(arguments: [(0.45, "0.45"), (1, "1"), (0.033, "0.033"), (0.000047, "0.000047"), (4.7e-9, "0.0000000047"), (12.4, "12"),
                      (0, "0"), (2.5, "2.5"), (0.1, "0.1")] as [(Double, String)])
    func loadsAreDecimalsWithTwoSignificantDigits(value: Double, text: String) {
        #expect(StatusReport.load(value) == text)
    }
}

@Suite struct ConsistencyTests {
    func node(_ id: Int64, config: String, launcher: String? = nil, status: NodeStatus = .online) -> NodeRecord {
        NodeRecord(id: id, host: "h", ipv4: nil, port: Int(id), status: status, lastSeen: Date(), load: .zero, cpus: 1,
                   startedAt: Date(), version: "t", configHash: config, launcherFingerprint: launcher)
    }

    @Test func flagsTheMinorityAndNobodyOnATie() {
        let nodes = [node(1, config: "a", launcher: "x"), node(2, config: "a", launcher: "x"), node(3, config: "b", launcher: "y")]
        #expect(nodes.consistencyOutliers().configuration == [3])
        #expect(nodes.consistencyOutliers().launcher == [3])
        #expect(nodes.majorityConfigHash == "a")
        let tie = [node(1, config: "a"), node(2, config: "b")]
        #expect(tie.consistencyOutliers().configuration.isEmpty)
        #expect(tie.majorityConfigHash == nil)
        let deleting = [node(1, config: "a"), node(2, config: "b", status: .deleting), node(3, config: "b", status: .deleting)]
        #expect(deleting.consistencyOutliers().configuration.isEmpty, "nodes being deleted do not vote")
    }
}

@Suite struct NodeClientTests {
    @Test func aPeerThatNeverAnswersIsCutOffAtTheTimeout() async throws {
        // A socket that accepts connections (the kernel does, from the backlog) but never reads.
        let (fd, port) = try IPv4Socket.bound("127.0.0.1")
        defer { close(fd) }
        listen(fd, 8)

        let client = try NodeClient(key: SecureCookieKey(bytes: Array("0123456789abcdef".utf8)), protocol: .http, timeoutSeconds: 1)
        // The peer never answers: without the timeout the call would hang, which the guard catches.
        // Timed from inside the calling task, so a busy machine's delay in starting it is not counted.
        let (outcome, elapsed) = await withTaskGroup(of: (String, Double).self) { group in
            group.addTask {
                let started = Date()
                do {
                    _ = try await client.send(.GET, "/load-balancer/ping", to: "127.0.0.1", port: port)
                    return ("answered", Date().timeIntervalSince(started))
                } catch {
                    return ("\(error)".contains("did not answer within 1 s") ? "cut off" : "\(error)", Date().timeIntervalSince(started))
                }
            }
            group.addTask {
                try? await Task.sleep(for: .seconds(20))
                return ("hung", 20)
            }
            let first = await group.next()!
            group.cancelAll()
            return first
        }
        #expect(outcome == "cut off")
        #expect(elapsed >= 0.9 && elapsed < 10, "cut off after \(elapsed) s")
    }

    @Test func aClosedPortIsUnreachableAtOnce() async throws {
        let client = try NodeClient(key: SecureCookieKey(bytes: Array("0123456789abcdef".utf8)), protocol: .http, timeoutSeconds: 5)
        let port = try FreePortProbe.closed()
        do {
            _ = try await client.send(.GET, "/load-balancer/ping", to: "127.0.0.1", port: port)
            Issue.record("reached a closed port")
        } catch {
            #expect("\(error)".contains("cannot reach 127.0.0.1:\(port)"))
        }
    }
}

enum FreePortProbe {
    static func closed() throws -> Int { try DroverTesting.FreePort.find() }
}

/// A kind whose limits a node cannot set is not offered there (issue 35, item 3): it is placed
/// on nodes that can, never run unlimited.
@Suite struct KindLimitAvailabilityTests {
    @Test func aKindWithLimitsIsOfferedOnlyWhereTheyCanBeSet() throws {
        let directory = TemporaryDirectory(prefix: "drover-kind-limits")
        _ = try directory.write("rserver.conf", "server-data-dir=data\nsession-command=/bin/true\n")
        let kind = #"command=["/bin/sleep", "{socket}"]"# + "\nendpoint=unix-socket\n"
        _ = try directory.write("kinds/capped.conf", kind + "memory-limit=1G\ncpu-limit=1\n")
        _ = try directory.write("kinds/free.conf", kind)
        let config = try DroverConfiguration.load(directory: directory.path)
        let none = CgroupHost(unified: nil, v1: [])
        let offered = Dictionary(uniqueKeysWithValues: SessionKindCheck.check(config, cgroups: none).map { ($0.kind, $0) })
        #expect(offered["free"]?.offered == true && offered["default"]?.offered == true)
        let capped = try #require(offered["capped"])
        #expect(!capped.offered)
        #expect(capped.notes.contains("memory-limit cannot be enforced here: no cgroup hierarchy offers memory (is /sys/fs/cgroup mounted?); not offered rather than run unlimited"),
                "\(capped.notes)")
        #expect(capped.notes.contains { $0.hasPrefix("cpu-limit cannot be enforced here") })
        // With both controllers (v2, droverd's cgroup offering them): offered.
        let v2 = CgroupHost(unified: .init(mount: "/sys/fs/cgroup", own: "/", controllers: ["memory", "cpu"]), v1: [])
        #expect(geteuid() != 0 || SessionKindCheck.check(config, cgroups: v2).first { $0.kind == "capped" }?.offered == true)
    }
}
