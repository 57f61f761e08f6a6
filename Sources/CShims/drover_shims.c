#define _GNU_SOURCE
#include <malloc.h>
#include <spawn.h>
#include <sched.h>
#include <fcntl.h>
#include <unistd.h>
#include <errno.h>
#include <string.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/syscall.h>
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
    int result = connect(fd, (struct sockaddr *)&address, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + length + 1));
    int error = result == 0 ? 0 : errno;
    syscall(SYS_setfsuid, oldUid);
    syscall(SYS_setfsgid, oldGid);
    syscall(SYS_setgroups, count, saved);
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
