// The lightest session command for placement benchmarks: accepts on the listening Unix socket
// droverd hands it as descriptor $DROVER_SESSION_LISTEN_FD (3), answers every request
// "200 ok" and exits on SIGUSR1 or SIGTERM. About 1 MB resident, so a thousand of them fit
// where a thousand demo sessions (about 25 MB each) would not.
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

static void leave(int sig) { (void)sig; _exit(0); }

int main(void) {
    const char *listener = getenv("DROVER_SESSION_LISTEN_FD");
    if (!listener) return 2;
    int fd = atoi(listener);
    signal(SIGUSR1, leave);
    signal(SIGTERM, leave);
    static const char answer[] = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n";
    char buffer[4096];
    for (;;) {
        int client = accept(fd, NULL, NULL);
        if (client < 0) continue;
        if (read(client, buffer, sizeof buffer) > 0) write(client, answer, sizeof answer - 1);
        close(client);
    }
}
