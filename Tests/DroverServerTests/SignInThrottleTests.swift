@testable import DroverServer
import Foundation
import Synchronization
import Testing

/// The sign-in throttle's windows on a clock the test moves: lockouts run out, double, and
/// are forgotten without a second of waiting. (SignInAbuseTests drive the same rules through
/// droverd, PAM and real accounts.)
@Suite struct SignInThrottleTests {
    final class WallClock: Sendable {
        private let seconds = Mutex<Double>(1_800_000_000)
        var now: Double { seconds.withLock { $0 } }
        func advance(_ by: Double) { seconds.withLock { $0 += by } }
    }

    func throttle(_ clock: WallClock) -> SignInThrottle { SignInThrottle(wall: { clock.now }) }

    @Test func aPairsLockoutStartsAfterTheFreeAttemptsRunsOutAndDoubles() {
        let clock = WallClock()
        let throttle = throttle(clock)
        for _ in 0..<4 { throttle.failed(address: "10.0.0.1", user: "alice") }
        #expect(throttle.wait(address: "10.0.0.1", user: "alice") == nil, "four failures are free")
        throttle.failed(address: "10.0.0.1", user: "alice")
        #expect(throttle.wait(address: "10.0.0.1", user: "alice") == 5, "the fifth locks the pair for 5 s")
        #expect(throttle.wait(address: "10.0.0.2", user: "alice") == nil, "another address is not locked")
        clock.advance(4.5)
        #expect(throttle.wait(address: "10.0.0.1", user: "alice") == 1)
        clock.advance(0.5)
        #expect(throttle.wait(address: "10.0.0.1", user: "alice") == nil, "the lockout ran out")
        throttle.failed(address: "10.0.0.1", user: "alice")
        #expect(throttle.wait(address: "10.0.0.1", user: "alice") == 10, "each further failure doubles it")
        clock.advance(3600)
        throttle.failed(address: "10.0.0.1", user: "alice")
        #expect(throttle.wait(address: "10.0.0.1", user: "alice") == nil, "an hour without failure: forgotten, counted afresh")
    }

    @Test func anAddressTryingManyNamesIsLockedForEveryName() {
        let clock = WallClock()
        let throttle = throttle(clock)
        for index in 0..<9 { throttle.failed(address: "10.0.0.9", user: "user\(index)") }
        #expect(throttle.wait(address: "10.0.0.9", user: "someone") == nil)
        throttle.failed(address: "10.0.0.9", user: "user9")
        #expect(throttle.wait(address: "10.0.0.9", user: "someone") == 5, "ten names: the address is locked")
        #expect(throttle.wait(address: "10.0.0.10", user: "someone") == nil)
    }

    /// Failures of one name from many addresses lock the name where it never signed in, but
    /// never where its owner did: an attacker who can name an account cannot lock its owner out.
    @Test func aNameIsLockedEverywhereButWhereItsOwnerSignedIn() {
        let clock = WallClock()
        let throttle = throttle(clock)
        throttle.succeeded(user: "bob", address: "192.168.1.5")
        for index in 0..<20 { throttle.failed(address: "10.1.0.\(index)", user: "bob") }
        #expect(throttle.wait(address: "10.2.0.1", user: "bob") == 5, "twenty failures: the name is locked at a new address")
        #expect(throttle.wait(address: "192.168.1.5", user: "bob") == nil, "but not where bob signed in")
        clock.advance(30 * 86_400 + 1)
        for index in 0..<20 { throttle.failed(address: "10.3.0.\(index)", user: "bob") }
        #expect(throttle.wait(address: "192.168.1.5", user: "bob") == 5, "an address is remembered for 30 days, no longer")
    }
}
