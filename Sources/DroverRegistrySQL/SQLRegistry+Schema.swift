public import DroverKernel

/// The registry's schema: its steps, and how they run (expand → migrate → contract;
/// docs/PROTOCOL.md §5 "Versions").
extension SQLRegistry {
    /// One step of the schema. Every release's steps follow expand → migrate → contract: an
    /// expansion only adds what the release before can ignore (a table, a nullable column, an
    /// index), so nodes of both releases share the registry while a cluster is upgraded one node
    /// at a time; a contraction removes or tightens what only the release before needed, and
    /// runs only when no `Online` node is older than it (``contract(_:)``, `drover migrate-db`).
    public struct Migration: Sendable {
        public typealias Kind = RegistrySchemaStatus.Kind
        public let version: Int
        public let kind: Kind
        public let statements: [String]

        public init(_ version: Int, _ kind: Kind = .expand, _ statements: [String]) {
            self.version = version
            self.kind = kind
            self.statements = statements
        }
    }

    /// Schema versions, each a list of statements; applied in order, once.
    var migrations: [Migration] {
        shipped.map { Migration($0.version, .expand, $0.statements) } + nextRelease
    }

    /// The shipped steps, every one an expansion so far.
    private var shipped: [(version: Int, statements: [String])] {
        let d = dialect
        return [
            (1, [
                """
                CREATE TABLE cluster (id INTEGER PRIMARY KEY CHECK (id = 1), key_hash TEXT NOT NULL, protocol TEXT NOT NULL,
                    defined_at \(d.timeType) NOT NULL, defined_by_node \(d.bigint))
                """,
                """
                CREATE TABLE node (id \(d.idType), host TEXT NOT NULL, ipv4 TEXT, port INTEGER NOT NULL, status TEXT NOT NULL,
                    last_seen \(d.timeType) NOT NULL, load1 \(d.doubleType) NOT NULL DEFAULT 0, load5 \(d.doubleType) NOT NULL DEFAULT 0,
                    load15 \(d.doubleType) NOT NULL DEFAULT 0, cpus INTEGER NOT NULL DEFAULT 1, started_at \(d.timeType) NOT NULL,
                    version TEXT NOT NULL, config_hash TEXT NOT NULL, launcher_fingerprint TEXT, UNIQUE (host, port))
                """,
                """
                CREATE TABLE session (id TEXT PRIMARY KEY, username TEXT NOT NULL, node_id \(d.bigint), pid INTEGER, port INTEGER,
                    state TEXT NOT NULL, created_at \(d.timeType) NOT NULL, last_active \(d.timeType) NOT NULL, label TEXT)
                """,
                "CREATE INDEX session_by_node ON session (node_id)",
                "CREATE INDEX session_by_username ON session (username)",
            ]),
            (2, ["ALTER TABLE node ADD COLUMN unreachable_since \(d.timeType)"]),
            (3, [
                """
                CREATE TABLE revocation (id TEXT PRIMARY KEY, username TEXT NOT NULL, cookie_digest TEXT,
                    issued_up_to \(d.doubleType) NOT NULL, expires_at \(d.doubleType) NOT NULL)
                """,
            ]),
            (4, [
                """
                CREATE TABLE audit (id \(d.idType), at \(d.timeType) NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
                    target TEXT NOT NULL, username TEXT, node_id \(d.bigint), result TEXT NOT NULL, reason TEXT NOT NULL)
                """,
                "CREATE INDEX audit_by_time ON audit (at)",
                "CREATE INDEX audit_by_username ON audit (username)",
            ]),
            // Session kinds: each session's kind; rows from before are the `default` kind.
            (5, ["ALTER TABLE session ADD COLUMN kind TEXT NOT NULL DEFAULT 'default'", "ALTER TABLE node ADD COLUMN kinds TEXT"]),
            // Failed sign-ins per name, shared by the cluster's nodes.
            (6, ["CREATE TABLE sign_in_failure (username TEXT NOT NULL, at \(d.doubleType) NOT NULL)",
                 "CREATE INDEX sign_in_failure_by_username ON sign_in_failure (username)"]),
            // Sessions stopped for exceeding their memory limit wait for their user.
            (7, ["ALTER TABLE session ADD COLUMN hold TEXT"]),
            // The database server whose clock the liveness times were written by (a failover
            // moves them to another machine's clock: rebaseClock).
            (8, ["CREATE TABLE registry_clock (id INTEGER PRIMARY KEY CHECK (id = 1), server TEXT NOT NULL, since \(d.timeType) NOT NULL)"]),
            // Session origins' sign-in tickets, each usable once on any node.
            (9, ["CREATE TABLE used_ticket (nonce TEXT PRIMARY KEY, expires_at \(d.doubleType) NOT NULL)"]),
            // Rolling upgrades: the protocol and the newest schema each node knows (NULL: a node of
            // a release before them), and each schema step's kind and time.
            (10, ["ALTER TABLE node ADD COLUMN protocol INTEGER", "ALTER TABLE node ADD COLUMN schema_known INTEGER",
                  "ALTER TABLE schema_version ADD COLUMN kind TEXT", "ALTER TABLE schema_version ADD COLUMN applied_at \(d.doubleType)"]),
        ]
    }

    /// The newest schema version this build knows.
    public var currentVersion: Int { migrations.last?.version ?? 0 }

    /// The first version whose `schema_version` rows record their kind.
    static let kindsRecordedFrom = 10

