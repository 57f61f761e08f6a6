/// One database connection, used by one thread at a time. Parameters and results travel as text
/// (NULL as nil); the database converts them to and from the column types.
public protocol SQLExecutor {
    /// Runs a statement that returns rows.
    func query(_ sql: String, _ parameters: [String?]) throws -> [[String?]]
    /// Runs a statement; returns the number of rows it changed.
    @discardableResult
    func execute(_ sql: String, _ parameters: [String?]) throws -> Int
}

extension SQLExecutor {
    /// Runs `body` in a transaction begun with `begin`, committing on success and rolling back
    /// on any error.
    public func transaction<T>(begin: String, _ body: () throws -> T) throws -> T {
        try execute(begin, [])
        do {
            let result = try body()
            try execute("COMMIT", [])
            return result
        } catch {
            _ = try? execute("ROLLBACK", [])
            throw error
        }
    }
}
