/* The floor: a bare WebSocket broadcaster, the least work a server can do per delivered message.
 *
 *   floor --port 8765 --servers servers.json --tick 1.0 [--ping-s 15]
 *
 * Accepts WebSocket handshakes on 127.0.0.1 (and answers `GET /readyz`), then every tick builds ONE
 * frame {"type":"event","sub":"sfloor","cursor":"<epoch>-<seq>","data":{"ts":<ms>,"servers":<file>}}
 * and write()s the same bytes to every open socket. No per-connection buffering beyond a write the
 * kernel took only in part (the rest is finished on EPOLLOUT; a socket still behind at the next tick
 * skips that tick, which the load generator counts as lost). Incoming bytes are read and ignored; a
 * closed peer is dropped. With --ping-s S (a diagnostic: the hub's protocol pings every client every S
 * seconds), a 1/round(S/tick) share of the clients gets a WebSocket ping in the same writev() as the
 * tick's frame, ahead of it, the way the hub's heartbeat carries its pings; their pongs are read and
 * ignored like any client frame. Exits on SIGTERM/SIGINT. Linux only (epoll). Public-domain SHA-1 inside.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

/* ---- SHA-1 (after Steve Reid's public-domain implementation) ---- */
typedef struct { uint32_t h[5]; uint64_t n; uint8_t buf[64]; } sha1_ctx;
#define ROL(v, b) (((v) << (b)) | ((v) >> (32 - (b))))
static void sha1_block(uint32_t h[5], const uint8_t *p) {
    uint32_t w[80], a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    for (int i = 0; i < 16; i++) w[i] = (uint32_t)p[4*i] << 24 | (uint32_t)p[4*i+1] << 16 | (uint32_t)p[4*i+2] << 8 | p[4*i+3];
    for (int i = 16; i < 80; i++) w[i] = ROL(w[i-3] ^ w[i-8] ^ w[i-14] ^ w[i-16], 1);
    for (int i = 0; i < 80; i++) {
        uint32_t f, k;
        if (i < 20) { f = (b & c) | (~b & d); k = 0x5A827999; }
        else if (i < 40) { f = b ^ c ^ d; k = 0x6ED9EBA1; }
        else if (i < 60) { f = (b & c) | (b & d) | (c & d); k = 0x8F1BBCDC; }
        else { f = b ^ c ^ d; k = 0xCA62C1D6; }
        uint32_t t = ROL(a, 5) + f + e + k + w[i];
        e = d; d = c; c = ROL(b, 30); b = a; a = t;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e;
}
static void sha1(const uint8_t *data, size_t len, uint8_t out[20]) {
    sha1_ctx c = {{0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0}, 0, {0}};
    size_t i = 0;
    for (; i + 64 <= len; i += 64) sha1_block(c.h, data + i);
    uint8_t tail[128] = {0};
    size_t r = len - i;
    memcpy(tail, data + i, r);
    tail[r] = 0x80;
    size_t tl = r + 1 + 8 <= 64 ? 64 : 128;
    uint64_t bits = (uint64_t)len * 8;
    for (int j = 0; j < 8; j++) tail[tl - 1 - j] = (uint8_t)(bits >> (8 * j));
    sha1_block(c.h, tail);
    if (tl == 128) sha1_block(c.h, tail + 64);
    for (int j = 0; j < 5; j++) { out[4*j] = c.h[j] >> 24; out[4*j+1] = c.h[j] >> 16; out[4*j+2] = c.h[j] >> 8; out[4*j+3] = c.h[j]; }
}
static void base64(const uint8_t *in, size_t n, char *out) {
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i+1] << 8 : 0) | (i + 2 < n ? in[i+2] : 0);
        out[o++] = t[v >> 18 & 63]; out[o++] = t[v >> 12 & 63];
        out[o++] = i + 1 < n ? t[v >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? t[v & 63] : '=';
    }
    out[o] = 0;
}

/* ---- connections ---- */
enum { HANDSHAKE = 0, OPEN = 1 };
typedef struct { int state; size_t got; char req[4096]; const uint8_t *pend; size_t pend_len; uint64_t pend_tick; } conn_t;
static conn_t **conns;  /* by fd */
static int max_fd = 65536;
static volatile sig_atomic_t stop;
static void on_signal(int s) { (void)s; stop = 1; }

