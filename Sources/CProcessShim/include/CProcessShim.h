// Process helpers that Swift's Glibc module does not expose (GNU extensions).
#ifndef SWITCHYARD_CPROCESS_SHIM_H
#define SWITCHYARD_CPROCESS_SHIM_H

#include <spawn.h>

/// Asks posix_spawn to close every descriptor from `lowest` up in the child, so sockets of the
/// parent never leak into it. Returns 0 on success (and where the platform closes them by other means).
int syp_spawn_close_from(posix_spawn_file_actions_t *actions, int lowest);

#endif
