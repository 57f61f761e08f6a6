public import DroverKernel
import Foundation

/// The cgroup hierarchies of this machine as the calling process sees them, read from
/// `/proc/self/mounts` and `/proc/self/cgroup`: cgroup v2 (the unified hierarchy, at
/// `/sys/fs/cgroup` or, on a hybrid host, `/sys/fs/cgroup/unified`) and the v1 hierarchies
/// (`/sys/fs/cgroup/memory`, `/sys/fs/cgroup/cpu` …).
///
/// Sessions' cgroups are made below the caller's own, in a folder `drover-sessions`. On v2 the
/// kernel enables a controller for a cgroup's children only while no process sits in the
/// cgroup itself, so droverd first moves itself into a leaf `droverd` beside that folder
/// (``prepareForSessions()``); the guards it starts are born there, outside the limited groups.
public struct CgroupHost: Sendable, Equatable {
    public struct Hierarchy: Sendable, Equatable {
        /// Where it is mounted.
        public var mount: String
        /// The caller's cgroup in it (`/` for its root).
        public var own: String
        /// v1: the controllers bound to it. v2: those the caller's cgroup offers its children
        /// (its `cgroup.controllers`).
        public var controllers: Set<String>

        public init(mount: String, own: String, controllers: Set<String>) {
            self.mount = mount
            self.own = own
            self.controllers = controllers
        }

        /// The folder of the caller's cgroup.
        public var ownFolder: String { mount + (own == "/" ? "" : own) }
    }

    public var unified: Hierarchy?
    public var v1: [Hierarchy]

    /// The leaf droverd moves itself into on v2.
    public static let leafName = "droverd"
    /// The folder of every session's cgroup, below droverd's.
    public static let sessionsFolder = "drover-sessions"

    public init(unified: Hierarchy?, v1: [Hierarchy]) {
        self.unified = unified
        self.v1 = v1
    }

    /// As the calling process sees them now.
    public static func current() -> CgroupHost {
        let mounts = (try? String(contentsOfFile: "/proc/self/mounts", encoding: .utf8)) ?? ""
        let memberships = (try? String(contentsOfFile: "/proc/self/cgroup", encoding: .utf8)) ?? ""
        return CgroupHost(mounts: mounts, memberships: memberships) { folder in
            try? String(contentsOfFile: folder + "/cgroup.controllers", encoding: .utf8)
        }
    }

