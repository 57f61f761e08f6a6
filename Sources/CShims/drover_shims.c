#define _GNU_SOURCE
#include <malloc.h>
#include <spawn.h>
#include <sched.h>
#include <fcntl.h>
#include <unistd.h>
#include <errno.h>
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
