import Foundation

/// A PostgreSQL primary and its standbys, in PostgreSQL's own streaming replication, on free
/// loopback ports in a temporary directory: for tests that fail the registry over.
///
/// The standbys are copies made by `pg_basebackup`, each streaming from the primary under its
/// own `application_name` (`pg1`, `pg2` …), and the primary commits only once ANY 1 of them has
/// the commit (`synchronous_standby_names = 'ANY 1 (pg1, pg2)'`): a commit a client was told of
/// survives the primary's loss, and one dead standby does not stop writes. Every member carries
/// that setting, so a promoted standby keeps it. Stopped and removed when the value goes away.
public final class PostgresReplicaSet: Sendable {
    /// Member 0 is the first primary; the rest are its standbys.
    public let members: [PostgresTestServer]
    private let root: String

    /// The `application_name` member `index` streams under.
    public static func name(_ index: Int) -> String { "pg\(index)" }

    /// - Parameters:
    ///   - standbys: how many standbys (at least one).
    ///   - standbyClock: a libfaketime offset (`+30s`) for the standbys' clocks, so a promotion
    ///     moves the registry to a clock that differs, as another machine's would. Needs the
    ///     `faketime` package (scripts/test.sh installs it).
    public init(standbys: Int = 2, standbyClock: String? = nil) async throws {
        let shared = try PostgresTestServer.required()
        root = NSTemporaryDirectory() + "/drover-pgset-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        if let runAs = shared.runAs { _ = try await Executable.run("/bin/chown", [runAs, root]) }
        var environment: [String] = []
        if let standbyClock {
            guard let library = Self.fakeTimeLibrary else {
                throw TestFailure("a standby clock offset needs libfaketime (apt-get install faketime; scripts/test.sh installs it)")
            }
            environment = ["LD_PRELOAD=\(library)", "FAKETIME=\(standbyClock)", "FAKETIME_DONT_FAKE_MONOTONIC=1"]
        }
        var members: [PostgresTestServer] = []
        for index in 0...max(1, standbys) {
            var member = PostgresTestServer(host: "127.0.0.1", port: try FreePort.find(), user: shared.user, binDirectory: shared.binDirectory,
                                            dataDirectory: root + "/\(Self.name(index))", runAs: shared.runAs)
            member.adminHost = root
            if index > 0 { member.environment = environment }
            members.append(member)
        }
        self.members = members
        let primary = members[0]
        let standbyNames = members.indices.dropFirst().map(Self.name).joined(separator: ", ")
        try await primary.run(primary.binDirectory + "/initdb", ["-D", primary.dataDirectory, "-U", shared.user, "-A", "trust", "--no-sync"])
        try Self.append(to: primary.dataDirectory + "/postgresql.conf", """
            listen_addresses = '127.0.0.1'
            port = \(primary.port)
            unix_socket_directories = '\(root)'
            fsync = off
            wal_keep_size = '256MB'
            synchronous_standby_names = 'ANY 1 (\(standbyNames))'
            """)
        try await primary.start()
        for (index, standby) in members.enumerated().dropFirst() {
            try await standby.run(standby.binDirectory + "/pg_basebackup", ["-h", primary.host, "-p", String(primary.port), "-U", shared.user,
                                                                             "-D", standby.dataDirectory, "-X", "stream", "-c", "fast", "--no-sync", "-R"])
            try Self.append(to: standby.dataDirectory + "/postgresql.conf", "port = \(standby.port)\n")
            try Self.append(to: standby.dataDirectory + "/postgresql.auto.conf", Self.primaryConnection(to: primary, as: index))
            try await standby.start()
        }
        // Writes wait for a synchronous standby: one must be streaming before the set is usable.
        try await eventually("a synchronous standby streams from the primary", timeout: 60) {
            let states = try await primary.psql("postgres", "SELECT sync_state FROM pg_stat_replication")
            return states.contains("quorum") || states.contains("sync")
        }
    }

