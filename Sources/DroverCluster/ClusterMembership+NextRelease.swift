#if DROVER_TEST_NEXT_RELEASE
import DroverKernel
import Foundation
import Logging

extension ClusterMembership {
    /// The rolling-upgrade test's second build only (`DROVER_TEST_NEXT_RELEASE`): once joined,
    /// the node asks each serving peer its build with the call this release adds. A peer of the
    /// release before does not know the call and answers 404, which is handled ("an older
    /// release"); the test reads these lines in the node's log.
    func askPeersTheirBuild() async {
        let interval = runtime.loadBalancer.heartbeatInterval
        for peer in runtime.view where peer.id != runtime.nodeID && peer.isServing(now: Date(), heartbeatInterval: interval) {
            let said: String
            do {
                let build = try await runtime.client.call(TypedCall<InternalCall.BuildAnswer>.build, on: peer)
                said = "Drover \(build.release) (protocol \(build.protocol)), by the build call"
            } catch let refusal as PeerRefusal where refusal.isUnknownCall {
                said = "an older release: it does not know the build call (\(peer.versionLabel) in the registry)"
            } catch {
                said = "no answer: \(error)"
            }
            logger.notice("peer build", metadata: ["peer": "\(peer.id)", "build": "\(said)"])
        }
    }
}
#endif
