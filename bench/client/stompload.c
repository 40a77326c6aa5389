/* The load client of the STOMP fan-out benchmark (bench/scenarios/stomp_fanout.py):
 * N subscribers on one topic over STOMP/TCP or STOMP over WebSocket, and one
 * publisher over STOMP/TCP whose message bodies carry CLOCK_MONOTONIC
 * nanoseconds, so that every delivery's publish-to-receive latency is measured.
 *
 * Why C: the Python client it replaces spent about 26 us of CPU per delivery,
 * so just reading the 1,000 deliveries of one publish took it ~26 ms, which
 * dominated the p99 latency it reported for the brokers.  This client is one
 * epoll loop over nonblocking sockets with a fixed buffer per subscriber: what
 * a delivery costs it is mostly the kernel's share of a recv().
 *
 * usage: stompload PORT TRANSPORT WS_PATH PUB_PORT SUBSCRIBERS PHASE...
 *   PORT       the subscribers' port on 127.0.0.1 (the only host it connects to)
 *   TRANSPORT  "tcp" (plain STOMP) or "ws" (WebSocket upgrade to WS_PATH,
 *              subprotocol v12.stomp; WS_PATH is ignored for tcp)
 *   PUB_PORT   the publisher's STOMP/TCP port on 127.0.0.1
 *   PHASE      NAME:RATE:SECONDS:WARMUP, run in order; RATE is messages/s,
 *              0 = flat out (at most IN_FLIGHT messages not yet received by
 *              every subscriber); latencies count for messages sent in
 *              [start + WARMUP, start + SECONDS)
 *
 * Subscribers are set up one after the other with blocking sockets (CONNECT,
 * CONNECTED, SUBSCRIBE with a receipt, RECEIPT); then the publisher connects.
 * stdout: "PHASE <name> start" and "PHASE <name> end" around each phase's
 * sending, then one line "RESULT {json}" with connect_seconds, subscribers,
 * phases{name: {published, deliveries_per_s, latency_ms{p50,p90,p99,max,n},
 * missing}} and cpu_seconds (user + system of this process).  Any connection
 * failure, refusal or ERROR frame ends it with a message on stderr and exit
 * status 1.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

/* TOPIC and BODY_SIZE are stomp_fanout.py's (its notes name them) */
#define TOPIC "/topic/bench-fanout"
#define BODY_SIZE 64
#define IN_FLIGHT 200       /* flat out: messages ahead of the average subscriber's delivery count */
#define BATCH 64            /* flat out: at most this many messages added per step */
#define PENDING_MAX 65536   /* flat out: add messages only while fewer unsent bytes than this */
#define BUF 16384           /* per subscriber: the STOMP byte stream not yet parsed */
#define SCRATCH 262144
#define MAX_PHASES 8
#define SETUP_TIMEOUT_S 30
#define DRAIN_TIMEOUT_NS 20000000000LL

enum state { WAIT_CONNECTED, WAIT_RECEIPT, READY };

struct conn {
    int fd;
    int number;             /* subscription sN / receipt rN; -1 for the publisher */
    int ws;
    enum state state;
    size_t have;            /* bytes of buf (STOMP stream) not yet parsed */
    uint64_t ws_left;       /* payload bytes left in the current WebSocket frame */
    int ws_feed;            /* the current frame's payload is STOMP data (not a control frame) */
    size_t hdr_have;
    unsigned char hdr[14];
    unsigned char buf[BUF];
};

struct phase {
    char name[32];
    double rate, seconds, warmup;
    long long published, window_received, missing;
    double measured;
    double p50, p90, p99, max;
    size_t n;
};

static struct conn *subs;
static int count;
static struct conn pub;
static int ep = -1;
static unsigned char scratch[SCRATCH];
static int port, pub_port;
static const char *ws_path;