    /// libfaketime's preload library, where Debian's package puts it.
    static var fakeTimeLibrary: String? {
        ["/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1", "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
         "/usr/lib/faketime/libfaketime.so.1"].first { FileManager.default.fileExists(atPath: $0) }
    }

    /// `primary_conninfo` (last in the file, so it wins) for member `index` streaming from `primary`.
    static func primaryConnection(to primary: PostgresTestServer, as index: Int) -> String {
        "primary_conninfo = 'host=\(primary.host) port=\(primary.port) user=\(primary.user) application_name=\(name(index))'\n"
    }

    static func append(to path: String, _ text: String) throws {
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        handle.seekToEndOfFile()
        handle.write(Data(("\n" + text + "\n").utf8))
        try handle.close()
    }

    /// `database.conf` text naming every member, in order, for `database` (created on the
    /// primary with ``PostgresTestServer/createDatabase(prefix:)``).
    public func databaseConf(_ database: String, extra: String = "") -> String {
        "provider=postgresql\nhost=\(members.map(\.host).joined(separator: ","))\nport=\(members.map { String($0.port) }.joined(separator: ","))\n"
            + "database=\(database)\nusername=\(members[0].user)\nconnection-timeout-seconds=5\n\(extra)"
    }

    /// Stops member `index` at once (`immediate`: no shutdown checkpoint, connections cut), as a
    /// machine that dies.
    public func stopHard(_ index: Int) async throws {
        try await members[index].run(members[index].binDirectory + "/pg_ctl", ["-D", members[index].dataDirectory, "stop", "-m", "immediate", "-w"])
    }

    /// The standby among `candidates` that has received the most WAL: the one to promote, so
    /// that the others can follow it (a standby ahead of the new primary could not).
    public func mostAdvanced(of candidates: [Int]) async throws -> Int {
        try await positions(of: candidates).max { $0.bytes < $1.bytes }.map(\.index) ?? { throw TestFailure("no standby to promote") }()
    }

    /// How far each standby among `candidates` is, in bytes of WAL: the further of what it
    /// received (flushed) and what it replayed. A standby whose WAL receiver is down (its primary
    /// gone) may report no received position; its replayed one still says how far it got.
    public func positions(of candidates: [Int]) async throws -> [(index: Int, bytes: Double)] {
        var found: [(index: Int, bytes: Double)] = []
        for index in candidates {
            let text = try await members[index].psql("postgres", "SELECT COALESCE(pg_wal_lsn_diff(pg_last_wal_receive_lsn(), '0/0'), -1), "
                                                     + "COALESCE(pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0'), -1)")
            let values = text.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: "|").compactMap { Double($0) }
            found.append((index, values.max() ?? -1))
        }
        return found
    }

    /// Promotes member `index` to primary and waits until it takes writes.
    public func promote(_ index: Int) async throws {
        try await members[index].run(members[index].binDirectory + "/pg_ctl", ["-D", members[index].dataDirectory, "promote", "-w", "-t", "60"])
    }

    /// Points standby `index` at a new primary: it follows the new timeline (PostgreSQL's
    /// default `recovery_target_timeline = 'latest'`) after a reload.
    public func follow(_ index: Int, primary: Int) async throws {
        try Self.append(to: members[index].dataDirectory + "/postgresql.auto.conf", Self.primaryConnection(to: members[primary], as: index))
        try await members[index].run(members[index].binDirectory + "/pg_ctl", ["-D", members[index].dataDirectory, "reload"])
    }

    /// Stops every member and removes the files in a process of its own, never waited for
    /// (as ``PrivatePostgres``).
    deinit {
        var script = ""
        for member in members {
            let (command, arguments) = member.asServerUser(member.binDirectory + "/pg_ctl", ["-D", member.dataDirectory, "stop", "-m", "immediate", "-w"])
            script += ([command] + arguments).map { "'" + $0.replacingOccurrences(of: "'", with: "'\\''") + "'" }.joined(separator: " ") + " >/dev/null 2>&1; "
        }
        Executable.launchDetached("/bin/sh", ["-c", script + "rm -rf '\(root)'"])
    }
}
