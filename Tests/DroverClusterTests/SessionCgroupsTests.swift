import DroverKernel
import DroverSessionProtocol
import DroverTesting
import Foundation
import Testing

/// The cgroup layouts a node may meet (issue 35, item 2), read from the text of
/// `/proc/self/mounts` and `/proc/self/cgroup`, and the files a session's limits are written to.
/// cgroup v2 with controllers cannot be mounted beside this machine's v1 memory and cpu
/// hierarchies, so its writes are checked on a folder tree shaped like one; the v1 writes are
/// checked on the real hierarchies by `SessionResourceLimitTests`.
@Suite struct SessionCgroupsTests {
    static let hybridMounts = """
        cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
        cgroup /sys/fs/cgroup/cpuacct cgroup rw,relatime,cpuacct 0 0
        cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
        cgroup /sys/fs/cgroup/freezer cgroup rw,relatime,freezer 0 0
        cgroup /sys/fs/cgroup/systemd cgroup rw,relatime,name=systemd 0 0
        cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
        """
    static let hybridMemberships = "9:name=systemd:/\n6:freezer:/\n4:memory:/jobs/42\n2:cpuacct:/\n1:cpu:/\n0::/\n"

    @Test func aHybridHostUsesV2ToHoldTheSessionAndV1ForItsLimits() {
        let host = CgroupHost(mounts: Self.hybridMounts, memberships: Self.hybridMemberships) { _ in "hugetlb\n" }
        #expect(host.unified == CgroupHost.Hierarchy(mount: "/sys/fs/cgroup/unified", own: "/", controllers: ["hugetlb"]))
        #expect(host.sessionsParentV2() == "/sys/fs/cgroup/unified/drover-sessions")
        #expect(host.v1Hierarchy("memory")?.ownFolder == "/sys/fs/cgroup/memory/jobs/42")
        #expect(host.v1Hierarchy("cpu")?.mount == "/sys/fs/cgroup/cpu" && host.v1Hierarchy("systemd") == nil)
        #expect(host.support(.memory, writable: { _ in true }) == .v1("/sys/fs/cgroup/memory"))
        #expect(host.support(.cpu, writable: { _ in true }) == .v1("/sys/fs/cgroup/cpu"))
        // Not root: refused, and said why.
        guard case .missing(let why) = host.support(.memory, writable: { _ in false }) else { Issue.record("writable"); return }
        #expect(why == "/sys/fs/cgroup/memory/jobs/42 (cgroup v1 memory) is not droverd's to write; run droverd as root")
    }

