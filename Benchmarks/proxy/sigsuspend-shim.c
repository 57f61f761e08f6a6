// Preloaded into droverd when it runs under valgrind 3.19 (Debian bookworm's). libdispatch parks
// the main thread of every Swift async program in sigsuspend() with a mask in read-only memory;
// valgrind 3.19's sigsuspend wrapper writes to the caller's mask and dies of the fault. This
// wrapper hands the kernel a writable copy instead. Only the benchmark uses it.
#define _GNU_SOURCE
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

int sigsuspend(const sigset_t *mask) {
    sigset_t copy = *mask;
    return (int)syscall(SYS_rt_sigsuspend, &copy, 8);
}
