#ifndef DROVER_SHIMS_H
#define DROVER_SHIMS_H
#include <spawn.h>
#include <stddef.h>

/// Adds "close every descriptor from `lowest` up" to spawn actions (glibc 2.34+), so a child
/// inherits nothing of ours but what the other actions give it.
int drover_spawn_close_from(posix_spawn_file_actions_t *actions, int lowest);

/// Returns freed heap in every malloc arena to the system (glibc `malloc_trim(0)`).
void drover_malloc_trim(void);

/// Moves the calling thread (only it) into the network namespace at `path` (`/run/netns/x`);
/// 0, or minus the errno.
int drover_enter_network_namespace(const char *path);

/// An HMAC-SHA256 key made ready once (its inner and outer padded blocks hashed), opaque here.
typedef struct {
    _Alignas(16) unsigned char state[256];
} drover_hmac_sha256_key;

/// Makes `key` ready for `drover_hmac_sha256`.
void drover_hmac_sha256_prepare(drover_hmac_sha256_key *prepared, const unsigned char *key, size_t length);

/// HMAC-SHA256 of `message` under a prepared key, into `out` (32 bytes). Reads `prepared` only:
/// one prepared key may be used from several threads at once.
void drover_hmac_sha256(const drover_hmac_sha256_key *prepared, const unsigned char *message, size_t length,
                        unsigned char out[32]);

/// SHA-256 of `data` into `out` (32 bytes), without OpenSSL 3's per-call algorithm lookup.
void drover_sha256(const unsigned char *data, size_t length, unsigned char out[32]);

/// Connects `fd` (an AF_UNIX stream socket) to `path` with the rights of `uid`/`gid` alone: for
/// the calling thread only (raw system calls, not glibc's process-wide wrappers), its file-system
/// uid and gid become the user's and its supplementary groups only `gid`, and are restored
/// before it returns. A link planted at `path` therefore reaches only what the user could reach.
/// 0, or minus the errno.
int drover_connect_unix_as(int fd, const char *path, unsigned int uid, unsigned int gid);

/// A Unix socket peer's credentials (`SO_PEERCRED`): for a connected client, the listener's.
typedef struct {
    int pid;
    unsigned int uid;
    unsigned int gid;
} drover_peer_credentials;

/// 0, or -1 with errno set.
int drover_get_peer_credentials(int fd, drover_peer_credentials *out);

/// The TCP socket whose local end is 127.0.0.1:`local_port` and whose remote end is
/// 127.0.0.1:`remote_port` (IPv4, or IPv4-mapped IPv6), looked up exactly through the kernel's
/// sock_diag (not /proc/net/tcp, whose reads may skip rows that move meanwhile): its owner's uid,
/// its inode (0 while it waits in a listener's queue) and its TCP state. 0, or minus the errno
/// (-ENOENT: no such socket).
int drover_tcp_socket(unsigned short local_port, unsigned short remote_port, unsigned int *uid, unsigned long long *inode,
                      unsigned char *state);

/// The TCP sockets listening on `port` that a connection to 127.0.0.1:`port` could reach
/// (bound to 127.0.0.1 or to any address, IPv4 or IPv6 dual-stack; not 127.0.0.2 or ::1): their
/// inodes and owners' uids, at most `capacity`. Their number, or minus the errno.
int drover_tcp_listeners(unsigned short port, unsigned long long *inodes, unsigned int *uids, int capacity);
#endif