/* deliveries and the current measurement window */
static long long received;
static long long window_received;
static int64_t window_from = INT64_C(1) << 62, window_to = INT64_C(1) << 62;
static int64_t *latencies;
static size_t lat_n, lat_cap;

/* the publisher's unsent bytes: whole SEND frames, except that the first may be partly written */
static char frame[256];
static size_t frame_len;
static char *pending;
static size_t pend_off, pend_len, pend_cap;
static int want_out;

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("stompload: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1); /* the kernel closes every socket */
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int open_tcp(int to_port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) die("socket: %s", strerror(errno));
    struct timeval tv = {.tv_sec = SETUP_TIMEOUT_S};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((unsigned short)to_port),
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0)
        die("connect to 127.0.0.1:%d: %s", to_port, strerror(errno));
    return fd;
}

static void send_all(int fd, const void *data, size_t n) {
    const char *p = data;
    while (n > 0) {
        ssize_t sent = send(fd, p, n, MSG_NOSIGNAL);
        if (sent < 0) die("send: %s", strerror(errno));
        p += sent;
        n -= (size_t)sent;
    }
}

/* A STOMP frame to the broker; over WebSocket in one masked text frame with a zero key. */
static void send_frame(struct conn *c, const char *text, size_t n) {
    if (!c->ws) {
        send_all(c->fd, text, n);
        return;
    }
    unsigned char out[512];
    size_t h = 0;
    if (n + 8 > sizeof out) die("frame too long");
    out[h++] = 0x81;
    if (n < 126) {
        out[h++] = (unsigned char)(0x80 | n);
    } else {
        out[h++] = 0x80 | 126;
        out[h++] = (unsigned char)(n >> 8);
        out[h++] = (unsigned char)n;
    }
    memset(out + h, 0, 4); /* mask key 0: the payload goes as it is */
    h += 4;
    memcpy(out + h, text, n);
    send_all(c->fd, out, h + n);
}

static void send_subscribe(struct conn *c) {
    char text[160];
    int n = snprintf(text, sizeof text, "SUBSCRIBE\nid:s%d\ndestination:" TOPIC "\nreceipt:r%d\n\n", c->number,
                     c->number);
    send_frame(c, text, (size_t)n + 1); /* with the NUL */
}

static int64_t parse_stamp(const char *body, const char *end) {
    if (end - body < 20 || body[0] != 'T') return -1;
    int64_t value = 0;
    for (int i = 1; i <= 19; i++) {
        unsigned digit = (unsigned char)body[i] - '0';
        if (digit > 9) return -1;
        value = value * 10 + digit;
    }
    return value;
}

static void record(int64_t stamp, int64_t now) {
    if (stamp < window_from || stamp >= window_to) return;
    if (lat_n == lat_cap) {
        lat_cap = lat_cap ? lat_cap * 2 : 1 << 20;
        latencies = realloc(latencies, lat_cap * sizeof *latencies);
        if (latencies == NULL) die("out of memory");
    }
    latencies[lat_n++] = now - stamp;
}

