import DroverKernel
import Foundation
import Testing

/// Group look-ups grow their buffer while the name service answers ERANGE: a group listing
/// thousands of members outgrows any fixed buffer, and then looked absent (an `admin-group` or a
/// kind's `groups` member was refused). A 16-byte first buffer stands in for the large group:
/// no entry fits in it.
@Suite struct SystemGroupTests {
    @Test func aLookUpWhoseBufferIsTooSmallTriesAgainWithALargerOne() throws {
        // The premise: glibc answers ERANGE for this buffer (so the retry is what finds the group).
        var entry = group()
        var found: UnsafeMutablePointer<group>?
        var small = [CChar](repeating: 0, count: 16)
        #expect(getgrgid_r(0, &entry, &small, small.count, &found) == ERANGE)

        #expect(SystemGroup.withID(0, bufferSize: 16) == SystemGroup(name: "root", gid: 0))
        #expect(SystemGroup.named("root", bufferSize: 16) == SystemGroup(name: "root", gid: 0))
        // Every group of root's, by id, has its name: as the session kinds' `groups` check reads them.
        let account = try #require(SystemAccount.named("root"))
        for gid in account.groupIDs {
            #expect(SystemGroup.withID(gid, bufferSize: 16)?.gid == gid)
        }
    }

    @Test func aGroupThatIsNotThereIsNil() {
        #expect(SystemGroup.named("drover-no-such-group", bufferSize: 16) == nil)
        #expect(SystemGroup.withID(4_000_000_000, bufferSize: 16) == nil)
    }
}
