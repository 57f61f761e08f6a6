import CPAM
import DroverKernel
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
        // The account is looked up on the pool too (the name service may be slow), as a
        // ``SystemAccount``: sign-ins run side by side, and `getpwnam`'s answer is one static
        // buffer that another sign-in's look-up could overwrite before its uid is read.
        let accepted = try? await pool.runIfActive { () -> (user: String, uid: UInt32?)? in
            guard let user = Self.check(service: service, username: username, password: password, remoteHost: remoteHost) else { return nil }
            return (user, SystemAccount.named(user)?.uid)
        }
        guard let (user, uid) = accepted ?? nil else { return .refused }
        guard let uid, uid >= minimum else { return .belowMinimumUserID(user: user) }
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

/// Failed sign-ins, counted so that one person's mistakes and one attacker's guesses keep out no
/// one else (README, "Sign-in"). Past a few failures the next attempts are refused at once (429
/// with `Retry-After`) for a time that doubles with each further failure (5 s, 10 s, 20 s …), up
/// to a quarter of an hour; nothing waits on a thread. Three counts, each its own lockout:
/// - a user name from one address (IPv6: its /64): after 5 failures — an office behind one NAT
///   address is not locked out because one person mistyped, nor a user because one address
///   hammers their name;
/// - an address that fails for many different names (password spraying): after failures for
///   10 names;
/// - a user name from any address: after 20 failures — but not from an address where that
///   name signed in before (remembered for 30 days), so an attacker who can name an account
///   cannot lock its owner out.
/// The pair and address counts are this node's own; the name's is the cluster's, kept in the
/// registry (``nameFailed(user:count:now:)``), this node's own only while the registry cannot
/// be reached.
final class SignInThrottle: Sendable {
    struct Record {
        var failures = 0
        var lockedUntil: Double = 0
        var lastFailure: Double = 0
        /// For an address: the names it failed for (at most ``sprayNames`` kept).
        var names: Set<String> = []
    }

    /// Failures of one name from one address before the lockout starts.
    let freeAttempts: Int
    /// Names an address may fail for before it is locked.
    static let sprayNames = 10
    /// Failures of one name, from any address, before it is locked where it never signed in.
    static let nameAttempts = 20
    /// The first lockout; each further failure doubles it.
    let firstLockout: Double
    static let longestLockout: Double = 900
    /// A record with no failure for this long is forgotten.
    static let memory: Double = 3600
    /// How long an address where a name signed in is remembered for it.
    static let knownFor: Double = 30 * 86_400
    static let capacity = 100_000
    private let records = Mutex<[String: Record]>([:])
    private let known = Mutex<[String: Double]>([:])

    /// Wall-clock seconds (the node's clock: tests move it instead of waiting out a lockout).
    private let wall: @Sendable () -> Double

    init(freeAttempts: Int = 5, firstLockout: Double = 5, wall: @escaping @Sendable () -> Double = { Date().timeIntervalSince1970 }) {
        self.freeAttempts = freeAttempts
        self.firstLockout = firstLockout
        self.wall = wall
    }

    /// An address as counted: IPv4 as it is, IPv6 by its /64.
    static func addressKey(_ address: String) -> String { OpenConnections.addressKey(address) }

    static func pairKey(address: String, user: String) -> String { "pair " + user.lowercased() + " " + addressKey(address) }
    static func addressOnly(_ address: String) -> String { "address " + addressKey(address) }
    static func nameKey(_ user: String) -> String { "user " + user.lowercased() }

    /// Seconds to wait before the next attempt for `user` from `address`, or nil when it may
    /// be made now.
    func wait(address: String, user: String, now: Double? = nil) -> Int? {
        let now = now ?? wall()
        let knownHere = known.withLock { ($0[Self.pairKey(address: address, user: user)] ?? 0) > now - Self.knownFor }
        let until = records.withLock { records in
            var keys = [Self.pairKey(address: address, user: user), Self.addressOnly(address)]
            if !knownHere { keys.append(Self.nameKey(user)) }
            return keys.compactMap { records[$0]?.lockedUntil }.max() ?? 0
        }
        return until > now ? Int((until - now).rounded(.up)) : nil
    }

    /// - Parameter countingName: also count the name here (when the registry, which counts it
    ///   for the cluster, could not be reached).
    func failed(address: String, user: String, countingName: Bool = true, now: Double? = nil) {
        let now = now ?? wall()
        records.withLock { records in
            if records.count >= Self.capacity { records = records.filter { now - $0.value.lastFailure < Self.memory } }
            func count(_ key: String, threshold: Int, name: String? = nil) {
                var record = records[key] ?? Record()
                if now - record.lastFailure >= Self.memory { record = Record() }
                record.failures += 1
                record.lastFailure = now
                var over = record.failures - threshold
                if let name {
                    if record.names.count < Self.sprayNames { record.names.insert(name) }
                    over = record.names.count >= Self.sprayNames ? record.failures - record.names.count : -1
                }
                if over >= 0 {
                    let doubling = min(over, 20)
                    record.lockedUntil = now + min(firstLockout * Double(1 << doubling), Self.longestLockout)
                }
                records[key] = record
            }
            count(Self.pairKey(address: address, user: user), threshold: freeAttempts)
            count(Self.addressOnly(address), threshold: 0, name: user.lowercased())
            if countingName { count(Self.nameKey(user), threshold: Self.nameAttempts) }
        }
    }

    /// The name's failures as the registry counts them for the whole cluster, `count` after the
    /// one just recorded: past ``nameAttempts`` the name is locked where it never signed in.
    func nameFailed(user: String, count: Int, now: Double? = nil) {
        let now = now ?? wall()
        records.withLock { records in
            var record = records[Self.nameKey(user)] ?? Record()
            record.failures = count
            record.lastFailure = now
            let over = count - Self.nameAttempts
            if over >= 0 { record.lockedUntil = now + min(firstLockout * Double(1 << min(over, 20)), Self.longestLockout) }
            records[Self.nameKey(user)] = record
        }
    }

    /// A successful sign-in clears its name's counts and remembers the address for the name
    /// (not the address's own count: an attacker's own account must not reset it).
    func succeeded(user: String, address: String, now: Double? = nil) {
        let now = now ?? wall()
        records.withLock { records in
            records.removeValue(forKey: Self.nameKey(user))
            records.removeValue(forKey: Self.pairKey(address: address, user: user))
        }
        known.withLock { known in
            if known.count >= Self.capacity { known = known.filter { $0.value > now - Self.knownFor } }
            known[Self.pairKey(address: address, user: user)] = now
        }
    }
}