/* One complete frame [p, end) (end is its NUL); returns the deliveries it holds (0 or 1). */
static int on_frame(struct conn *c, const char *p, const char *end, int64_t now) {
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    if (eol == NULL) eol = end;
    size_t cmd = (size_t)(eol - p);
    if (cmd > 0 && p[cmd - 1] == '\r') cmd--;
    /* headers end at the first empty line */
    const char *body = NULL;
    for (const char *q = eol; q < end && (q = memchr(q, '\n', (size_t)(end - q))) != NULL; q++) {
        if (q + 1 < end && q[1] == '\n') { body = q + 2; break; }
        if (q + 2 < end && q[1] == '\r' && q[2] == '\n') { body = q + 3; break; }
    }
    if (body == NULL) body = end;
    if (cmd == 7 && memcmp(p, "MESSAGE", 7) == 0) {
        int64_t stamp = parse_stamp(body, end);
        if (stamp < 0) return 0;
        record(stamp, now);
        return 1;
    }
    if (cmd == 5 && memcmp(p, "ERROR", 5) == 0) die("ERROR frame: %.*s", (int)(end - p > 500 ? 500 : end - p), p);
    if (cmd == 9 && memcmp(p, "CONNECTED", 9) == 0 && c->state == WAIT_CONNECTED) {
        if (c->number < 0) {
            c->state = READY;
        } else {
            c->state = WAIT_RECEIPT;
            send_subscribe(c);
        }
    } else if (cmd == 7 && memcmp(p, "RECEIPT", 7) == 0 && c->state == WAIT_RECEIPT) {
        char want[32];
        int n = snprintf(want, sizeof want, "\nreceipt-id:r%d", c->number);
        const char *hit = memmem(eol, (size_t)(body - eol), want, (size_t)n);
        if (hit && (hit[n] == '\n' || hit[n] == '\r')) c->state = READY;
    }
    return 0;
}

/* Parses the complete frames in c->buf and keeps the partial one; returns the deliveries. */
static int parse(struct conn *c, int64_t now) {
    const char *p = (const char *)c->buf, *end = p + c->have;
    int found = 0;
    for (;;) {
        while (p < end && (*p == '\n' || *p == '\r')) p++; /* heart-beats and EOLs after frames */
        if (p == end) break;
        const char *nul = memchr(p, 0, (size_t)(end - p));
        if (nul == NULL) break;
        found += on_frame(c, p, nul, now);
        p = nul + 1;
    }
    c->have = (size_t)(end - p);
    if (c->have) memmove(c->buf, p, c->have);
    return found;
}

/* WebSocket frames from the server (never masked) to the STOMP stream in c->buf. */
static void unframe(struct conn *c, const unsigned char *p, size_t n) {
    while (n > 0) {
        if (c->ws_left == 0) {
            c->hdr[c->hdr_have++] = *p++;
            n--;
            if (c->hdr_have < 2) continue;
            if (c->hdr[1] & 0x80) die("masked frame from the server");
            unsigned len7 = c->hdr[1] & 0x7f;
            size_t need = 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0);
            if (c->hdr_have < need) continue;
            uint64_t len = len7;
            if (len7 >= 126) {
                len = 0;
                for (size_t i = 2; i < need; i++) len = len << 8 | c->hdr[i];
            }
            unsigned op = c->hdr[0] & 0x0f;
            if (op == 8) die("the broker closed a WebSocket");
            c->ws_feed = op <= 2; /* continuation, text, binary; ping/pong payloads are skipped */
            c->ws_left = len;
            c->hdr_have = 0;
            continue;
        }
        size_t take = c->ws_left < n ? (size_t)c->ws_left : n;
        if (c->ws_feed) {
            if (take > BUF - c->have) die("STOMP frame larger than %d bytes", BUF);
            memcpy(c->buf + c->have, p, take);
            c->have += take;
        }
        c->ws_left -= take;
        p += take;
        n -= take;
    }
}

/* One recv into c's stream; returns the bytes read, 0 if none are waiting (nonblocking). */
static ssize_t receive(struct conn *c, const char *what) {
    size_t room = BUF - c->have;
    if (room == 0) die("STOMP frame larger than %d bytes", BUF);
    ssize_t n = c->ws ? recv(c->fd, scratch, room < SCRATCH ? room : SCRATCH, 0)
                      : recv(c->fd, c->buf + c->have, room, 0);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            if (c->state != READY) die("timed out %s", what);
            return 0;
        }
        die("recv, %s: %s", what, strerror(errno));
    }
    if (n == 0) die("the broker closed the connection, %s", what);
    if (c->ws) unframe(c, scratch, (size_t)n);
    else c->have += (size_t)n;
    return n;
}

