/* The TCP backend behind Orbited's TCPSockets in the /sockjs push benchmark
 * (bench/scenarios/sockjs_push.py): it pushes timestamped lines to its
 * connections on a schedule.
 *
 * Why C: the Node backend it replaces spent 13-33 us of CPU per pushed
 * message on this 2-core machine, which the server under test and the load
 * client then did not have, and its write loop took about a millisecond to
 * get one slot's 50 messages out, all of it counted as Orbited's latency.
 * sockjs-node, the peer, pushes from its own event loop, so its pushing is
 * part of its server's figures either way.
 *
 * The schedule is the scenario's (PUSH_SCHEDULE_JS there does the same for
 * the peer): connection k belongs to slot k % SLOTS; a CLOCK_MONOTONIC timer
 * fires SLOTS times per interval, and each firing pushes one line to every
 * connection of the next slot.  A firing that comes late (the timer counted
 * several expirations) pushes one slot per expiration, so the offered rate
 * is what was asked.  The line is the CLOCK_MONOTONIC time in milliseconds
 * (3 decimals), padded with spaces to SIZE-1 bytes, then "\n"; the load
 * client reads the same clock.  A connection whose unsent bytes in the
 * kernel (SIOCOUTQ) exceed 64 KiB -- Orbited paused it and stopped reading --
 * or that still holds part of an earlier line is skipped, and the skip is
 * counted.  What connections send is read and dropped.
 *
 * usage: pushbackend INTERVAL_MS SIZE SLOTS
 *   listens on 127.0.0.1, on a port the kernel picks, and prints
 *   {"event": "ready", "port": P}.
 * stdin: "interval MS" changes the interval; "stats" prints
 *   {"event": "stats", "sent": N, "skipped": M}; end of input or SIGTERM
 *   ends the process.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 20000
#define MAX_SLOTS 1000
#define MAX_SIZE 256
#define PAUSED_BYTES 65536
#define EVENTS 256

struct conn {
    int fd;               /* -1: free */
    int slot;
    int pos;              /* index in its slot's member list */
    size_t left;          /* bytes of a partly sent line still to send */
    char rest[MAX_SIZE];
};

static struct conn conns[MAX_CONNS];
static int *members[MAX_SLOTS];
static int counts[MAX_SLOTS];
static int slots, size, next_slot, tick;
static long long sent, skipped;
static int epfd, timer;

static void die(const char *what) {
    perror(what);
    exit(1);
}

static void arm(double interval_ms) {
    long long step = (long long)(interval_ms * 1e6 / slots);
    if (step < 1000) step = 1000;
    struct itimerspec spec = {
        .it_interval = {step / 1000000000LL, step % 1000000000LL},
        .it_value = {step / 1000000000LL, step % 1000000000LL},
    };
    if (timerfd_settime(timer, 0, &spec, NULL) < 0) die("timerfd_settime");
}

static void drop(int fd) {
    struct conn *c = &conns[fd];
    int *list = members[c->slot];
    int last = list[--counts[c->slot]];
    list[c->pos] = last;
    conns[last].pos = c->pos;
    epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL);
    close(fd);
    c->fd = -1;
}

static void accept_all(int listener) {
    for (;;) {
        int fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ECONNABORTED) return;
            if (errno == EMFILE || errno == ENFILE) { perror("accept4"); return; }
            die("accept4");
        }
        if (fd >= MAX_CONNS) { close(fd); fprintf(stderr, "too many connections\n"); continue; }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct conn *c = &conns[fd];
        c->fd = fd;
        c->slot = next_slot++ % slots;
        c->pos = counts[c->slot];
        c->left = 0;
        members[c->slot][counts[c->slot]++] = fd;
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
    }
}

/* Send what is left of a line; 0 when the connection failed and was dropped. */
static int flush(struct conn *c) {
    while (c->left) {
        ssize_t n = send(c->fd, c->rest, c->left, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            drop(c->fd);
            return 0;
        }
        memmove(c->rest, c->rest + n, c->left - (size_t)n);
        c->left -= (size_t)n;
    }
    struct epoll_event ev = {.events = EPOLLIN | (c->left ? EPOLLOUT : 0), .data.fd = c->fd};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
    return 1;
}

