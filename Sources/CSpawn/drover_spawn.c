#define _GNU_SOURCE
#include <spawn.h>
#include "drover_spawn.h"

int drover_spawn_close_from(posix_spawn_file_actions_t *actions, int lowest) {
    return posix_spawn_file_actions_addclosefrom_np(actions, lowest);
}