static void setup(struct conn *c, int to_port, int number, int ws) {
    c->fd = open_tcp(to_port);
    c->number = number;
    c->ws = 0;
    c->state = WAIT_CONNECTED;
    if (ws) {
        char req[512];
        int n = snprintf(req, sizeof req,
                         "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                         "Sec-WebSocket-Protocol: v12.stomp\r\n\r\n", ws_path, to_port);
        if (n <= 0 || (size_t)n >= sizeof req) die("WS_PATH too long");
        send_all(c->fd, req, (size_t)n);
        const unsigned char *head_end;
        while ((head_end = memmem(c->buf, c->have, "\r\n\r\n", 4)) == NULL)
            receive(c, "waiting for the WebSocket handshake");
        size_t head = (size_t)(head_end - c->buf) + 4;
        const unsigned char *eol = memmem(c->buf, head, "\r\n", 2);
        if (memmem(c->buf, (size_t)(eol - c->buf), " 101 ", 5) == NULL)
            die("WebSocket handshake refused: %.*s", (int)(eol - c->buf), c->buf);
        size_t rest = c->have - head;
        memcpy(scratch, c->buf + head, rest);
        c->have = 0;
        c->ws = 1;
        unframe(c, scratch, rest);
    }
    static const char connect_frame[] = "CONNECT\naccept-version:1.2\nhost:/\nlogin:guest\npasscode:guest\n\n";
    send_frame(c, connect_frame, sizeof connect_frame); /* with the NUL */
    for (;;) {
        parse(c, now_ns());
        if (c->state == READY) break;
        receive(c, c->state == WAIT_CONNECTED ? "waiting for CONNECTED" : "waiting for the RECEIPT");
    }
    /* frames after the RECEIPT stay in c->buf for the loop */
}

/* Watch the publisher for writability only while it has unsent bytes. */
static void watch_pub(int out) {
    if (out == want_out) return;
    struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0), .data.ptr = &pub};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, pub.fd, &ev) < 0) die("epoll_ctl: %s", strerror(errno));
    want_out = out;
}

static void flush(void) {
    if (pend_off < pend_len) {
        ssize_t n = send(pub.fd, pending + pend_off, pend_len - pend_off, MSG_NOSIGNAL);
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) die("publisher send: %s", strerror(errno));
        if (n > 0) pend_off += (size_t)n;
    }
    if (pend_off == pend_len) pend_off = pend_len = 0;
    watch_pub(pend_off < pend_len);
}

/* n SEND frames with one stamp (now), appended to the unsent bytes. */
static void add_frames(long long n) {
    size_t need = (size_t)n * frame_len;
    if (pend_len + need > pend_cap) {
        if (pend_off > 0) {
            memmove(pending, pending + pend_off, pend_len - pend_off);
            pend_len -= pend_off;
            pend_off = 0;
        }
        while (pend_len + need > pend_cap) pend_cap = pend_cap ? pend_cap * 2 : 1 << 17;
        pending = realloc(pending, pend_cap);
        if (pending == NULL) die("out of memory");
    }
    char stamp[21];
    snprintf(stamp, sizeof stamp, "T%019lld", (long long)now_ns());
    memcpy(frame + frame_len - 1 - BODY_SIZE, stamp, 20);
    for (long long i = 0; i < n; i++) {
        memcpy(pending + pend_len, frame, frame_len);
        pend_len += frame_len;
    }
}