    /// Applies the steps this build knows and the registry lacks, in order, in one write
    /// transaction (all or nothing), up to the first contraction: contractions wait for
    /// ``contract(_:)``. A registry a newer release has expanded is used as it is (its additions
    /// are for that release); one it has contracted is refused.
    public func migrate(_ db: some SQLExecutor) throws {
        try inMigration(db) { applied in
            if applied > currentVersion {
                guard applied >= Self.kindsRecordedFrom else {
                    throw RegistryError.unavailable("the registry schema is version \(applied), newer than this build's \(currentVersion); upgrade Drover on this node")
                }
                if let contracted = try newerContraction(db) {
                    throw RegistryError.unavailable("the registry schema is version \(applied), and a newer release contracted it at step \(contracted): "
                        + "this build (schema \(currentVersion)) can no longer use it; upgrade Drover on this node")
                }
                return
            }
            for migration in migrations where migration.version > applied {
                if migration.kind == .contract { break }
                try apply(migration, db)
            }
        }
    }

    /// The registry's schema steps, this build's pending ones, and the nodes that hold back the
    /// next contraction.
    public func schemaStatus(_ db: some SQLExecutor) throws -> RegistrySchemaStatus {
        // A database no node has used yet has no schema_version table (nor node table): nothing ran.
        let applied = try? appliedVersion(db)
        var steps: [RegistrySchemaStatus.Step] = []
        if let applied {
            // `kind` and `applied_at` exist from the step that records them.
            let columns = applied >= Self.kindsRecordedFrom ? "version, kind, applied_at" : "version"
            for row in try db.query("SELECT \(columns) FROM schema_version ORDER BY version", []) {
                guard let version = row[0].flatMap({ Int($0) }) else { continue }
                let kind = row.count > 1 ? row[1].flatMap(Migration.Kind.init(rawValue:)) : nil
                steps.append(.init(version: version, kind: kind ?? .expand, appliedAt: row.count > 2 ? row[2].flatMap { Double($0) } : nil))
            }
        }
        let pending = migrations.filter { $0.version > applied ?? 0 }.map { RegistrySchemaStatus.Step(version: $0.version, kind: $0.kind, appliedAt: nil) }
        let contraction = applied == nil ? nil : pending.first { $0.kind == .contract }
        let tooOld = try contraction.map { try nodesTooOld(for: $0.version, db) } ?? []
        return RegistrySchemaStatus(applied: steps, buildVersion: currentVersion, pending: pending, tooOld: tooOld)
    }

    /// Applies every pending step, contractions included, in one write transaction, once no
    /// `Online` node knows a schema older than the contraction; else nothing changes and the
    /// error names the nodes. Returns the steps applied.
    public func contract(_ db: some SQLExecutor) throws -> [Int] {
        try inMigration(db) { applied in
            guard applied <= currentVersion else {
                throw RegistryError.unavailable("the registry schema is version \(applied), newer than this build's \(currentVersion); run migrate-db from the newest release")
            }
            var done: [Int] = []
            for migration in migrations where migration.version > applied {
                if migration.kind == .contract {
                    let old = try nodesTooOld(for: migration.version, db)
                    if !old.isEmpty {
                        throw RegistryError.unavailable("step \(migration.version) contracts the schema, and these Online nodes know an older one: "
                            + "\(RegistrySchemaStatus.naming(old)); upgrade them (or stop them) first; nothing was changed")
                    }
                }
                try apply(migration, db)
                done.append(migration.version)
            }
            return done
        }
    }

    /// Runs `body` with the applied schema version inside the one write transaction every schema
    /// change takes, under the migration lock, so that nodes starting together (and `migrate-db`)
    /// change the schema one at a time.
    private func inMigration<T>(_ db: some SQLExecutor, _ body: (_ applied: Int) throws -> T) throws -> T {
        try db.transaction(begin: dialect.beginWrite) {
            if let lock = dialect.migrationLock { _ = try db.query(lock, []) }
            try db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)", [])
            return try body(try appliedVersion(db))
        }
    }

    private func apply(_ migration: Migration, _ db: some SQLExecutor) throws {
        for statement in migration.statements { try db.execute(statement, []) }
        if migration.version >= Self.kindsRecordedFrom {
            try db.execute("INSERT INTO schema_version (version, kind, applied_at) VALUES (\(p(1)), \(p(2)), \(dialect.epoch(dialect.now)))",
                           [String(migration.version), migration.kind.rawValue])
        } else {
            try db.execute("INSERT INTO schema_version (version) VALUES (\(p(1)))", [String(migration.version)])
        }
    }

    private func appliedVersion(_ db: some SQLExecutor) throws -> Int {
        try db.query("SELECT MAX(version) FROM schema_version", []).first?.first.flatMap { $0 }.flatMap(Int.init) ?? 0
    }

    /// The first contraction past this build's schema, if a newer release ran one (the
    /// registry records kinds: ``kindsRecordedFrom``).
    private func newerContraction(_ db: some SQLExecutor) throws -> Int? {
        try db.query("SELECT MIN(version) FROM schema_version WHERE version > \(p(1)) AND kind = 'contract'", [String(currentVersion)])
            .first?.first.flatMap { $0 }.flatMap(Int.init)
    }

    /// `Online` nodes that know a schema older than `version`.
    private func nodesTooOld(for version: Int, _ db: some SQLExecutor) throws -> [NodeRecord] {
        try db.query("SELECT \(nodeSelect) FROM node WHERE status = 'Online' ORDER BY id", []).map { try RegistryRows.node($0) }
            .filter { $0.schemaKnown < version }
    }
}
