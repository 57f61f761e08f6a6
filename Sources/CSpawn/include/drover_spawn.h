#ifndef DROVER_SPAWN_H
#define DROVER_SPAWN_H
#include <spawn.h>

/// Adds "close every descriptor from `lowest` up" to spawn actions (glibc 2.34+), so a child
/// inherits nothing of ours but what the other actions give it.
int drover_spawn_close_from(posix_spawn_file_actions_t *actions, int lowest);
#endif