/* Waits up to timeout_ms for sockets, reads each ready one once. */
static void drain_ready(int timeout_ms) {
    struct epoll_event events[256];
    int k = epoll_wait(ep, events, 256, timeout_ms);
    if (k < 0) {
        if (errno == EINTR) return;
        die("epoll_wait: %s", strerror(errno));
    }
    for (int j = 0; j < k; j++) {
        struct conn *c = events[j].data.ptr;
        if (c == &pub) {
            if (!(events[j].events & (EPOLLIN | EPOLLERR | EPOLLHUP))) continue; /* writable: flush() sends */
            ssize_t n = recv(pub.fd, scratch, SCRATCH, 0); /* its bytes are of no interest */
            if (n == 0) die("the broker closed the publisher");
            if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) die("publisher recv: %s", strerror(errno));
            continue;
        }
        if (receive(c, "a subscriber") == 0) continue; /* spurious wakeup */
        int64_t now = now_ns();
        int found = parse(c, now);
        received += found;
        if (now >= window_from && now < window_to) window_received += found;
    }
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* The same index as the Python harness's percentiles: sorted[min(n - 1, int(n * p / 100))]. */
static double pct(double p) {
    if (lat_n == 0) return NAN;
    size_t i = (size_t)((double)lat_n * p / 100);
    if (i > lat_n - 1) i = lat_n - 1;
    return (double)latencies[i] / 1e6;
}

static void run_phase(struct phase *ph, long long *sent_total) {
    printf("PHASE %s start\n", ph->name);
    fflush(stdout);
    lat_n = 0;
    window_received = 0;
    int64_t begin = now_ns();
    int64_t length = (int64_t)(ph->seconds * 1e9);
    window_from = begin + (int64_t)(ph->warmup * 1e9);
    window_to = begin + length;
    long long sent = 0;
    for (;;) {
        int64_t now = now_ns();
        if (now - begin >= length) break;
        int timeout_ms = 1;
        if (ph->rate > 0) {
            long long due = (long long)((double)(now - begin) / 1e9 * ph->rate) - sent;
            if (due > 0) {
                add_frames(due);
                sent += due;
            }
            flush();
            /* sleep until the next message is due (or the phase ends) */
            int64_t next = begin + (int64_t)((double)(sent + 1) / ph->rate * 1e9) + 1;
            if (next > begin + length) next = begin + length;
            int64_t wait = next - now_ns();
            timeout_ms = wait <= 0 ? 0 : (int)((wait + 999999) / 1000000);
        } else {
            /* Flat out, but closed-loop: at most IN_FLIGHT messages not yet received by every subscriber,
             * so a broker that queues without bound does not just pile up a backlog. */
            long room = 0;
            if (pend_len - pend_off < PENDING_MAX) {
                double in_flight = (double)(*sent_total + sent) - (double)received / count;
                room = (long)(IN_FLIGHT - in_flight);
                if (room > BATCH) room = BATCH;
                if (room > 0) {
                    add_frames(room);
                    sent += room;
                }
            }
            flush();
            /* go round again at once while there is room and the socket takes everything */
            double in_flight = (double)(*sent_total + sent) - (double)received / count;
            if (!want_out && (long)(IN_FLIGHT - in_flight) > 0) timeout_ms = 0;
        }
        drain_ready(timeout_ms);
    }
    window_to = now_ns();
    printf("PHASE %s end\n", ph->name);
    fflush(stdout);
    /* Whole unsent frames never reached the broker: take them back.  All frames have the same
     * length, so a remainder is the tail of a frame partly written: that one is finished. */
    size_t unsent = pend_len - pend_off;
    sent -= (long long)(unsent / frame_len);
    pend_len = pend_off + unsent % frame_len;
    *sent_total += sent;
    long long expected = *sent_total * count;
    int64_t deadline = now_ns() + DRAIN_TIMEOUT_NS;
    while (received < expected && now_ns() < deadline) {
        flush();
        drain_ready(50);
    }
    ph->measured = (double)(window_to - window_from) / 1e9;
    qsort(latencies, lat_n, sizeof *latencies, cmp_i64);
    ph->published = sent;
    ph->window_received = window_received;
    ph->missing = expected > received ? expected - received : 0;
    ph->p50 = pct(50);
    ph->p90 = pct(90);
    ph->p99 = pct(99);
    ph->max = pct(100);
    ph->n = lat_n;
    if (received > expected) received = expected;
}