static void push_slot(void) {
    int slot = tick++ % slots;
    if (!counts[slot]) return;
    char line[MAX_SIZE];
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int n = snprintf(line, sizeof line, "%.3f", ts.tv_sec * 1e3 + ts.tv_nsec / 1e6);
    memset(line + n, ' ', (size_t)(size - 1 - n));
    line[size - 1] = '\n';
    /* walk a copy: a failed send drops the connection and reorders the list */
    int list[MAX_CONNS];
    int count = counts[slot];
    memcpy(list, members[slot], (size_t)count * sizeof(int));
    for (int i = 0; i < count; i++) {
        struct conn *c = &conns[list[i]];
        if (c->fd < 0) continue;
        int queued = 0;
        if (c->left || (ioctl(c->fd, SIOCOUTQ, &queued) == 0 && queued > PAUSED_BYTES)) {
            skipped++;
            continue;
        }
        ssize_t w = send(c->fd, line, (size_t)size, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w == size) { sent++; continue; }
        if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) { drop(c->fd); continue; }
        if (w < 0) { skipped++; continue; }
        sent++;
        c->left = (size_t)(size - w);
        memcpy(c->rest, line + w, c->left);
        flush(c);
    }
}

static void command(char *text) {
    double value;
    if (sscanf(text, "interval %lf", &value) == 1 && value > 0) {
        arm(value);
    } else if (strncmp(text, "stats", 5) == 0) {
        printf("{\"event\": \"stats\", \"sent\": %lld, \"skipped\": %lld}\n", sent, skipped);
        fflush(stdout);
    }
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: pushbackend INTERVAL_MS SIZE SLOTS\n");
        return 2;
    }
    double interval = atof(argv[1]);
    size = atoi(argv[2]);
    slots = atoi(argv[3]);
    if (interval <= 0 || size < 16 || size > MAX_SIZE || slots < 1 || slots > MAX_SLOTS) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    for (int i = 0; i < MAX_CONNS; i++) conns[i].fd = -1;
    for (int i = 0; i < slots; i++)
        if (!(members[i] = malloc(sizeof(int) * MAX_CONNS))) die("malloc");

    int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (listener < 0) die("socket");
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = 0};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(listener, (struct sockaddr *)&addr, sizeof addr) < 0) die("bind");
    if (listen(listener, 4096) < 0) die("listen");
    socklen_t len = sizeof addr;
    if (getsockname(listener, (struct sockaddr *)&addr, &len) < 0) die("getsockname");

    epfd = epoll_create1(EPOLL_CLOEXEC);
    timer = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (epfd < 0 || timer < 0) die("epoll/timerfd");
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = listener};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, listener, &ev) < 0) die("epoll_ctl");
    ev.data.fd = timer;
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, timer, &ev) < 0) die("epoll_ctl");
    ev.data.fd = STDIN_FILENO;
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, STDIN_FILENO, &ev) < 0) die("epoll_ctl stdin");
    arm(interval);
    printf("{\"event\": \"ready\", \"port\": %d}\n", ntohs(addr.sin_port));
    fflush(stdout);

    char input[4096];
    size_t have = 0;
    char scratch[65536];
    struct epoll_event events[EVENTS];
    for (;;) {
        int n = epoll_wait(epfd, events, EVENTS, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd == listener) {
                accept_all(listener);
            } else if (fd == timer) {
                uint64_t expirations;
                if (read(timer, &expirations, sizeof expirations) != sizeof expirations) continue;
                while (expirations--) push_slot();
            } else if (fd == STDIN_FILENO) {
                ssize_t r = read(STDIN_FILENO, input + have, sizeof input - 1 - have);
                if (r <= 0) return 0;
                have += (size_t)r;
                input[have] = 0;
                char *start = input, *nl;
                while ((nl = strchr(start, '\n'))) {
                    *nl = 0;
                    command(start);
                    start = nl + 1;
                }
                have -= (size_t)(start - input);
                memmove(input, start, have);
                if (have == sizeof input - 1) have = 0;  /* a line too long to be a command */
            } else if (conns[fd].fd == fd) {
                struct conn *c = &conns[fd];
                if (events[i].events & EPOLLOUT && !flush(c)) continue;
                if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                    ssize_t r = recv(fd, scratch, sizeof scratch, MSG_DONTWAIT);
                    if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) drop(fd);
                }
            }
        }
    }
}