    @Test func aV2HostOffersWhatDroverdsCgroupOffersItsChildren() {
        let mounts = "cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime 0 0\n"
        let service = CgroupHost(mounts: mounts, memberships: "0::/system.slice/droverd.service\n") { folder in
            folder == "/sys/fs/cgroup/system.slice/droverd.service" ? "cpuset cpu io memory pids\n" : nil
        }
        #expect(service.support(.memory, writable: { _ in true }) == .v2("/sys/fs/cgroup/system.slice/droverd.service/drover-sessions"))
        // After droverd moved into its leaf, the sessions stay beside it.
        let moved = CgroupHost(mounts: mounts, memberships: "0::/system.slice/droverd.service/droverd\n") { _ in "cpu memory\n" }
        #expect(moved.sessionsParentV2() == "/sys/fs/cgroup/system.slice/droverd.service/drover-sessions")
        // A cgroup whose parent enabled nothing for it: no limits, and the reason.
        let bare = CgroupHost(mounts: mounts, memberships: "0::/user.slice/session-3.scope\n") { _ in "" }
        #expect(bare.support(.cpu, writable: { _ in true })
                    == .missing("the cpu controller is not enabled for droverd's cgroup on cgroup v2 and no v1 cpu hierarchy is mounted"))
        #expect(CgroupHost(mounts: "", memberships: "") { _ in nil }.support(.memory) == .missing("no cgroup hierarchy offers memory (is /sys/fs/cgroup mounted?)"))
    }

    /// A v2 tree as the kernel shows it: each folder with its interface files.
    func v2Tree(_ root: TemporaryDirectory, _ folders: [String]) throws {
        for folder in folders {
            try FileManager.default.createDirectory(atPath: root.path + folder, withIntermediateDirectories: true)
            for file in ["cgroup.procs", "cgroup.subtree_control", "cgroup.controllers", "memory.max", "memory.swap.max", "memory.oom.group", "cpu.max"] {
                _ = FileManager.default.createFile(atPath: root.path + folder + "/" + file, contents: nil)
            }
        }
    }

    func read(_ path: String) -> String { (try? String(contentsOfFile: path, encoding: .utf8)) ?? "<missing>" }

    @Test func onV2DroverdMovesIntoALeafAndTheSessionGetsMemoryMaxOOMGroupNoSwapAndCPUMax() throws {
        let root = TemporaryDirectory(prefix: "drover-cgroup2")
        let service = "/droverd.service"
        try v2Tree(root, [service, service + "/droverd", service + "/drover-sessions", service + "/drover-sessions/abc123"])
        let mounts = "cgroup2 \(root.path) cgroup2 rw 0 0\n"
        let host = CgroupHost(mounts: mounts, memberships: "0::\(service)\n") { _ in "cpu io memory pids\n" }
        #expect(CgroupHost.prepareForSessions(host, pid: 4242).isEmpty)
        #expect(read(root.path + service + "/droverd/cgroup.procs") == "4242", "droverd moved into its leaf")
        #expect(read(root.path + service + "/cgroup.subtree_control") == "+memory +cpu")
        #expect(read(root.path + service + "/drover-sessions/cgroup.subtree_control") == "+memory +cpu")

        let after = CgroupHost(mounts: mounts, memberships: "0::\(service)/droverd\n") { _ in "cpu memory\n" }
        let limits = SessionLimits(memoryBytes: 512 << 20, cpus: 1.5)
        let set = try #require(try SessionCgroupSet.make("abc123", limits: limits, host: after))
        let folder = root.path + service + "/drover-sessions/abc123"
        #expect(set == SessionCgroupSet(unified: folder))
        #expect(read(folder + "/memory.max") == "536870912" && read(folder + "/memory.swap.max") == "0" && read(folder + "/memory.oom.group") == "1")
        #expect(read(folder + "/cpu.max") == "150000 100000")
        #expect(set.words == "cgroup2:\(folder)" && SessionCgroupSet(words: set.words) == set)
        // What the guard reads: the OOM kills and the use.
        try "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 1\n".write(toFile: folder + "/memory.events", atomically: false, encoding: .utf8)
        try "123456789\n".write(toFile: folder + "/memory.current", atomically: false, encoding: .utf8)
        try "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n".write(toFile: folder + "/cpu.stat", atomically: false, encoding: .utf8)
        #expect(set.usage() == SessionCgroupSet.Usage(memoryBytes: 123_456_789, cpuSeconds: 2.5, oomKills: 1))
        // Over its own limit: an OOM kill with the cgroup's own OOM event, after the baseline.
        #expect(set.wentOverMemoryLimit(since: .init(kills: 0, limitEvents: 0)))
        #expect(!set.wentOverMemoryLimit(since: .init(kills: 1, limitEvents: 1)), "counts a folder had before the start are not the session's")
        // The machine's OOM killer took one of its processes, the session under its limit: not held.
        try "low 0\nhigh 0\nmax 0\noom 0\noom_kill 1\n".write(toFile: folder + "/memory.events", atomically: false, encoding: .utf8)
        #expect(!set.wentOverMemoryLimit(since: .init(kills: 0, limitEvents: 0)))
    }

    /// Only a kind with a `cpu-limit` enables v2's cpu controller for its sessions: it makes each
    /// a scheduling group of its own (the proxy's tail latency, docs/BENCHMARKS.md).
    @Test func onV2TheCPUControllerIsEnabledOnlyForACPULimit() throws {
        let root = TemporaryDirectory(prefix: "drover-cgroup2")
        let service = "/droverd.service"
        try v2Tree(root, [service, service + "/droverd", service + "/drover-sessions"])
        let host = CgroupHost(mounts: "cgroup2 \(root.path) cgroup2 rw 0 0\n", memberships: "0::\(service)\n") { _ in "cpu io memory pids\n" }
        #expect(CgroupHost.prepareForSessions(host, pid: 4242, controllers: [.memory]).isEmpty)
        #expect(read(root.path + service + "/drover-sessions/cgroup.subtree_control") == "+memory")
    }

    /// On this machine's v1 hierarchies (as root): a session without a `cpu-limit` is kept out of
    /// the cpu controller's scheduling groups (and out of cpuacct's where it is mounted with cpu);
    /// its CPU use is still read, from cpuacct or from its processes. With a limit it joins.
    @Test(.enabled(if: geteuid() == 0 && CgroupHost.current().unified?.controllers.contains("cpu") != true
                   && CgroupHost.current().v1Hierarchy("cpu") != nil))
    func onV1ASessionJoinsTheCPUControllerOnlyForACPULimit() throws {
        let host = CgroupHost.current()
        let cpuWithAcct = host.v1Hierarchy("cpu")?.controllers.contains("cpuacct") == true
        let id = "drover-test-" + Crypto.randomBytes(4).hexString
        let free = try #require(try SessionCgroupSet.make(id, limits: SessionLimits(), host: host))
        defer { free.remove() }
        #expect(free.cpu == nil, "no cpu-limit: not in a cpu scheduling group (\(free.words))")
        // cpuacct only where it is apart from cpu, and no v2 folder counts the time already.
        #expect((free.cpuacct == nil) == (cpuWithAcct || free.unified != nil), "\(free.words)")
        #expect(free.cpuSeconds() != nil, "its CPU use is still read (\(free.words))")
        let limited = try #require(try SessionCgroupSet.make(id + "l", limits: SessionLimits(cpus: 0.5), host: host))
        defer { limited.remove() }
        #expect(limited.cpu != nil, "\(limited.words)")
    }

    @Test func withoutAnAccountingCgroupTheCPUTimeIsTheProcessesOwn() throws {
        let folder = TemporaryDirectory(prefix: "drover-cgroup-procs")
        try folder.write("cgroup.procs", "\(getpid())\n")
        var spin = 0.0
        let start = Date()
        while Date().timeIntervalSince(start) < 0.2 { spin += sin(spin) }  // some CPU of its own to count
        let seconds = try #require(SessionCgroupSet(freezer: folder.path).cpuSeconds(), "read from /proc/\(getpid())/stat")
        #expect(seconds >= 0.1 && seconds < 1e6, "\(seconds) s (spun \(spin))")
        #expect(SessionCgroupSet.processCPUSeconds(-1) == nil)
    }

    @Test func aLimitThatCannotBeSetFailsTheStart() throws {
        let root = TemporaryDirectory(prefix: "drover-cgroup2")
        try v2Tree(root, ["/drover-sessions/abc123"])
        // The sessions' folder offers no cpu controller (no cpu.max is written).
        let host = CgroupHost(mounts: "cgroup2 \(root.path) cgroup2 rw 0 0\n", memberships: "0::/\n") { _ in "memory\n" }
        do {
            _ = try SessionCgroupSet.make("abc123", limits: SessionLimits(cpus: 1), host: host)
            Issue.record("a cpu-limit without a cpu controller was accepted")
        } catch {
            #expect(error.description.hasPrefix("cpu-limit is set, but this node has no cpu cgroup controller for sessions"), "\(error)")
        }
        // Without limits the same host holds the session's processes together.
        #expect(try SessionCgroupSet.make("abc123", limits: SessionLimits(), host: host) == SessionCgroupSet(unified: root.path + "/drover-sessions/abc123"))
    }

    @Test func sizesAndCPUsAreReadAndShownAsOperatorsWriteThem() {
        #expect(SessionLimits.parseBytes("512M") == 512 << 20 && SessionLimits.parseBytes("4G") == 4 << 30 && SessionLimits.parseBytes("1.5g") == 3 << 29)
        #expect(SessionLimits.parseBytes("1048576") == 1 << 20 && SessionLimits.parseBytes("2T") == 2 << 40)
        for bad in ["", "M", "-1G", "1e3M", "4 G", "4GB", "12Q", "99999999999T"] { #expect(SessionLimits.parseBytes(bad) == nil, "\(bad)") }
        #expect(SessionLimits.formatBytes(96 << 20) == "96M" && SessionLimits.formatBytes(3 << 29) == "1.5G" && SessionLimits.formatBytes(1000) == "1000")
        #expect(SessionLimits(memoryBytes: 4 << 30, cpus: 0.5).summary == "memory 4G, 0.5 CPUs" && SessionLimits().summary == "none")
        #expect(SessionLimits(cpus: 0.25).cpuQuotaMicroseconds == 25_000 && SessionLimits(cpus: 0.001).cpuQuotaMicroseconds == 1000)
    }
}
