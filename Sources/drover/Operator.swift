import Foundation

/// Who runs this `drover` command, for the audit log: the account that ran `sudo` when there
/// is one (root's actions are someone's), else the account running it.
enum Operator {
    static var name: String {
        if getuid() == 0, let sudoUser = ProcessInfo.processInfo.environment["SUDO_USER"], !sudoUser.isEmpty { return sudoUser }
        guard let entry = getpwuid(getuid()) else { return "uid \(getuid())" }
        return String(cString: entry.pointee.pw_name)
    }
}