    /// From the text of `/proc/self/mounts` and `/proc/self/cgroup`; `controllers` reads a v2
    /// folder's `cgroup.controllers`.
    public init(mounts: String, memberships: String, controllers: (String) -> String?) {
        var own1: [Set<String>: String] = [:]
        var own2: String?
        for line in memberships.split(separator: "\n") {
            let fields = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard fields.count == 3 else { continue }
            if fields[0] == "0", fields[1].isEmpty {
                own2 = String(fields[2])
            } else {
                own1[Set(fields[1].split(separator: ",").map(String.init))] = String(fields[2])
            }
        }
        var unified: Hierarchy?
        var v1: [Hierarchy] = []
        for line in mounts.split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count >= 4 else { continue }
            let mount = String(fields[1])
            if fields[2] == "cgroup2", unified == nil, let own = own2 {
                var hierarchy = Hierarchy(mount: mount, own: own, controllers: [])
                hierarchy.controllers = Set((controllers(hierarchy.ownFolder) ?? "").split(whereSeparator: \.isWhitespace).map(String.init))
                unified = hierarchy
            } else if fields[2] == "cgroup" {
                let options = Set(fields[3].split(separator: ",").map(String.init))
                // Its line in /proc/self/cgroup names the same controllers (or name=…).
                guard let entry = own1.first(where: { !$0.key.isEmpty && $0.key.isSubset(of: options) }) else { continue }
                v1.append(Hierarchy(mount: mount, own: entry.value, controllers: entry.key.filter { !$0.hasPrefix("name=") }))
            }
        }
        self.init(unified: unified, v1: v1)
    }

    /// The v1 hierarchy that carries `controller`.
    public func v1Hierarchy(_ controller: String) -> Hierarchy? {
        v1.first { $0.controllers.contains(controller) }
    }

    /// The parent folder of the sessions' v2 cgroups: beside droverd's leaf when it made one.
    public func sessionsParentV2() -> String? {
        guard let unified else { return nil }
        var own = unified.own
        if (own as NSString).lastPathComponent == Self.leafName { own = (own as NSString).deletingLastPathComponent }
        return unified.mount + (own == "/" ? "" : own) + "/" + Self.sessionsFolder
    }

    /// How a controller can be used for sessions here.
    public enum Support: Sendable, Equatable, CustomStringConvertible {
        /// On cgroup v2, in the folder of the sessions' cgroups.
        case v2(String)
        /// On a v1 hierarchy mounted at this folder.
        case v1(String)
        /// Not at all, and why.
        case missing(String)

        public var isUsable: Bool { if case .missing = self { false } else { true } }

        public var description: String {
            switch self {
            case .v2(let folder): "cgroup v2 (\(folder))"
            case .v1(let mount): "cgroup v1 (\(mount))"
            case .missing(let why): "missing: \(why)"
            }
        }
    }

    /// Whether sessions' cgroups can use `controller`: v2 when droverd's cgroup offers it to
    /// its children, else a v1 hierarchy droverd may write in (root), else not.
    public func support(_ controller: CgroupController, writable: ((String) -> Bool)? = nil) -> Support {
        let canWrite: (String) -> Bool = writable ?? { access($0, W_OK) == 0 }
        if let unified, unified.controllers.contains(controller.rawValue), let parent = sessionsParentV2() {
            let folder = (parent as NSString).deletingLastPathComponent
            // Once droverd made the sessions' folder, the controller must be enabled in it.
            if let enabled = try? String(contentsOfFile: parent + "/cgroup.subtree_control", encoding: .utf8),
               !enabled.split(whereSeparator: \.isWhitespace).contains(where: { $0 == controller.rawValue || $0 == "+" + controller.rawValue }) {
                return .missing("cgroup v2 offers \(controller.rawValue), but it is not enabled in \(parent)/cgroup.subtree_control (droverd enables it at start when a kind has limits; see its log)")
            }
            if canWrite(folder) { return .v2(parent) }
            return .missing("cgroup v2 offers \(controller.rawValue), but \(folder) is not droverd's to write (run droverd as root, or give its unit Delegate=yes)")
        }
        if let hierarchy = v1Hierarchy(controller.rawValue) {
            if canWrite(hierarchy.ownFolder) { return .v1(hierarchy.mount) }
            return .missing("\(hierarchy.ownFolder) (cgroup v1 \(controller.rawValue)) is not droverd's to write; run droverd as root")
        }
        if unified != nil {
            return .missing("the \(controller.rawValue) controller is not enabled for droverd's cgroup on cgroup v2 and no v1 \(controller.rawValue) hierarchy is mounted")
        }
        return .missing("no cgroup hierarchy offers \(controller.rawValue) (is /sys/fs/cgroup mounted?)")
    }

    /// On cgroup v2 with controllers droverd's cgroup offers: moves the calling process (all its
    /// threads) into a leaf `droverd` of its cgroup, and enables `controllers` (those the kinds'
    /// limits need) for the sessions' folder beside it. Nothing to do elsewhere (v1, or the v2
    /// root). The cpu controller makes each session a scheduling group of its own, which costs
    /// proxied requests their tail latency: it is enabled only for a kind with a `cpu-limit`.
    /// - Returns: what could not be done, for a warning; empty when all went well.
    public static func prepareForSessions(_ host: CgroupHost = .current(), pid: Int32? = nil,
                                          controllers: [CgroupController] = CgroupController.allCases) -> [String] {
        let pid = pid ?? getpid()
        guard let unified = host.unified else { return [] }
        let wanted = controllers.map(\.rawValue).filter { unified.controllers.contains($0) }
        guard !wanted.isEmpty else { return [] }
        var problems: [String] = []
        var own = unified.own
        if own != "/", (own as NSString).lastPathComponent != leafName {
            let leaf = unified.ownFolder + "/" + leafName
            mkdir(leaf, 0o755)
            if write("\(pid)", to: leaf + "/cgroup.procs") {
                own = own + "/" + leafName
            } else {
                problems.append("cannot move droverd into \(leaf) (\(String(cString: strerror(errno)))), so cgroup v2 cannot limit its sessions")
                return problems
            }
        }
        guard let parent = CgroupHost(unified: Hierarchy(mount: unified.mount, own: own, controllers: unified.controllers), v1: host.v1).sessionsParentV2() else { return problems }
        let enable = wanted.map { "+" + $0 }.joined(separator: " ")
        let above = (parent as NSString).deletingLastPathComponent
        if own != "/", !write(enable, to: above + "/cgroup.subtree_control") {
            problems.append("cannot enable \(wanted.joined(separator: ", ")) in \(above)/cgroup.subtree_control (\(String(cString: strerror(errno)))); another process may still sit in \(above)")
            return problems
        }
        mkdir(parent, 0o755)
        if !write(enable, to: parent + "/cgroup.subtree_control") {
            problems.append("cannot enable \(wanted.joined(separator: ", ")) in \(parent)/cgroup.subtree_control (\(String(cString: strerror(errno))))")
        }
        return problems
    }

    /// Writes `text` to a cgroup interface file (`cgroup.procs`, `memory.max`, `cgroup.kill` …).
    public static func write(_ text: String, to path: String) -> Bool {
        let fd = open(path, O_WRONLY)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        return text.withCString { Foundation.write(fd, $0, strlen($0)) } > 0
    }

    /// The processes in the cgroup folder `path` (its `cgroup.procs`).
    public static func members(of path: String) -> [Int32] {
        ((try? String(contentsOfFile: path + "/cgroup.procs", encoding: .utf8)) ?? "").split(separator: "\n").compactMap { Int32($0) }
    }
}