static double now_s(void) { struct timespec ts; clock_gettime(CLOCK_REALTIME, &ts); return ts.tv_sec + ts.tv_nsec / 1e9; }
static double mono_s(void) { struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts); return ts.tv_sec + ts.tv_nsec / 1e9; }

static void drop(int ep, int fd) {
    epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
    close(fd);
    free(conns[fd]);
    conns[fd] = NULL;
}

static void write_all(int fd, const char *s, size_t n) {
    while (n) { ssize_t w = write(fd, s, n); if (w <= 0) return; s += w; n -= (size_t)w; }
}

static void handshake(int ep, int fd, conn_t *c) {
    char *end = strstr(c->req, "\r\n\r\n");
    if (!end) { if (c->got >= sizeof c->req - 1) drop(ep, fd); return; }
    if (strncmp(c->req, "GET /readyz", 11) == 0 || strncmp(c->req, "GET /healthz", 12) == 0) {
        const char *r = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n";
        write_all(fd, r, strlen(r));
        drop(ep, fd);
        return;
    }
    char *key = strcasestr(c->req, "\r\nSec-WebSocket-Key:");
    if (!key) { const char *r = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"; write_all(fd, r, strlen(r)); drop(ep, fd); return; }
    key += 20;
    while (*key == ' ') key++;
    char *kend = strstr(key, "\r\n");
    char buf[128];
    size_t kl = (size_t)(kend - key);
    if (kl > 60) kl = 60;
    memcpy(buf, key, kl);
    memcpy(buf + kl, "258EAFA5-E914-47DA-95CA-C5AB0DC85B11", 36);
    uint8_t digest[20];
    char accept[40];
    sha1((uint8_t *)buf, kl + 36, digest);
    base64(digest, 20, accept);
    char resp[256];
    int n = snprintf(resp, sizeof resp, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Accept: %s\r\n\r\n", accept);
    write_all(fd, resp, (size_t)n);
    c->state = OPEN;
}

int main(int argc, char **argv) {
    int port = 0;
    double tick = 1.0;
    const char *servers_path = NULL;
    double ping_s = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--port")) port = atoi(argv[i+1]);
        else if (!strcmp(argv[i], "--tick")) tick = atof(argv[i+1]);
        else if (!strcmp(argv[i], "--servers")) servers_path = argv[i+1];
        else if (!strcmp(argv[i], "--ping-s")) ping_s = atof(argv[i+1]);
    }
    int ping_slots = ping_s > 0 ? (int)(ping_s / tick + 0.5) : 0;  /* clients with fd % slots == seq % slots */
    static const uint8_t ping[6] = {0x89, 0x04, 'p', 'i', 'n', 'g'};
    if (!port || !servers_path) { fprintf(stderr, "usage: floor --port N --servers FILE [--tick S] [--ping-s S]\n"); return 2; }
    FILE *f = fopen(servers_path, "rb");
    if (!f) { perror(servers_path); return 2; }
    fseek(f, 0, SEEK_END);
    long slen = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *servers = malloc((size_t)slen + 1);
    if (fread(servers, 1, (size_t)slen, f) != (size_t)slen) { perror("read"); return 2; }
    fclose(f);
    size_t cap = (size_t)slen + 256;
    uint8_t *frame = malloc(cap + 16);

    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    conns = calloc((size_t)max_fd, sizeof *conns);
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(ls, (struct sockaddr *)&addr, sizeof addr) || listen(ls, 4096)) { perror("listen"); return 2; }
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = ls};
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    printf("floor 127.0.0.1:%d ready\n", port);
    fflush(stdout);

    char epoch[16];
    snprintf(epoch, sizeof epoch, "%08x", (unsigned)time(NULL));
    uint64_t seq = 0;
    double next = mono_s() + tick;
    struct epoll_event evs[512];
    static char rbuf[65536];
    while (!stop) {
        int timeout = (int)((next - mono_s()) * 1000);
        if (timeout < 0) timeout = 0;
        int n = epoll_wait(ep, evs, 512, timeout);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == ls) {
                for (;;) {
                    int cfd = accept4(ls, NULL, NULL, SOCK_NONBLOCK);
                    if (cfd < 0) break;
                    if (cfd >= max_fd) { close(cfd); continue; }
                    setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    conns[cfd] = calloc(1, sizeof(conn_t));
                    struct epoll_event cev = {.events = EPOLLIN, .data.fd = cfd};
                    epoll_ctl(ep, EPOLL_CTL_ADD, cfd, &cev);
                }
                continue;
            }
            conn_t *c = conns[fd];
            if (!c) continue;
            if (evs[i].events & EPOLLOUT && c->pend) {
                ssize_t w = write(fd, c->pend, c->pend_len);
                if (w > 0) { c->pend += w; c->pend_len -= (size_t)w; }
                if (!c->pend_len) {
                    c->pend = NULL;
                    struct epoll_event cev = {.events = EPOLLIN, .data.fd = fd};
                    epoll_ctl(ep, EPOLL_CTL_MOD, fd, &cev);
                }
            }
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                if (c->state == HANDSHAKE) {
                    ssize_t r = read(fd, c->req + c->got, sizeof c->req - 1 - c->got);
                    if (r <= 0) { if (r == 0 || errno != EAGAIN) drop(ep, fd); continue; }
                    c->got += (size_t)r;
                    c->req[c->got] = 0;
                    handshake(ep, fd, c);
                } else {
                    ssize_t r = read(fd, rbuf, sizeof rbuf);  /* client frames are ignored */
                    if (r == 0 || (r < 0 && errno != EAGAIN)) drop(ep, fd);
                }
            }
        }
        if (mono_s() < next) continue;
        next += tick;
        seq++;
        /* one frame per tick, the same bytes for everyone */
        char head[160];
        int hl = snprintf(head, sizeof head, "{\"type\":\"event\",\"sub\":\"sfloor\",\"cursor\":\"%s-%llu\",\"data\":{\"ts\":%lld,\"servers\":",
                          epoch, (unsigned long long)seq, (long long)(now_s() * 1000));
        size_t plen = (size_t)hl + (size_t)slen + 2;
        uint8_t *p = frame;
        *p++ = 0x81;
        if (plen < 126) *p++ = (uint8_t)plen;
        else if (plen < 65536) { *p++ = 126; *p++ = (uint8_t)(plen >> 8); *p++ = (uint8_t)plen; }
        else { *p++ = 127; for (int j = 7; j >= 0; j--) *p++ = (uint8_t)(plen >> (8 * j)); }
        memcpy(p, head, (size_t)hl); p += hl;
        memcpy(p, servers, (size_t)slen); p += slen;
        *p++ = '}'; *p++ = '}';
        size_t flen = (size_t)(p - frame);
        static uint8_t *prev;  /* the previous tick's frame stays valid for partial writes still pending */
        for (int fd = 0; fd < max_fd; fd++) {
            conn_t *c = conns[fd];
            if (!c || c->state != OPEN) continue;
            if (c->pend) continue;  /* still behind: this tick is skipped for it */
            ssize_t w;
            if (ping_slots && (uint64_t)fd % (uint64_t)ping_slots == seq % (uint64_t)ping_slots) {
                struct iovec iov[2] = {{(void *)ping, sizeof ping}, {frame, flen}};
                w = writev(fd, iov, 2);
                if (w >= (ssize_t)sizeof ping) w -= (ssize_t)sizeof ping;
                else if (w >= 0) { drop(ep, fd); continue; }  /* not even the ping went: a full buffer */
            } else {
                w = write(fd, frame, flen);
            }
            if (w < 0 && errno != EAGAIN) { drop(ep, fd); continue; }
            if (w < (ssize_t)flen) {
                c->pend = frame + (w > 0 ? w : 0);
                c->pend_len = flen - (size_t)(w > 0 ? w : 0);
                c->pend_tick = seq;
                struct epoll_event cev = {.events = EPOLLIN | EPOLLOUT, .data.fd = fd};
                epoll_ctl(ep, EPOLL_CTL_MOD, fd, &cev);
            }
        }
        /* keep this frame's bytes alive for pending writers: swap buffers */
        uint8_t *spare = prev ? prev : malloc(cap + 16);
        prev = frame;
        frame = spare;
        for (int fd = 0; fd < max_fd; fd++) {  /* a writer two ticks behind would point at reused bytes */
            conn_t *c = conns[fd];
            if (c && c->pend && c->pend_tick + 1 < seq) drop(ep, fd);
        }
    }
    return 0;
}
