public import Logging

/// What every plugin factory may use besides its own configuration section.
public struct PluginContext: Sendable {
    /// The configuration directory, absolute.
    public var configDirectory: String
    /// `server-data-dir`: node-local state.
    public var dataDirectory: String
    /// The cluster's secret, when one is loaded (e.g. to decrypt a database password).
    public var secureCookieKey: SecureCookieKey?
    public var logger: Logger

    public init(configDirectory: String, dataDirectory: String, secureCookieKey: SecureCookieKey?, logger: Logger) {
        self.configDirectory = configDirectory
        self.dataDirectory = dataDirectory
        self.secureCookieKey = secureCookieKey
        self.logger = logger
    }

    /// The context for plugins of `configuration`: its directory and `server-data-dir`. The one
    /// place a context is made from a configuration.
    public init(_ configuration: DroverConfiguration, key: SecureCookieKey?, logger: Logger) {
        self.init(configDirectory: configuration.directory, dataDirectory: configuration.server.dataDirectory,
                  secureCookieKey: key, logger: logger)
    }
}
