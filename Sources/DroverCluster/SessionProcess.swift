import CShims
import DroverKernel
import Foundation
import NIOPosix

/// Starting and watching session processes.
enum SessionProcess {
    /// A system account.
    typealias Account = SystemAccount

    /// The account `name` (``SystemAccount``: safe beside other threads' look-ups).
    static func account(_ name: String) -> Account? { SystemAccount.named(name) }

    /// The names of the groups `name` is a member of (its primary group included).
    static func groups(_ name: String) -> Set<String> {
        guard let account = account(name) else { return [] }
        return Set(account.groupIDs.compactMap { SystemGroup.withID($0)?.name })
    }

    /// ``groups(_:)`` on a thread of the blocking-work pool.
    static func lookUpGroups(_ name: String) async -> Set<String> {
        (try? await NIOThreadPool.singleton.runIfActive { groups(name) }) ?? []
    }

    /// ``account(_:)`` on a thread of the blocking-work pool, never on the cooperative one: the
    /// name service may be a directory server (LDAP, sssd) that answers slowly or not at all.
    static func lookUp(_ name: String) async -> Account? {
        (try? await NIOThreadPool.singleton.runIfActive { account(name) }) ?? nil
    }

    static var currentAccount: Account? {
        SystemAccount.withID(geteuid()).flatMap { account($0.name) }
    }

    /// Runs `arguments` as `account` (its uid, gid and groups, when we are root) and returns
    /// what it printed (at most 4 KiB). For everything droverd does inside a user's home:
    /// root never opens, reads or deletes a path there, where the user's symlinks could lead it.
    /// Waits on a thread of its own, never on the cooperative pool.
    static func runAsUser(_ account: Account, _ arguments: [String]) async -> String {
        var command = arguments
        if geteuid() == 0, account.uid != geteuid() {
            command = ["/usr/bin/setpriv", "--reuid=\(account.uid)", "--regid=\(account.gid)", "--init-groups", "--"] + arguments
        }
        let run = command
        return await withCheckedContinuation { continuation in
            Thread {
                continuation.resume(returning: runAndCollect(run, home: account.home))
            }.start()
        }
    }

    private static func runAndCollect(_ command: [String], home: String) -> String {
        var output: [Int32] = [0, 0]
        guard pipe(&output) == 0 else { return "" }
        let spawned = try? Spawn.start(command, environment: ["PATH=/usr/bin:/bin", "HOME=\(home)", "LANG=C.UTF-8"],
                                       descriptors: [(0, .null), (1, .inherited(output[1])), (2, .null)])
        close(output[1])
        defer { close(output[0]) }
        guard let pid = spawned else { return "" }
        var collected: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while collected.count < 4096 {
            let n = buffer.withUnsafeMutableBytes { read(output[0], $0.baseAddress, $0.count) }
            if n <= 0 { break }
            collected += buffer[0..<min(n, 4096 - collected.count)]
        }
        var status: Int32 = 0
        kill(pid, SIGKILL)  // done reading (or it printed too much): it has nothing more to say
        while waitpid(pid, &status, 0) < 0, errno == EINTR {}
        return String(decoding: collected, as: UTF8.self)
    }

    /// Whether the session answers an HTTP request at its endpoint within half a second (any
    /// status line counts), on a connection whose listener was verified to be the session's.
    /// Blocking I/O, on a thread of its own.
    static func answers(_ endpoint: SessionEndpoint, path uri: String) async -> Bool {
        await withCheckedContinuation { continuation in
            Thread { continuation.resume(returning: probe(endpoint, uri: uri)) }.start()
        }
    }

    private static func probe(_ endpoint: SessionEndpoint, uri: String) -> Bool {
        guard let fd = sendGET(endpoint, uri: uri, version: "HTTP/1.1", headers: "Connection: close\r\n", waitSeconds: 0.5) else { return false }
        defer { close(fd) }
        var answer = [UInt8](repeating: 0, count: 5)
        let received = answer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_WAITALL)) }
        return received == 5 && answer == Array("HTTP/".utf8)
    }

    /// Connects to the session's program over a verified connection (``SessionConnector``) and
    /// sends `GET uri` with `headers` and the session's secret, each send and receive bounded by
    /// `waitSeconds`; the connected descriptor (the caller reads the answer and closes it), or nil.
    static func sendGET(_ endpoint: SessionEndpoint, uri: String, version: String, headers: String, waitSeconds: Double) -> Int32? {
        guard let fd = try? SessionConnector().connect(endpoint, timeout: 0.5) else { return nil }
        var timeout = timeval(tv_sec: Int(waitSeconds), tv_usec: Int((waitSeconds - waitSeconds.rounded(.down)) * 1_000_000))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let secret = endpoint.secret.map { "\($0.header): \($0.value)\r\n" } ?? ""
        let request = Array("GET \(uri) \(version)\r\nHost: localhost\r\n\(headers)\(secret)\r\n".utf8)
        guard request.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) == request.count else {
            close(fd)
            return nil
        }
        return fd
    }
}

extension SystemAccount {
    /// The shell a session's command runs in as a login would: the account's, when it is a
    /// login shell listed in `/etc/shells`; else `/bin/sh` (an account whose shell is
    /// `nologin` still gets `/etc/profile` and `~/.profile`).
    var loginShell: String {
        let listed = ((try? String(contentsOfFile: "/etc/shells", encoding: .utf8)) ?? "").split(separator: "\n")
            .map { $0.trimmingCharacters(in: .whitespaces) }
        // csh and tcsh take -l only alone (no -c): their users get /bin/sh's login, ~/.profile.
        let cShell = ["csh", "tcsh"].contains((shell as NSString).lastPathComponent)
        return listed.contains(shell) && access(shell, X_OK) == 0 && !cShell ? shell : "/bin/sh"
    }

    /// Where a session of this account keeps its saved state (in the shared home).
    func stateDirectory(_ id: String) -> String { home + "/.local/share/drover/sessions/" + id }
}
