#define _GNU_SOURCE
#include <malloc.h>
#include <spawn.h>
#include <sched.h>
#include <fcntl.h>
#include <unistd.h>
#include <errno.h>
#include <string.h>
#include <stdlib.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/syscall.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <linux/inet_diag.h>
#include "drover_shims.h"

int drover_spawn_close_from(posix_spawn_file_actions_t *actions, int lowest) {
    return posix_spawn_file_actions_addclosefrom_np(actions, lowest);
}

void drover_malloc_trim(void) {
    malloc_trim(0);
}

int drover_enter_network_namespace(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    int result = setns(fd, CLONE_NEWNET) == 0 ? 0 : -errno;
    close(fd);
    return result;
}

int drover_connect_unix_as(int fd, const char *path, unsigned int uid, unsigned int gid) {
    struct sockaddr_un address;
    memset(&address, 0, sizeof address);
    address.sun_family = AF_UNIX;
    size_t length = strlen(path);
    if (length >= sizeof address.sun_path) return -ENAMETOOLONG;
    memcpy(address.sun_path, path, length);
    if (geteuid() != 0) {
        // Not root: droverd has no rights beyond its own user's, who is the session's.
        return connect(fd, (struct sockaddr *)&address, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + length + 1)) == 0 ? 0 : -errno;
    }
    gid_t saved[256];
    int count = getgroups(256, saved);
    if (count < 0) return -errno;
    gid_t only = (gid_t)gid;
    // Per thread: the kernel keeps credentials per thread, and these raw calls change only ours.
    if (syscall(SYS_setgroups, 1, &only) != 0) return -errno;
    long oldGid = syscall(SYS_setfsgid, gid);
    long oldUid = syscall(SYS_setfsuid, uid);
    int result, error;
    // setfsuid says nothing of a failure (a uid not mapped in this user namespace): ask for the
    // value in force (an invalid uid changes nothing and returns it) and connect only as the user.
    if (syscall(SYS_setfsuid, (uid_t)-1) != (long)uid || syscall(SYS_setfsgid, (gid_t)-1) != (long)gid) {
        result = -1;
        error = EPERM;
    } else {
        result = connect(fd, (struct sockaddr *)&address, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + length + 1));
        error = result == 0 ? 0 : errno;
    }
    syscall(SYS_setfsuid, oldUid);
    syscall(SYS_setfsgid, oldGid);
    // A thread of droverd's left with a user's credentials would act as that user from then on.
    if (syscall(SYS_setgroups, count, saved) != 0 || syscall(SYS_setfsuid, (uid_t)-1) != oldUid) abort();
    return result == 0 ? 0 : -error;
}

int drover_get_peer_credentials(int fd, drover_peer_credentials *out) {
    struct ucred credentials;
    socklen_t length = sizeof credentials;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &credentials, &length) != 0) return -1;
    out->pid = credentials.pid;
    out->uid = credentials.uid;
    out->gid = credentials.gid;
    return 0;
}

/// Sends one sock_diag request for TCP sockets of `family` and hands each answer to `each`
/// (which returns nonzero to stop). 0 when the answers were read, or minus the errno.
static int drover_tcp_diag(int family, int dump, unsigned int states, const struct inet_diag_sockid *id,
                           int (*each)(const struct inet_diag_msg *, void *), void *context) {
    int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    if (fd < 0) return -errno;
    struct {
        struct nlmsghdr header;
        struct inet_diag_req_v2 request;
    } message;
    memset(&message, 0, sizeof message);
    message.header.nlmsg_len = sizeof message;
    message.header.nlmsg_type = SOCK_DIAG_BY_FAMILY;
    message.header.nlmsg_flags = NLM_F_REQUEST | (dump ? NLM_F_DUMP : 0);
    message.request.sdiag_family = (unsigned char)family;
    message.request.sdiag_protocol = IPPROTO_TCP;
    message.request.idiag_states = states;
    if (id) message.request.id = *id;
    struct sockaddr_nl kernel;
    memset(&kernel, 0, sizeof kernel);
    kernel.nl_family = AF_NETLINK;
    if (sendto(fd, &message, sizeof message, 0, (struct sockaddr *)&kernel, sizeof kernel) < 0) {
        int error = errno;
        close(fd);
        return -error;
    }
    long buffer[2048];
    int result = 0;
    for (;;) {
        ssize_t length = recv(fd, buffer, sizeof buffer, 0);
        if (length < 0) {
            if (errno == EINTR) continue;
            result = -errno;
            break;
        }
        if (length == 0) break;
        int finished = 0;
        for (struct nlmsghdr *header = (struct nlmsghdr *)buffer; NLMSG_OK(header, (unsigned int)length);
             header = NLMSG_NEXT(header, length)) {
            if (header->nlmsg_type == NLMSG_DONE) { finished = 1; break; }
            if (header->nlmsg_type == NLMSG_ERROR) {
                struct nlmsgerr *error = (struct nlmsgerr *)NLMSG_DATA(header);
                result = error->error;
                finished = 1;
                break;
            }
            if (header->nlmsg_type == SOCK_DIAG_BY_FAMILY && each((const struct inet_diag_msg *)NLMSG_DATA(header), context)) {
                finished = 1;
                break;
            }
        }
        // An exact lookup answers with one message and no NLMSG_DONE.
        if (finished || !dump) break;
    }
    close(fd);
    return result;
}

