import CPAM
import Foundation
import NIOPosix

/// Checks a user name and password with PAM (`auth-pam-service`): authentication and account
/// management, as `login` would. Runs on NIO's blocking pool: PAM modules block.
public struct PAMAuthenticator: Sendable {
    public let service: String

    public init(service: String) {
        self.service = service
    }

    /// True when PAM accepts the credentials and the account may log in now.
    public func authenticate(username: String, password: String) async -> Bool {
        let service = self.service
        return (try? await NIOThreadPool.singleton.runIfActive { Self.check(service: service, username: username, password: password) }) ?? false
    }

    static func check(service: String, username: String, password: String) -> Bool {
        guard let secret = strdup(password) else { return false }
        defer {
            memset(secret, 0, strlen(secret))
            free(secret)
        }
        // PAM asks its questions through this callback; every prompt is answered with the password.
        let converse: @convention(c) (Int32, UnsafeMutablePointer<UnsafePointer<pam_message>?>?,
                                      UnsafeMutablePointer<UnsafeMutablePointer<pam_response>?>?, UnsafeMutableRawPointer?) -> Int32 = {
            count, _, responses, context in
            guard count > 0, let responses, let context,
                  let replies = calloc(Int(count), MemoryLayout<pam_response>.size)?.assumingMemoryBound(to: pam_response.self) else {
                return PAM_CONV_ERR
            }
            let password = context.assumingMemoryBound(to: CChar.self)
            for index in 0..<Int(count) {
                replies[index].resp = strdup(password)
                replies[index].resp_retcode = 0
            }
            responses.pointee = replies
            return PAM_SUCCESS
        }
        var conversation = pam_conv(conv: converse, appdata_ptr: UnsafeMutableRawPointer(secret))
        var handle: OpaquePointer?
        guard pam_start(service, username, &conversation, &handle) == PAM_SUCCESS, let handle else { return false }
        var status = pam_authenticate(handle, 0)
        if status == PAM_SUCCESS { status = pam_acct_mgmt(handle, 0) }
        pam_end(handle, status)
        return status == PAM_SUCCESS
    }
}
