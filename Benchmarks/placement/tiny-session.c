// The lightest session command for placement benchmarks: listens on 127.0.0.1:$DROVER_SESSION_PORT,
// answers every request "200 ok" and exits on SIGUSR1 or SIGTERM. About 1 MB resident, so a
// thousand of them fit where a thousand demo sessions (about 25 MB each) would not.
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void leave(int sig) { (void)sig; _exit(0); }

int main(void) {
    const char *port = getenv("DROVER_SESSION_PORT");
    if (!port) return 2;
    signal(SIGUSR1, leave);
    signal(SIGTERM, leave);
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(atoi(port)), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(fd, (struct sockaddr *)&address, sizeof address) != 0 || listen(fd, 64) != 0) return 1;
    static const char answer[] = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n";
    char buffer[4096];
    for (;;) {
        int client = accept(fd, NULL, NULL);
        if (client < 0) continue;
        if (read(client, buffer, sizeof buffer) > 0) write(client, answer, sizeof answer - 1);
        close(client);
    }
}
