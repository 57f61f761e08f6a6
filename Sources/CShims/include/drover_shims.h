#ifndef DROVER_SHIMS_H
#define DROVER_SHIMS_H
#include <spawn.h>

/// Adds "close every descriptor from `lowest` up" to spawn actions (glibc 2.34+), so a child
/// inherits nothing of ours but what the other actions give it.
int drover_spawn_close_from(posix_spawn_file_actions_t *actions, int lowest);

/// Returns freed heap in every malloc arena to the system (glibc `malloc_trim(0)`).
void drover_malloc_trim(void);

/// Moves the calling thread (only it) into the network namespace at `path` (`/run/netns/x`);
/// 0, or minus the errno.
int drover_enter_network_namespace(const char *path);
#endif