struct drover_tcp_found {
    int found;
    unsigned int uid;
    unsigned long long inode;
    unsigned char state;
};

static int drover_tcp_take(const struct inet_diag_msg *message, void *context) {
    struct drover_tcp_found *found = context;
    found->found = 1;
    found->uid = message->idiag_uid;
    found->inode = message->idiag_inode;
    found->state = message->idiag_state;
    return 1;
}

int drover_tcp_socket(unsigned short local_port, unsigned short remote_port, unsigned int *uid, unsigned long long *inode,
                      unsigned char *state) {
    int families[2] = {AF_INET, AF_INET6};
    int last = -ENOENT;
    for (int index = 0; index < 2; index++) {
        struct inet_diag_sockid id;
        memset(&id, 0, sizeof id);
        id.idiag_sport = htons(local_port);
        id.idiag_dport = htons(remote_port);
        if (families[index] == AF_INET) {
            id.idiag_src[0] = htonl(INADDR_LOOPBACK);
            id.idiag_dst[0] = htonl(INADDR_LOOPBACK);
        } else {
            id.idiag_src[2] = id.idiag_dst[2] = htonl(0xffff);
            id.idiag_src[3] = id.idiag_dst[3] = htonl(INADDR_LOOPBACK);
        }
        id.idiag_cookie[0] = INET_DIAG_NOCOOKIE;
        id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
        struct drover_tcp_found found = {0};
        int result = drover_tcp_diag(families[index], 0, ~0U, &id, drover_tcp_take, &found);
        if (found.found) {
            *uid = found.uid;
            *inode = found.inode;
            *state = found.state;
            return 0;
        }
        last = result < 0 ? result : -ENOENT;
    }
    return last;
}

struct drover_tcp_listening {
    unsigned short port;
    unsigned long long *inodes;
    unsigned int *uids;
    int capacity;
    int count;
};

/// Whether a listener bound to this local address receives connections to 127.0.0.1.
static int drover_reaches_loopback(const struct inet_diag_msg *message) {
    const __be32 *address = message->id.idiag_src;
    if (message->idiag_family == AF_INET) return address[0] == htonl(INADDR_LOOPBACK) || address[0] == htonl(INADDR_ANY);
    // IPv6: any address (dual-stack), or IPv4-mapped 127.0.0.1 or 0.0.0.0.
    if (address[0] != 0 || address[1] != 0) return 0;
    if (address[2] == 0 && address[3] == 0) return 1;
    return address[2] == htonl(0xffff) && (address[3] == htonl(INADDR_LOOPBACK) || address[3] == htonl(INADDR_ANY));
}

static int drover_tcp_collect(const struct inet_diag_msg *message, void *context) {
    struct drover_tcp_listening *listening = context;
    if (ntohs(message->id.idiag_sport) == listening->port && drover_reaches_loopback(message) && listening->count < listening->capacity) {
        listening->inodes[listening->count] = message->idiag_inode;
        listening->uids[listening->count] = message->idiag_uid;
        listening->count++;
    }
    return 0;
}

int drover_tcp_listeners(unsigned short port, unsigned long long *inodes, unsigned int *uids, int capacity) {
    struct drover_tcp_listening listening = {port, inodes, uids, capacity, 0};
    int families[2] = {AF_INET, AF_INET6};
    for (int index = 0; index < 2; index++) {
        int result = drover_tcp_diag(families[index], 1, 1u << 10 /* TCP_LISTEN */, NULL, drover_tcp_collect, &listening);
        if (result < 0) return result;
    }
    return listening.count;
}
