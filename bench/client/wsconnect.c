/* The connect-burst load client of the /ws benchmark: n WebSocket sessions
 * started in one go, each timed from the start of its TCP connect to the 101
 * (open), to the TCPSocket handshake's answer (ready) and to the echo of a
 * one-byte probe (echo).
 *
 * Why C: the Node client (wsload.js) costs about 0.5 ms of CPU per connect,
 * and against a server that answers instantly it alone put the p50 of a
 * 200-connect burst at 44-72 ms on this 2-core machine, i.e. the measurement
 * floor was above the figure it had to resolve.  This client is one epoll
 * loop with fixed buffers: what it costs per connect is the kernel's share.
 * It is the same binary for Orbited and every peer.
 *
 * usage: wsconnect HOST PORT PATH TARGET N TIMEOUT_S
 *   TARGET is the TCPSocket handshake ("host:port", answered by the text
 *   message "1"), or "-" for a tunnel that relays at once (websockify).
 * It prints {"event":"ready"}, waits for a line on stdin, starts N sessions,
 * prints {"event":"connect","samples":[[open,ready,echo],...],"failures":{..}}
 * (ms; successful sessions only) and "cpu_ms", this process's CPU from the go
 * line to the report (getrusage: /proc's 10 ms ticks would read 0), closes
 * every socket and exits.  It only
 * connects where it is told, and gives up after TIMEOUT_S seconds.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* The fixed key of RFC 6455's example, so the expected accept value is a constant. */
#define ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
#define BUF 4096

enum phase { CONNECTING, UPGRADING, HANDSHAKE, PROBING, DONE, FAILED };

struct session {
    int fd;
    enum phase phase;
    double start, open, ready, echo;
    size_t have;
    unsigned char buf[BUF];
    const char *failure;
};

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static double cpu_ms(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3;
}

static char upgrade[1024];
static size_t upgrade_len;
static unsigned char handshake[600];
static size_t handshake_len;
/* One-byte binary probe, zero mask: FIN|binary, MASK|1, 4 mask bytes, payload. */
static const unsigned char probe[] = {0x82, 0x81, 0, 0, 0, 0, 0x70};

static void fail(struct session *s, const char *why) {
    if (s->phase == DONE || s->phase == FAILED) return;
    s->phase = FAILED;
    s->failure = why;
}

static int send_all(struct session *s, const void *data, size_t n) {
    ssize_t sent = send(s->fd, data, n, MSG_NOSIGNAL);
    if (sent != (ssize_t)n) { /* a few hundred bytes into an empty socket buffer: never partial */
        fail(s, sent < 0 ? "send failed" : "short send");
        return -1;
    }
    return 0;
}

static void ready(struct session *s) {
    s->ready = now_ms();
    s->phase = PROBING;
    send_all(s, probe, sizeof probe);
}

/* Consumes whole server frames from s->buf; server frames are never masked. */
static void frames(struct session *s) {
    size_t pos = 0;
    while (s->phase == HANDSHAKE || s->phase == PROBING) {
        if (s->have - pos < 2) break;
        unsigned char b0 = s->buf[pos], b1 = s->buf[pos + 1];
        size_t len = b1 & 0x7f, hdr = 2;
        if (len == 126) {
            if (s->have - pos < 4) break;
            len = (size_t)s->buf[pos + 2] << 8 | s->buf[pos + 3];
            hdr = 4;
        } else if (len == 127) {
            fail(s, "oversized frame");
            return;
        }
        if (s->have - pos < hdr + len) break;
        int op = b0 & 0x0f;
        const unsigned char *payload = s->buf + pos + hdr;
        pos += hdr + len;
        if (op == 8) { fail(s, "closed by server"); return; }
        if (op >= 8) continue; /* ping/pong: the probe is far shorter than any ping interval */
        if (s->phase == HANDSHAKE) {
            if (op != 1 || len != 1 || payload[0] != '1') { fail(s, "bad handshake answer"); return; }
            ready(s);
        } else if (len > 0) {
            s->echo = now_ms();
            s->phase = DONE;
        }
    }
    memmove(s->buf, s->buf + pos, s->have - pos);
    s->have -= pos;
}

