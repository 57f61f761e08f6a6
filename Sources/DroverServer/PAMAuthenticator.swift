import CPAM
import Foundation
import NIOPosix
import Synchronization

/// Checks a user name and password with PAM (`auth-pam-service`): authentication and account
/// management, as `login` would, with the client's address as `PAM_RHOST`.
///
/// PAM modules block, so checks run on a small thread pool of their own (never the event loops,
/// nor NIO's shared blocking pool the rest of the node uses), with a bounded queue: a flood of
/// sign-ins is answered "busy" at once past it instead of piling up. A module's delay after a
/// failure (pam_unix sleeps about two seconds) is not slept on a thread: the failure is
/// answered at once and ``SignInThrottle`` makes the next attempts wait instead.
public final class PAMAuthenticator: Sendable {
    public let service: String
    /// Accounts with a lower user id cannot sign in (`auth-minimum-user-id`).
    public let minimumUserID: UInt32
    private let pool: NIOThreadPool
    private let waiting = Atomic<Int>(0)
    static let threads = 2
    static let queueBound = 32

    public enum Outcome: Sendable, Equatable {
        /// The account PAM authenticated (`PAM_USER`, which a module may have changed).
        case accepted(user: String)
        case refused
        /// The account is below `auth-minimum-user-id`.
        case belowMinimumUserID(user: String)
        /// Too many checks waiting already.
        case busy
    }

    public init(service: String, minimumUserID: UInt32 = 1000) {
        self.service = service
        self.minimumUserID = minimumUserID
        pool = NIOThreadPool(numberOfThreads: Self.threads)
        pool.start()
    }

    deinit {
        pool.shutdownGracefully { _ in }
    }

    public func authenticate(username: String, password: String, remoteHost: String) async -> Outcome {
        guard waiting.add(1, ordering: .relaxed).newValue <= Self.queueBound else {
            waiting.subtract(1, ordering: .relaxed)
            return .busy
        }
        defer { waiting.subtract(1, ordering: .relaxed) }
        let service = self.service
        let minimum = minimumUserID
        let accepted = try? await pool.runIfActive {
            Self.check(service: service, username: username, password: password, remoteHost: remoteHost)
        }
        guard let user = accepted ?? nil else { return .refused }
        guard let account = getpwnam(user), account.pointee.pw_uid >= minimum else { return .belowMinimumUserID(user: user) }
        return .accepted(user: user)
    }

    /// The user PAM authenticated, or nil.
    static func check(service: String, username: String, password: String, remoteHost: String) -> String? {
        guard let secret = strdup(password) else { return nil }
        defer {
            memset(secret, 0, strlen(secret))
            free(secret)
        }
        // PAM asks its questions through this callback; every prompt is answered with the password.
        let converse: @convention(c) (Int32, UnsafeMutablePointer<UnsafePointer<pam_message>?>?,
                                      UnsafeMutablePointer<UnsafeMutablePointer<pam_response>?>?, UnsafeMutableRawPointer?) -> Int32 = {
            count, _, responses, context in
            guard count > 0, let responses, let context,
                  let replies = calloc(Int(count), MemoryLayout<pam_response>.size)?.assumingMemoryBound(to: pam_response.self) else {
                return PAM_CONV_ERR
            }
            let password = context.assumingMemoryBound(to: CChar.self)
            for index in 0..<Int(count) {
                replies[index].resp = strdup(password)
                replies[index].resp_retcode = 0
            }
            responses.pointee = replies
            return PAM_SUCCESS
        }
        var conversation = pam_conv(conv: converse, appdata_ptr: UnsafeMutableRawPointer(secret))
        var handle: OpaquePointer?
        guard pam_start(service, username, &conversation, &handle) == PAM_SUCCESS, let handle else { return nil }
        _ = pam_set_item(handle, PAM_RHOST, remoteHost)
        // A module's failure delay calls this instead of sleeping on the pool's thread.
        let noDelay: @convention(c) (Int32, UInt32, UnsafeMutableRawPointer?) -> Void = { _, _, _ in }
        _ = pam_set_item(handle, PAM_FAIL_DELAY, unsafeBitCast(noDelay, to: UnsafeRawPointer.self))
        // Never an empty password, whatever the stack says: Debian's common-auth has `nullok`,
        // under which an account whose password was removed (`passwd -d`) signs in with none.
        var status = pam_authenticate(handle, Int32(PAM_DISALLOW_NULL_AUTHTOK))
        if status == PAM_SUCCESS { status = pam_acct_mgmt(handle, 0) }
        var user: String?
        if status == PAM_SUCCESS {
            var item: UnsafeRawPointer?
            if pam_get_item(handle, PAM_USER, &item) == PAM_SUCCESS, let item {
                user = String(cString: item.assumingMemoryBound(to: CChar.self))
            }
        }
        pam_end(handle, status)
        return user
    }
}

/// Failed sign-ins, counted per client address and per user name: past a few, the next
/// attempts are refused at once (429 with `Retry-After`) for a time that doubles with each
/// further failure (5 s, 10 s, 20 s …), up to a quarter of an hour. Nothing waits on a thread. Counts are this
/// node's own: a cluster of N nodes lets an attacker N times as many attempts.
final class SignInThrottle: Sendable {
    struct Record {
        var failures = 0
        var lockedUntil: Double = 0
        var lastFailure: Double = 0
    }

    /// Failures allowed before the lockout starts.
    let freeAttempts: Int
    /// The first lockout; each further failure doubles it.
    let firstLockout: Double
    static let longestLockout: Double = 900
    /// A record with no failure for this long is forgotten.
    static let memory: Double = 3600
    static let capacity = 100_000
    private let records = Mutex<[String: Record]>([:])

    init(freeAttempts: Int = 5, firstLockout: Double = 5) {
        self.freeAttempts = freeAttempts
        self.firstLockout = firstLockout
    }

    static func keys(address: String, user: String) -> [String] {
        ["address " + address, "user " + user.lowercased()]
    }

    /// Seconds to wait before the next attempt for `user` from `address`, or nil when it may
    /// be made now.
    func wait(address: String, user: String, now: Double = Date().timeIntervalSince1970) -> Int? {
        let until = records.withLock { records in
            Self.keys(address: address, user: user).compactMap { records[$0]?.lockedUntil }.max() ?? 0
        }
        return until > now ? Int((until - now).rounded(.up)) : nil
    }

    func failed(address: String, user: String, now: Double = Date().timeIntervalSince1970) {
        records.withLock { records in
            if records.count >= Self.capacity { records = records.filter { now - $0.value.lastFailure < Self.memory } }
            for key in Self.keys(address: address, user: user) {
                var record = records[key] ?? Record()
                if now - record.lastFailure >= Self.memory { record = Record() }
                record.failures += 1
                record.lastFailure = now
                if record.failures >= freeAttempts {
                    let doubling = min(record.failures - freeAttempts, 20)
                    record.lockedUntil = now + min(firstLockout * Double(1 << doubling), Self.longestLockout)
                }
                records[key] = record
            }
        }
    }

    /// A successful sign-in clears the user name's count (not the address's: an attacker's own
    /// account must not reset it).
    func succeeded(user: String) {
        _ = records.withLock { $0.removeValue(forKey: "user " + user.lowercased()) }
    }
}
