/// An error that says how a request that met it is answered: its HTTP status, and whether the
/// client should come back. Every error type that can reach the user API or the internal API
/// conforms; anything else (a bug, an error of a library) is answered 500.
public protocol CodedError: Error {
    /// The HTTP status of the answer.
    var httpStatus: Int { get }
    /// Seconds for `Retry-After`, for the answers worth retrying; nil otherwise.
    var retryAfterSeconds: Int? { get }
}

extension RegistryError: CodedError {
    /// 503 (retry) when the database cannot be reached or its store is closed; 409 for a
    /// duplicate or a target that is not empty; 500 for rows Drover cannot read.
    public var httpStatus: Int {
        switch self {
        case .unavailable, .closed: 503
        case .duplicateSession, .notEmpty: 409
        case .userLimitReached: 429
        case .corrupt: 500
        }
    }

    public var retryAfterSeconds: Int? {
        switch self {
        case .unavailable, .closed: 5
        case .duplicateSession, .notEmpty, .corrupt, .userLimitReached: nil
        }
    }
}

extension PlacementError: CodedError {
    /// 503 (retry) when no node can take a session now; 500 for a balancer that chose badly.
    public var httpStatus: Int {
        switch self {
        case .noCandidates, .noEligibleNode: 503
        case .invalidChoice: 500
        }
    }

    public var retryAfterSeconds: Int? {
        if case .invalidChoice = self { nil } else { 10 }
    }
}
