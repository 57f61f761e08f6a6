// The plugin kit (in-memory doubles and conformance suites, on the kernel alone) comes with the
// cluster harness, so a test of the node needs one import.
@_exported import DroverPluginTesting
