import DroverKernel
import DroverTesting
import Foundation
import Testing

/// Sign-in abuse against a real droverd with real accounts and PAM (issue 16, item 2). Clients
/// come from several loopback addresses (the whole of 127.0.0.0/8 is this machine's).
@Suite(.serialized) struct SignInAbuseTests {
    struct Attempt: Codable {
        var source: String
        var user: String
        var password: String
    }

    struct Answer: Codable {
        var status: Int
        var retryAfter: String?
        var cookie: Bool
    }

    /// Sends each attempt from its source address, `parallel` at a time, in order of the list.
    static let client = #"""
    import http.client, json, sys, urllib.parse
    from concurrent.futures import ThreadPoolExecutor
    host, port, parallel = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    attempts = json.load(sys.stdin)
    def send(attempt):
        connection = http.client.HTTPConnection(host, port, timeout=30, source_address=(attempt["source"], 0))
        body = urllib.parse.urlencode({"username": attempt["user"], "password": attempt["password"]})
        connection.request("POST", "/sign-in", body, {"Content-Type": "application/x-www-form-urlencoded"})
        response = connection.getresponse()
        response.read()
        cookie = response.getheader("Set-Cookie") or ""
        answer = {"status": response.status, "retryAfter": response.getheader("Retry-After"),
                  "cookie": cookie.startswith("drover-auth=") and not cookie.startswith("drover-auth=;")}
        connection.close()
        return answer
    with ThreadPoolExecutor(parallel) as pool:
        print(json.dumps(list(pool.map(send, attempts))))
    """#

    static func send(_ attempts: [Attempt], to node: ConfigDirectory, parallel: Int = 1) async throws -> [Answer] {
        let input = String(decoding: try JSONEncoder().encode(attempts), as: UTF8.self)
        let result = try await Executable.run("/usr/bin/env", ["python3", "-c", client, node.address, String(node.port), String(parallel)],
                                              stdin: input)
        guard result.status == 0 else { throw TestFailure("sign-in client failed: \(result.stderr)") }
        return try JSONDecoder().decode([Answer].self, from: Data(result.stdout.utf8))
    }

    func cluster(rserver: String = "") async throws -> TestCluster {
        let cluster = try await TestCluster(addresses: ["127.0.0.1"], backend: .sqlite,
                                            rserver: "auth-pam-service=\(SystemUsers.pamService)\n" + rserver)
        try await cluster.start(0)
        return cluster
    }

    @Test(.enabled(if: SystemUsers.available))
    func failedSignInsAreThrottledPerAddressAndPerUserAndAnsweredAtOnce() async throws {
        let (victim, other) = ("drovertest6", "drovertest7")
        try await SystemUsers.ensure([victim, other])
        let cluster = try await cluster()
        let node = cluster.nodes[0]
        // One address guessing names (password spraying): ten names refused, then 429 with
        // Retry-After, without asking PAM. Even the right password of a real user (the last
        // attempt) is refused from that address while it is locked. One client process sends them
        // all: the lockout (5 s) must not pass while a second one starts on a loaded machine.
        let guesses = (1...12).map { Attempt(source: "127.0.0.20", user: "nobody\($0)", password: "guess\($0)") }
            + [Attempt(source: "127.0.0.20", user: other, password: SystemUsers.password)]
        let answers = try await Self.send(guesses, to: node)
        #expect(answers.prefix(10).allSatisfy { $0.status == 303 && !$0.cookie }, "\(answers)")
        #expect(answers.suffix(3).allSatisfy { $0.status == 429 && Int($0.retryAfter ?? "") ?? 0 >= 1 }, "\(answers)")
        #expect(answers.last?.cookie == false, "\(answers)")
        // Another address is not affected.
        let elsewhere = try await Self.send([Attempt(source: "127.0.0.21", user: other, password: SystemUsers.password)], to: node)
        #expect(elsewhere.first?.status == 303 && elsewhere.first?.cookie == true, "\(elsewhere)")

        // One user guessed from many addresses: after twenty failures the name is locked where
        // it never signed in — but not where its owner did: naming an account does not lock its
        // owner out.
        let home = try await Self.send([Attempt(source: "127.0.0.40", user: victim, password: SystemUsers.password)], to: node)
        #expect(home.first?.cookie == true, "\(home)")
        let spread = (50..<72).map { Attempt(source: "127.0.0.\($0)", user: victim, password: "wrong\($0)") }
            + [Attempt(source: "127.0.0.80", user: victim, password: SystemUsers.password),
               Attempt(source: "127.0.0.40", user: victim, password: SystemUsers.password)]
        let spreadAnswers = try await Self.send(spread, to: node)
        #expect(spreadAnswers.prefix(20).allSatisfy { $0.status == 303 && !$0.cookie }, "\(spreadAnswers)")
        #expect(spreadAnswers.dropFirst(20).prefix(3).allSatisfy { $0.status == 429 && !$0.cookie }, "the name is locked from new addresses: \(spreadAnswers)")
        #expect(spreadAnswers.last?.status == 303 && spreadAnswers.last?.cookie == true, "its owner's own address still gets in: \(spreadAnswers)")
        // After the lockout the user gets in from anywhere, and that clears the name's count.
        let wait = Int(spreadAnswers.dropLast().last?.retryAfter ?? "") ?? 1
        try await Task.sleep(for: .seconds(wait))
        let later = try await Self.send([Attempt(source: "127.0.0.41", user: victim, password: SystemUsers.password)], to: node)
        #expect(later.first?.status == 303 && later.first?.cookie == true, "\(later)")
        let log = cluster.process(0)?.stderr ?? ""
        #expect(log.contains("event=sign-in-throttled"), "\(log.suffix(1500))")
        // Three attempts from 127.0.0.20 were throttled; the log says so once (a flood of them
        // must not flood the log).
        let throttled = log.split(separator: "\n").filter { $0.contains("event=sign-in-throttled") && $0.contains("address=127.0.0.20 ") }
        #expect(throttled.count == 1, "\(throttled)")
        #expect(try await cluster.stop(0) == 0)
    }

    @Test(.enabled(if: SystemUsers.available))
    func aFloodOfBadPasswordsDoesNotKeepAnotherUserOut() async throws {
        try await HeavyTests.run(.wholeMachine) { try await flood() }
    }

    func flood() async throws {
        let user = "drovertest7"
        try await SystemUsers.ensure([user])
        let cluster = try await cluster()
        let node = cluster.nodes[0]
        // 120 bad sign-ins from 60 addresses, 16 at a time (pam_unix would make each wait about
        // two seconds on a thread), with the real user's sign-in in the middle of them.
        var attempts = (0..<120).map { Attempt(source: "127.0.1.\($0 % 60 + 1)", user: "flood\($0)", password: "bad") }
        attempts.insert(Attempt(source: "127.0.2.1", user: user, password: SystemUsers.password), at: 60)
        let answers = try await Self.send(attempts, to: node, parallel: 16)
        #expect(answers[60].status == 303 && answers[60].cookie, "the real user got in: \(answers[60])")
        let statuses = Dictionary(grouping: answers.map(\.status), by: { $0 }).mapValues(\.count)
        #expect(Set(statuses.keys).isSubset(of: [303, 429]), "\(statuses)")
        #expect(try await cluster.stop(0) == 0)
    }

    /// Root and system accounts cannot sign in through the password form, whatever their
    /// password; PAM hears the client's address (`PAM_RHOST`).
    @Test(.enabled(if: SystemUsers.available))
    func accountsBelowTheMinimumUserIDCannotSignInAndPAMHearsTheClientsAddress() async throws {
        let (user, system) = ("drovertest8", "droversys1")
        try await SystemUsers.ensure([user])
        if SystemUsers.account(system) == nil {
            let made = try await Executable.run("/usr/sbin/useradd", ["-r", "-m", "-s", "/bin/sh", system])
            #expect(made.status == 0, "\(made.stderr)")
        }
        let passwords = try await Executable.run("/usr/sbin/chpasswd", [], stdin: "\(system):\(SystemUsers.password)\n")
        #expect(passwords.status == 0, "\(passwords.stderr)")
        #expect(try #require(SystemUsers.account(system)).uid < 1000)
        // A PAM service that also records what the module sees (pam_exec exports PAM_RHOST).
        let folder = TemporaryDirectory(prefix: "drover-pam")
        let record = folder.url("rhost.log")
        try folder.write("record.sh", "#!/bin/sh\necho \"$PAM_USER $PAM_RHOST\" >> \(record)\n", mode: 0o755)
        let service = "drover-test-rhost"
        try "auth required pam_exec.so quiet \(folder.url("record.sh"))\nauth required pam_unix.so\naccount required pam_unix.so\n"
            .write(toFile: "/etc/pam.d/\(service)", atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: "/etc/pam.d/\(service)") }
        let cluster = try await TestCluster(addresses: ["127.0.0.1"], backend: .sqlite, rserver: "auth-pam-service=\(service)\n")
        try await cluster.start(0)
        let node = cluster.nodes[0]
        let answers = try await Self.send([Attempt(source: "127.0.0.50", user: system, password: SystemUsers.password),
                                           Attempt(source: "127.0.0.51", user: user, password: SystemUsers.password)], to: node)
        #expect(answers[0].status == 303 && !answers[0].cookie, "a system account is refused: \(answers[0])")
        #expect(answers[1].status == 303 && answers[1].cookie, "an ordinary account gets in: \(answers[1])")
        let log = cluster.process(0)?.stderr ?? ""
        #expect(log.split(separator: "\n").contains { $0.contains("event=sign-in-refused") && $0.contains("auth-minimum-user-id") && $0.contains(system) },
                "\(log.suffix(1500))")
        let heard = (try? String(contentsOfFile: record, encoding: .utf8)) ?? ""
        #expect(heard.contains("\(system) 127.0.0.50") && heard.contains("\(user) 127.0.0.51"), "PAM heard: \(heard)")
        #expect(try await cluster.stop(0) == 0)
    }

    /// Issue 34, item 6: forty bad passwords for one name from an address (an office's NAT, say)
    /// lock that name from that address only: another user signs in from it at once.
    @Test(.enabled(if: SystemUsers.available))
    func oneNamesBadPasswordsDoNotLockOutItsAddress() async throws {
        let (mistyped, colleague) = ("drovertest6", "drovertest7")
        try await SystemUsers.ensure([mistyped, colleague])
        let cluster = try await cluster()
        let node = cluster.nodes[0]
        let answers = try await Self.send((0..<40).map { Attempt(source: "127.0.0.60", user: mistyped, password: "typo\($0)") }
                                          + [Attempt(source: "127.0.0.60", user: colleague, password: SystemUsers.password)], to: node)
        #expect(answers.prefix(5).allSatisfy { $0.status == 303 && !$0.cookie } && answers.dropFirst(5).dropLast().allSatisfy { $0.status == 429 },
                "\(answers.map(\.status))")
        #expect(answers.last?.status == 303 && answers.last?.cookie == true, "the colleague behind the same address: \(answers.last!)")
        #expect(try await cluster.stop(0) == 0)
    }

    /// Issue 34, item 6: a name's failures are counted for the whole cluster (in the registry):
    /// twenty guesses spread over two nodes lock the name on both, where per node each had seen
    /// only ten.
    @Test(.enabled(if: SystemUsers.available))
    func aNamesFailuresAreCountedAcrossTheCluster() async throws {
        let victim = "drovertest9"
        try await SystemUsers.ensure([victim])
        let cluster = try await TestCluster(addresses: ["127.0.0.1", "127.0.0.2"], backend: .sqlite,
                                            rserver: "auth-pam-service=\(SystemUsers.pamService)\n")
        for index in 0..<2 { try await cluster.start(index) }
        for n in 0..<20 {
            let answer = try await Self.send([Attempt(source: "127.0.3.\(n + 1)", user: victim, password: "guess\(n)")], to: cluster.nodes[n % 2])
            #expect(answer.first?.status == 303 && answer.first?.cookie == false, "guess \(n): \(answer)")
        }
        let next = try await Self.send([Attempt(source: "127.0.3.99", user: victim, password: SystemUsers.password)], to: cluster.nodes[1])
        #expect(next.first?.status == 429 && next.first?.cookie == false, "the name is locked by the cluster's count: \(next)")
        for index in 0..<2 { #expect(try await cluster.stop(index) == 0) }
        try await SystemUsers.ensure([victim])
    }

    /// Issue 34, item 1: what the throttle counts and what PAM authenticates are the same name.
    /// A NUL ends the C string PAM reads, so `name%00x` was a name of its own to the throttle and
    /// the account `name` to PAM: it dodged the name's lockout and, with the password, signed in.
    @Test(.enabled(if: SystemUsers.available))
    func aNameOrPasswordWithAControlCharacterIsRefusedBeforeTheThrottleAndPAM() async throws {
        let user = "drovertest8"
        try await SystemUsers.ensure([user])
        let cluster = try await cluster()
        let node = cluster.nodes[0]
        // Five wrong passwords lock the name out from this address.
        let locked = try await Self.send((0..<6).map { Attempt(source: "127.0.0.20", user: user, password: "wrong-\($0)") }, to: node)
        #expect(locked.last?.status == 429, "\(locked.map(\.status))")
        let dodges = [
            Attempt(source: "127.0.0.20", user: user + "\u{0}anything", password: SystemUsers.password),
            Attempt(source: "127.0.0.20", user: user + "\u{0}", password: SystemUsers.password),
            Attempt(source: "127.0.0.20", user: user, password: SystemUsers.password + "\u{0}more"),
            Attempt(source: "127.0.0.20", user: user + "\n", password: SystemUsers.password),
        ]
        for answer in try await Self.send(dodges, to: node) {
            #expect(answer.status == 400 && !answer.cookie, "a control character got through: \(answer.status)")
        }
        #expect(try await cluster.stop(0) == 0)
    }

    /// Issue 34, item 1: an account whose password was removed (`passwd -d`) never signs in
    /// through the form, even under a PAM stack with `nullok` (Debian's common-auth has it).
    @Test(.enabled(if: SystemUsers.available))
    func anAccountWithAnEmptyPasswordNeverSignsIn() async throws {
        let user = "drovertest9"
        try await SystemUsers.ensure([user])
        let service = "drover-test-nullok"
        try "auth required pam_unix.so nullok\naccount required pam_unix.so\n".write(toFile: "/etc/pam.d/\(service)", atomically: true, encoding: .utf8)
        #expect(try await Executable.run("/usr/bin/passwd", ["-d", user]).status == 0)
        defer { Task { try? await SystemUsers.ensure([user]) } }  // a password again
        let cluster = try await TestCluster(addresses: ["127.0.0.1"], backend: .sqlite, rserver: "auth-pam-service=\(service)\n")
        try await cluster.start(0)
        // Under `nullok`, pam_unix passes an account without a password whatever is typed,
        // unless it is told to disallow null tokens.
        let answers = try await Self.send(["", "anything", "x"].enumerated().map { Attempt(source: "127.0.0.\(40 + $0.offset)", user: user, password: $0.element) },
                                          to: cluster.nodes[0])
        for answer in answers { #expect(answer.status == 303 && !answer.cookie, "an account without a password signed in: \(answers)") }
        #expect(try await cluster.stop(0) == 0)
        try await SystemUsers.ensure([user])
    }
}
