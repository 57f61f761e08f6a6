import DroverKernel
import Testing

@Suite struct ConfigFileTests {
    @Test func parsesKeysValuesCommentsAndBlankLines() async throws {
        let file = try ConfigFile(parsing: "# comment\n\n  key = value with spaces  \n\t# indented comment\nother=1=2\n", path: "f")
        #expect(file.entries.map(\.key) == ["key", "other"])
        #expect(file.entries.map(\.value) == ["value with spaces", "1=2"])
        #expect(file.entries.map(\.line) == [3, 5])
    }

    @Test func emptyValueIsKeptForTheReaderToJudge() async throws {
        let file = try ConfigFile(parsing: "key=\n", path: "f")
        #expect(file.entries.first?.value == "")
    }

    @Test(arguments: [
        ("novalue\n", "f:1: expected key=value, found 'novalue'"),
        ("a=1\n=2\n", "f:2: missing key before '='"),
        ("a=1\n\na=2\n", "f:3: duplicate key 'a' (first set on line 1); keep one"),
        ("[config]\n", "f:1: section headers are not allowed in this file; remove '[config]'"),
    ])
    func reportsMalformedLines(text: String, message: String) {
        #expect(throws: ConfigurationError.self) { try ConfigFile(parsing: text, path: "f") }
        do {
            _ = try ConfigFile(parsing: text, path: "f")
        } catch {
            #expect(error.description == message)
        }
    }

    @Test func sectionsWhenAllowed() async throws {
        let file = try ConfigFile(parsing: "[config]\na=1\n[nodes]\na=2\n", path: "f", sections: ["config", "nodes"])
        #expect(file.entries.map(\.section) == ["config", "nodes"])
        #expect(throws: ConfigurationError(file: "f", line: 1, "unknown section '[other]'; this file allows [config], [nodes]")) {
            try ConfigFile(parsing: "[other]\n", path: "f", sections: ["config", "nodes"])
        }
        #expect(throws: ConfigurationError(file: "f", line: 1, "malformed section header '[config'; write it as [name]")) {
            try ConfigFile(parsing: "[config\n", path: "f", sections: ["config"])
        }
    }
}