/// The cgroup folders of one session: where its processes are held together (v2, or v1's
/// freezer), and where its memory and CPU are limited and measured. A guard reports them in its
/// `started` event as `TYPE:PATH` words (`cgroup2:…`, `freezer:…`, `memory:…`, `cpu:…`,
/// `cpuacct:…`); on v2 every controller is in the one `cgroup2` folder.
public struct SessionCgroupSet: Sendable, Equatable {
    public var unified: String?
    public var freezer: String?
    /// v1 folders, by hierarchy type.
    public var memory: String?
    public var cpu: String?
    public var cpuacct: String?

    public init(unified: String? = nil, freezer: String? = nil, memory: String? = nil, cpu: String? = nil, cpuacct: String? = nil) {
        self.unified = unified
        self.freezer = freezer
        self.memory = memory
        self.cpu = cpu
        self.cpuacct = cpuacct
    }

    /// The folder whose `cgroup.procs` lists every process of the session (each of them does;
    /// the one that holds them together first).
    public var processes: String? { unified ?? freezer ?? memory ?? cpu ?? cpuacct }

    /// Every folder, each once.
    public var folders: [String] {
        var seen: [String] = []
        for folder in [unified, freezer, memory, cpu, cpuacct].compactMap({ $0 }) where !seen.contains(folder) { seen.append(folder) }
        return seen
    }

    /// The `started` event's words.
    public var words: String {
        var words: [String] = []
        if let unified { words.append("cgroup2:" + unified) }
        if let freezer { words.append("freezer:" + freezer) }
        if let memory { words.append("memory:" + memory) }
        if let cpu { words.append("cpu:" + cpu) }
        if let cpuacct { words.append("cpuacct:" + cpuacct) }
        return words.joined(separator: " ")
    }

    /// Reads the `started` event's words; nil when none names a cgroup (`process-group`).
    public init?(words: String) {
        for word in words.split(separator: " ") {
            guard let colon = word.firstIndex(of: ":") else { continue }
            let path = String(word[word.index(after: colon)...])
            switch word[..<colon] {
            case "cgroup2": unified = path
            case "freezer": freezer = path
            case "memory": memory = path
            case "cpu": cpu = path
            case "cpuacct": cpuacct = path
            default: continue
            }
        }
        if folders.isEmpty { return nil }
    }