static void print_ms(const char *key, double value, int comma) {
    if (isnan(value)) printf("\"%s\": NaN", key); /* what Python's json writes and reads */
    else printf("\"%s\": %.6f", key, value);
    if (comma) printf(", ");
}

int main(int argc, char **argv) {
    if (argc < 7 || argc - 6 > MAX_PHASES) {
        fprintf(stderr, "usage: stompload PORT TRANSPORT WS_PATH PUB_PORT SUBSCRIBERS NAME:RATE:SECONDS:WARMUP...\n");
        return 2;
    }
    port = atoi(argv[1]);
    int ws = strcmp(argv[2], "ws") == 0;
    ws_path = argv[3];
    pub_port = atoi(argv[4]);
    count = atoi(argv[5]);
    if ((!ws && strcmp(argv[2], "tcp") != 0) || port <= 0 || pub_port <= 0 || count <= 0) {
        fprintf(stderr, "stompload: bad arguments\n");
        return 2;
    }
    int nphases = argc - 6;
    struct phase phases[MAX_PHASES] = {0};
    for (int i = 0; i < nphases; i++) {
        struct phase *ph = &phases[i];
        int used = 0;
        if (sscanf(argv[6 + i], "%31[A-Za-z0-9_-]:%lf:%lf:%lf%n", ph->name, &ph->rate, &ph->seconds, &ph->warmup,
                   &used) != 4 || argv[6 + i][used] != '\0' || ph->rate < 0 || ph->seconds <= 0) {
            fprintf(stderr, "stompload: bad phase %s (NAME:RATE:SECONDS:WARMUP)\n", argv[6 + i]);
            return 2;
        }
    }
    frame_len =
        (size_t)snprintf(frame, sizeof frame, "SEND\ndestination:" TOPIC "\ncontent-length:%d\n\n", BODY_SIZE);
    memset(frame + frame_len, 'x', BODY_SIZE);
    frame_len += BODY_SIZE;
    frame[frame_len++] = '\0';

    subs = calloc((size_t)count, sizeof *subs);
    ep = epoll_create1(0);
    if (subs == NULL || ep < 0) die("setup: %s", strerror(errno));
    int64_t started = now_ns();
    for (int i = 0; i < count; i++) setup(&subs[i], port, i, ws);
    double connect_seconds = (double)(now_ns() - started) / 1e9;
    setup(&pub, pub_port, -1, 0);
    for (int i = 0; i <= count; i++) {
        struct conn *c = i < count ? &subs[i] : &pub;
        if (fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK) < 0) die("fcntl: %s", strerror(errno));
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) die("epoll_ctl: %s", strerror(errno));
    }

    long long sent_total = 0;
    for (int i = 0; i < nphases; i++) run_phase(&phases[i], &sent_total);

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
                 ru.ru_stime.tv_usec / 1e6;
    printf("RESULT {\"connect_seconds\": %.6f, \"subscribers\": %d, \"phases\": {", connect_seconds, count);
    for (int i = 0; i < nphases; i++) {
        struct phase *ph = &phases[i];
        printf("%s\"%s\": {\"published\": %lld, \"deliveries_per_s\": %.3f, \"latency_ms\": {", i ? ", " : "",
               ph->name, ph->published, ph->measured > 0 ? (double)ph->window_received / ph->measured : 0.0);
        print_ms("p50", ph->p50, 1);
        print_ms("p90", ph->p90, 1);
        print_ms("p99", ph->p99, 1);
        print_ms("max", ph->max, 1);
        printf("\"n\": %zu}, \"missing\": %lld}", ph->n, ph->missing);
    }
    printf("}, \"cpu_seconds\": %.6f}\n", cpu);
    fflush(stdout);

    for (int i = 0; i < count; i++) close(subs[i].fd);
    close(pub.fd);
    close(ep);
    free(subs);
    free(latencies);
    free(pending);
    return 0;
}