static void readable(struct session *s) {
    for (;;) {
        if (s->have == BUF) { fail(s, "response too large"); return; }
        ssize_t n = recv(s->fd, s->buf + s->have, BUF - s->have, 0);
        if (n < 0) {
            if (errno != EAGAIN) fail(s, "recv failed");
            return;
        }
        if (n == 0) { fail(s, "closed"); return; }
        s->have += (size_t)n;
        if (s->phase == UPGRADING) {
            unsigned char *end = memmem(s->buf, s->have, "\r\n\r\n", 4);
            if (end == NULL) continue;
            size_t head = (size_t)(end - s->buf) + 4;
            if (s->have < 12 || memcmp(s->buf, "HTTP/1.1 101", 12) != 0 ||
                memmem(s->buf, head, ACCEPT, sizeof ACCEPT - 1) == NULL) {
                fail(s, "upgrade refused");
                return;
            }
            s->open = now_ms();
            memmove(s->buf, s->buf + head, s->have - head);
            s->have -= head;
            if (handshake_len) {
                s->phase = HANDSHAKE;
                if (send_all(s, handshake, handshake_len) < 0) return;
            } else {
                ready(s);
            }
        }
        frames(s);
        if (s->phase == DONE || s->phase == FAILED) return;
    }
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: wsconnect HOST PORT PATH TARGET N TIMEOUT_S\n");
        return 2;
    }
    const char *host = argv[1], *path = argv[3], *target = argv[4];
    int port = atoi(argv[2]), n = atoi(argv[5]);
    double timeout = atof(argv[6]) * 1e3;
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1 || n <= 0) {
        fprintf(stderr, "wsconnect: HOST must be an IPv4 address and N positive\n");
        return 2;
    }
    upgrade_len = (size_t)snprintf(upgrade, sizeof upgrade,
        "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Protocol: binary\r\n\r\n", path, host, port);
    if (strcmp(target, "-") != 0) {
        size_t len = strlen(target);
        if (len > 125) { fprintf(stderr, "wsconnect: TARGET too long\n"); return 2; }
        handshake[0] = 0x81; /* FIN|text */
        handshake[1] = (unsigned char)(0x80 | len);
        memset(handshake + 2, 0, 4); /* zero mask */
        memcpy(handshake + 6, target, len);
        handshake_len = 6 + len;
    }
    struct session *sessions = calloc((size_t)n, sizeof *sessions);
    int ep = epoll_create1(0);
    if (sessions == NULL || ep < 0) { perror("wsconnect"); return 1; }

    printf("{\"event\":\"ready\"}\n");
    fflush(stdout);
    char line[64];
    if (fgets(line, sizeof line, stdin) == NULL) return 1;

    double t0 = now_ms();
    double cpu0 = cpu_ms();
    int pending = n;
    for (int i = 0; i < n; i++) {
        struct session *s = &sessions[i];
        s->start = now_ms();
        s->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        if (s->fd < 0) { fail(s, "socket failed"); pending--; continue; }
        int one = 1;
        setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(s->fd, (struct sockaddr *)&addr, sizeof addr) < 0 && errno != EINPROGRESS) {
            fail(s, "connect failed");
            pending--;
            continue;
        }
        s->phase = CONNECTING;
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = s};
        epoll_ctl(ep, EPOLL_CTL_ADD, s->fd, &ev);
    }
    struct epoll_event events[256];
    while (pending > 0) {
        int left = (int)(t0 + timeout - now_ms());
        if (left <= 0) break;
        int k = epoll_wait(ep, events, 256, left);
        for (int j = 0; j < k; j++) {
            struct session *s = events[j].data.ptr;
            if (s->phase == DONE || s->phase == FAILED) continue;
            if (s->phase == CONNECTING) {
                int err = 0;
                socklen_t len = sizeof err;
                getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len);
                if (err != 0) {
                    fail(s, err == ECONNREFUSED ? "ECONNREFUSED" : "connect failed");
                } else {
                    s->phase = UPGRADING;
                    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = s};
                    epoll_ctl(ep, EPOLL_CTL_MOD, s->fd, &ev);
                    send_all(s, upgrade, upgrade_len);
                }
            } else if (events[j].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                readable(s);
            }
            if (s->phase == DONE || s->phase == FAILED) {
                epoll_ctl(ep, EPOLL_CTL_DEL, s->fd, NULL);
                pending--;
            }
        }
    }
    for (int i = 0; i < n; i++) fail(&sessions[i], "timeout");

    printf("{\"event\":\"connect\",\"samples\":[");
    int first = 1;
    for (int i = 0; i < n; i++) {
        struct session *s = &sessions[i];
        if (s->phase != DONE) continue;
        printf("%s[%.3f,%.3f,%.3f]", first ? "" : ",", s->open - s->start, s->ready - s->start, s->echo - s->start);
        first = 0;
    }
    printf("],\"failures\":{");
    /* Distinct reasons are static strings: count each once by pointer. */
    first = 1;
    for (int i = 0; i < n; i++) {
        const char *why = sessions[i].failure;
        if (sessions[i].phase != FAILED || why == NULL) continue;
        int seen = 0, count = 0;
        for (int j = 0; j < i && !seen; j++) seen = sessions[j].phase == FAILED && sessions[j].failure == why;
        if (seen) continue;
        for (int j = i; j < n; j++) count += sessions[j].phase == FAILED && sessions[j].failure == why;
        printf("%s\"%s\":%d", first ? "" : ",", why, count);
        first = 0;
    }
    printf("},\"cpu_ms\":%.3f}\n", cpu_ms() - cpu0);
    fflush(stdout);
    for (int i = 0; i < n; i++) {
        if (sessions[i].fd > 0) close(sessions[i].fd);
    }
    return 0;
}
