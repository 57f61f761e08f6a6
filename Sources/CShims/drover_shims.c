#define _GNU_SOURCE
#include <malloc.h>
#include <spawn.h>
#include "drover_shims.h"

int drover_spawn_close_from(posix_spawn_file_actions_t *actions, int lowest) {
    return posix_spawn_file_actions_addclosefrom_np(actions, lowest);
}

void drover_malloc_trim(void) {
    malloc_trim(0);
}