    /// The session's cgroups from `/proc/PID/cgroup` of its main process, only those below a
    /// `drover-sessions/<id>` folder (a pid reused by another process names none).
    public static func of(pid: Int32, sessionID: String, host: CgroupHost = .current()) -> SessionCgroupSet? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/cgroup", encoding: .utf8) else { return nil }
        let suffix = "/" + CgroupHost.sessionsFolder + "/" + sessionID
        var set = SessionCgroupSet()
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard fields.count == 3, fields[2].hasSuffix(suffix) else { continue }
            let path = String(fields[2])
            if fields[0] == "0", fields[1].isEmpty, let unified = host.unified {
                set.unified = unified.mount + path
                continue
            }
            let controllers = Set(fields[1].split(separator: ",").map(String.init))
            guard let hierarchy = host.v1.first(where: { !$0.controllers.isDisjoint(with: controllers) }) else { continue }
            if controllers.contains("freezer") { set.freezer = hierarchy.mount + path }
            if controllers.contains("memory") { set.memory = hierarchy.mount + path }
            if controllers.contains("cpu") { set.cpu = hierarchy.mount + path }
            if controllers.contains("cpuacct") { set.cpuacct = hierarchy.mount + path }
        }
        return set.folders.isEmpty ? nil : set
    }

    // MARK: reading

    /// What the session uses now, from its cgroups' own counters.
    public struct Usage: Sendable, Equatable, Codable {
        /// Bytes of memory charged to it (page cache included, as the limit counts it).
        public var memoryBytes: UInt64?
        /// CPU seconds used since it started.
        public var cpuSeconds: Double?
        /// Times the kernel's OOM killer ended one of its processes.
        public var oomKills: Int?

        public init(memoryBytes: UInt64? = nil, cpuSeconds: Double? = nil, oomKills: Int? = nil) {
            self.memoryBytes = memoryBytes
            self.cpuSeconds = cpuSeconds
            self.oomKills = oomKills
        }
    }

    public func usage() -> Usage {
        Usage(memoryBytes: memoryBytes(), cpuSeconds: cpuSeconds(), oomKills: oomKills())
    }

    public func memoryBytes() -> UInt64? {
        if let memory, let value = Self.number(memory + "/memory.usage_in_bytes") { return UInt64(value) }
        if let unified, let value = Self.number(unified + "/memory.current") { return UInt64(value) }
        return nil
    }

    public func cpuSeconds() -> Double? {
        if let unified, let value = Self.field("usage_usec", in: unified + "/cpu.stat") { return Double(value) / 1e6 }
        if let cpuacct, let value = Self.number(cpuacct + "/cpuacct.usage") { return Double(value) / 1e9 }
        if let cpu, let value = Self.number(cpu + "/cpuacct.usage") { return Double(value) / 1e9 }
        // No accounting cgroup (v1, no cpu-limit, cpuacct mounted with cpu): what the session's
        // processes have used, as /proc counts it (the exited ones' time is not kept).
        guard let processes else { return nil }
        let members = CgroupHost.members(of: processes)
        guard !members.isEmpty else { return nil }
        return members.reduce(0.0) { $0 + (Self.processCPUSeconds($1) ?? 0) }
    }

    /// User and system time of process `pid` (`/proc/PID/stat`, fields 14 and 15), in seconds.
    public static func processCPUSeconds(_ pid: Int32) -> Double? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = text.lastIndex(of: ")") else { return nil }
        // After the command's name (which may hold spaces), from field 3 on.
        let fields = text[text.index(after: close)...].split(separator: " ")
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// OOM kills in the session's memory cgroup (v1 `memory.oom_control`, v2 `memory.events`),
    /// whoever's: the machine's own OOM killer's count too.
    public func oomKills() -> Int? {
        if let memory, let value = Self.field("oom_kill", in: memory + "/memory.oom_control") { return Int(value) }
        if let unified, let value = Self.field("oom_kill", in: unified + "/memory.events") { return Int(value) }
        return nil
    }

    /// Signs that the session's use reached its own limit: v2 `memory.events`' `oom` (the
    /// cgroup's own OOM events); v1 `memory.failcnt` and `memory.memsw.failcnt`, and one more
    /// once `memory.max_usage_in_bytes` came within 1 MiB of the limit (some kernels leave the
    /// fail counts at zero when the OOM killer runs).
    public func limitEvents() -> Int? {
        if let memory, let value = Self.number(memory + "/memory.failcnt") {
            var events = Int(value) + Int(Self.number(memory + "/memory.memsw.failcnt") ?? 0)
            if let peak = Self.number(memory + "/memory.max_usage_in_bytes"), let limit = Self.number(memory + "/memory.limit_in_bytes"),
               peak + (1 << 20) >= limit {
                events += 1
            }
            return events
        }
        if let unified, let value = Self.field("oom", in: unified + "/memory.events") { return Int(value) }
        return nil
    }

    /// What the memory counters said when the session's cgroups were made.
    public struct MemoryBaseline: Sendable, Equatable {
        public var kills: Int
        public var limitEvents: Int

        public init(kills: Int, limitEvents: Int) {
            self.kills = kills
            self.limitEvents = limitEvents
        }
    }

    public var memoryBaseline: MemoryBaseline { MemoryBaseline(kills: oomKills() ?? 0, limitEvents: limitEvents() ?? 0) }

    /// Whether a process of the session was OOM-killed because the session reached its own
    /// memory limit since `baseline` (not by the machine's OOM killer for another's use).
    public func wentOverMemoryLimit(since baseline: MemoryBaseline) -> Bool {
        (oomKills() ?? 0) > baseline.kills && (limitEvents() ?? 0) > baseline.limitEvents
    }

    static func number(_ path: String) -> UInt64? {
        (try? String(contentsOfFile: path, encoding: .utf8)).flatMap { UInt64($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
    }

    /// The value of `name` in a flat-keyed file (`name value` lines).
    static func field(_ name: String, in path: String) -> UInt64? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: " ")
            if parts.count == 2, parts[0] == name { return UInt64(parts[1]) }
        }
        return nil
    }

    // MARK: making

    public struct LimitError: Error, CustomStringConvertible {
        public var description: String
    }

    /// Makes session `id`'s cgroups below the caller's (the guard's): one on v2 where it is
    /// mounted (else v1's freezer) to hold every process, and on v1 one in each hierarchy of
    /// memory, cpu and cpuacct, where limits are set and use is measured. Sets `limits`;
    /// throws when one cannot be set (a limit asked for is never silently dropped).
    /// - Returns: nil when no cgroup could be made at all (not root; none mounted) and no limit
    ///   was asked for.
    public static func make(_ id: String, limits: SessionLimits, host: CgroupHost = .current()) throws(LimitError) -> SessionCgroupSet? {
        var set = SessionCgroupSet()
        var made: [String] = []
        func fail(_ message: String) -> LimitError {
            for folder in made.reversed() { rmdir(folder) }
            return LimitError(description: message)
        }
        func folder(_ parent: String) -> String? {
            mkdir(parent, 0o755)
            let path = parent + "/" + id
            // A folder an earlier start left (its guard killed) is made anew, so its counters
            // (OOM kills above all) start from zero; one that still holds a process is kept.
            if mkdir(path, 0o755) != 0, errno == EEXIST, rmdir(path) == 0 { mkdir(path, 0o755) }
            guard access(path + "/cgroup.procs", W_OK) == 0 else { return nil }
            made.append(path)
            return path
        }
        if let parent = host.sessionsParentV2() {
            set.unified = folder(parent)
        }
        if set.unified == nil, let freezer = host.v1Hierarchy("freezer") {
            set.freezer = folder(freezer.ownFolder + "/" + CgroupHost.sessionsFolder)
        }
        let v2Controllers = host.unified?.controllers ?? []
        for name in ["memory", "cpu", "cpuacct"] {
            // v2's folder holds the controllers it offers; cpuacct only measures, where no v2 folder can.
            if name == "cpuacct" ? set.unified != nil : v2Controllers.contains(name) { continue }
            guard let hierarchy = host.v1Hierarchy(name) else { continue }
            // A cgroup of v1's cpu controller is a scheduling group of its own: the session then
            // competes with droverd's threads as one entity, and waits for the CPU behind them
            // (the proxy's p99 went from 2.4 ms to 14 ms, docs/BENCHMARKS.md). Joined only to
            // limit CPU (cpuacct too where it is mounted with cpu); the use is read from cpuacct
            // where it is apart, else from the session's processes (``cpuSeconds()``).
            if limits.cpuQuotaMicroseconds == nil, hierarchy.controllers.contains("cpu") { continue }
            let existing = [set.memory, set.cpu, set.cpuacct].compactMap { $0 }.first { $0.hasPrefix(hierarchy.mount + "/") }
            let path = existing ?? folder(hierarchy.ownFolder + "/" + CgroupHost.sessionsFolder)
            switch name {
            case "memory": set.memory = path
            case "cpu": set.cpu = path
            default: set.cpuacct = path
            }
        }
        if let bytes = limits.memoryBytes {
            if let memory = set.memory {
                guard CgroupHost.write("\(bytes)", to: memory + "/memory.limit_in_bytes") else {
                    throw fail("cannot set memory-limit in \(memory)/memory.limit_in_bytes (\(String(cString: strerror(errno))))")
                }
                // Memory and swap together, where the kernel counts swap: no swap beyond the limit.
                // Where it does not, the session is kept from swapping at all.
                if access(memory + "/memory.memsw.limit_in_bytes", F_OK) == 0 {
                    _ = CgroupHost.write("\(bytes)", to: memory + "/memory.memsw.limit_in_bytes")
                } else {
                    _ = CgroupHost.write("0", to: memory + "/memory.swappiness")
                }
            } else if let unified = set.unified, v2Controllers.contains("memory") {
                guard CgroupHost.write("\(bytes)", to: unified + "/memory.max") else {
                    throw fail("cannot set memory-limit in \(unified)/memory.max (\(String(cString: strerror(errno))))")
                }
                if access(unified + "/memory.swap.max", F_OK) == 0 { _ = CgroupHost.write("0", to: unified + "/memory.swap.max") }
                // One process over the limit ends them all: the session, not a piece of it.
                _ = CgroupHost.write("1", to: unified + "/memory.oom.group")
            } else {
                throw fail("memory-limit is set, but this node has no memory cgroup controller for sessions (\(host.support(.memory)))")
            }
        }
        if let quota = limits.cpuQuotaMicroseconds {
            let period = SessionLimits.cpuPeriodMicroseconds
            if let cpu = set.cpu {
                guard CgroupHost.write("\(period)", to: cpu + "/cpu.cfs_period_us"), CgroupHost.write("\(quota)", to: cpu + "/cpu.cfs_quota_us") else {
                    throw fail("cannot set cpu-limit in \(cpu)/cpu.cfs_quota_us (\(String(cString: strerror(errno))))")
                }
            } else if let unified = set.unified, v2Controllers.contains("cpu") {
                guard CgroupHost.write("\(quota) \(period)", to: unified + "/cpu.max") else {
                    throw fail("cannot set cpu-limit in \(unified)/cpu.max (\(String(cString: strerror(errno))))")
                }
            } else {
                throw fail("cpu-limit is set, but this node has no cpu cgroup controller for sessions (\(host.support(.cpu)))")
            }
        }
        return set.folders.isEmpty ? nil : set
    }

    /// Removes every folder (each empty by now). A folder whose last process is still being
    /// torn down by the kernel (an OOM kill under load) refuses with `EBUSY` for a moment: it is
    /// tried again for up to `seconds`, rather than left behind for ever.
    /// - Returns: the folders that could not be removed.
    @discardableResult
    public func remove(within seconds: Double = 2) -> [String] {
        var left = folders
        let deadline = Date().addingTimeInterval(seconds)
        while true {
            left = left.filter { rmdir($0) != 0 && errno != ENOENT }
            if left.isEmpty || Date() >= deadline { return left }
            usleep(20_000)
        }
    }
}
