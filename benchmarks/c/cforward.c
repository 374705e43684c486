/*
 * cforward: the minimal C forwarder that benchmarks/relay_bench.py measures the relay against.
 *
 * A yardstick only, never part of the product: the same job as one relay worker
 * (src/voicewire/relay/worker.py, DESIGN §4) without Python, and without what a yardstick may
 * skip (the token's MAC, flow expiry, metrics, IPv6). One thread, an epoll loop over a public and
 * an internal UDP socket on 127.0.0.1, like the worker:
 *
 *   public readable    recvmmsg up to 64 datagrams, each received 8 bytes into its buffer so the
 *                      relay header is written in front of it in place. Per datagram: look the
 *                      client address up in an open-addressing hash table; a known flow with a
 *                      first byte > 3 is forwarded; otherwise a STUN binding request's USERNAME is
 *                      parsed, the token before ':' base64-decoded for the transceiver address
 *                      (allow-listed), and the flow installed. Then one sendmmsg to the
 *                      transceivers.
 *   internal readable  recvmmsg; datagrams from the allowed network whose relay header names an
 *                      IPv4 client are sent on to it from the public socket (and the flow relearned).
 *
 * Usage: cforward --listen PORT --internal PORT [--socket-buffer BYTES] [--allow A.B.C.D/N]
 * On SIGTERM/SIGINT it prints its counters as JSON on stdout and exits 0.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BATCH 64
#define HEADROOM 8
#define MAX_DATAGRAM 65535
#define TABLE_BITS 16
#define TABLE_SIZE (1u << TABLE_BITS)
#define MAX_UFRAG 64

struct flow {
    uint64_t key; /* 0 = empty; else (ip << 16 | port) + 1 */
    struct sockaddr_in transceiver;
    uint8_t header[HEADROOM];
    uint8_t ufrag_len;
    char ufrag[MAX_UFRAG];
};

static struct flow table[TABLE_SIZE];
static unsigned flow_count;
static uint8_t up_buf[BATCH][HEADROOM + MAX_DATAGRAM];
static uint8_t down_buf[BATCH][MAX_DATAGRAM];
static volatile sig_atomic_t stopping;
static uint32_t allow_net, allow_mask;
static uint64_t up_packets, up_bytes, down_packets, dropped, send_failed, learned;

static void die(const char *what) {
    fprintf(stderr, "cforward: %s: %s\n", what, strerror(errno));
    exit(2);
}

static uint64_t flow_key(const struct sockaddr_in *a) {
    return (((uint64_t)ntohl(a->sin_addr.s_addr) << 16) | ntohs(a->sin_port)) + 1;
}

static struct flow *lookup(uint64_t key, int insert) {
    uint32_t i = (uint32_t)((key * 0x9E3779B97F4A7C15ull) >> (64 - TABLE_BITS));
    for (unsigned probes = 0; probes < TABLE_SIZE; probes++, i = (i + 1) & (TABLE_SIZE - 1)) {
        if (table[i].key == key)
            return &table[i];
        if (table[i].key == 0) {
            if (!insert || flow_count >= TABLE_SIZE * 3 / 4)
                return NULL;
            table[i].key = key;
            flow_count++;
            return &table[i];
        }
    }
    return NULL;
}

static int allowed(const struct sockaddr_in *a) {
    return (ntohl(a->sin_addr.s_addr) & allow_mask) == allow_net;
}

static void make_header(uint8_t *h, const struct sockaddr_in *client) {
    h[0] = 1;
    h[1] = 4;
    memcpy(h + 2, &client->sin_port, 2); /* both already big-endian */
    memcpy(h + 4, &client->sin_addr.s_addr, 4);
}

static int b64(int c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* The server ufrag of a binding request: 1 found, 0 not a binding request, -1 malformed. */
static int server_ufrag(const uint8_t *p, size_t size, const char **ufrag, size_t *ufrag_len) {
    if (size < 20 || p[0] != 0 || p[1] != 1 || memcmp(p + 4, "\x21\x12\xa4\x42", 4) != 0)
        return 0;
    size_t length = ((size_t)p[2] << 8) | p[3];
    if (length % 4 || 20 + length != size)
        return -1;
    size_t off = 20;
    while (off + 4 <= size) {
        unsigned kind = ((unsigned)p[off] << 8) | p[off + 1];
        size_t vlen = ((size_t)p[off + 2] << 8) | p[off + 3];
        size_t start = off + 4, end = start + vlen;
        if (end > size)
            return -1;
        if (kind == 0x0006) {
            const uint8_t *colon = memchr(p + start, ':', vlen);
            if (!colon || colon == p + start)
                return -1;
            *ufrag = (const char *)(p + start);
            *ufrag_len = (size_t)(colon - (p + start));
            return 1;
        }
        off = end + ((4 - vlen % 4) % 4);
    }
    return -1;
}

/* Token v1 for IPv4 (38 chars → 28 bytes): version, key id, cluster(2), ip(4), port(2), ... */
static int token_transceiver(const char *u, size_t len, struct sockaddr_in *out) {
    uint8_t raw[28];
    if (len != 38)
        return -1;
    uint32_t acc = 0;
    int bits = 0;
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64((unsigned char)u[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (n < sizeof raw)
                raw[n++] = (uint8_t)(acc >> bits);
        }
    }
    if (n != sizeof raw || raw[0] != 1)
        return -1;
    memset(out, 0, sizeof *out);
    out->sin_family = AF_INET;
    memcpy(&out->sin_addr.s_addr, raw + 4, 4);
    memcpy(&out->sin_port, raw + 8, 2);
    return 0;
}

static struct flow *admit(const uint8_t *p, size_t size, const struct sockaddr_in *client,
                          struct flow *known) {
    if (size == 0 || p[0] > 3)
        return NULL;
    const char *ufrag;
    size_t ulen;
    int found = server_ufrag(p, size, &ufrag, &ulen);
    if (found == 0)
        return known; /* other STUN on a vetted flow: the transceiver judges it */
    if (found < 0 || ulen > MAX_UFRAG)
        return NULL;
    if (known && known->ufrag_len == ulen && memcmp(known->ufrag, ufrag, ulen) == 0)
        return known;
    struct sockaddr_in transceiver;
    if (token_transceiver(ufrag, ulen, &transceiver) < 0 || !allowed(&transceiver))
        return NULL;
    struct flow *f = known ? known : lookup(flow_key(client), 1);
    if (!f)
        return NULL;
    f->transceiver = transceiver;
    make_header(f->header, client);
    f->ufrag_len = (uint8_t)ulen;
    memcpy(f->ufrag, ufrag, ulen);
    learned++;
    return f;
}

static void send_all(int fd, struct mmsghdr *msgs, unsigned count) {
    unsigned done = 0;
    while (done < count) {
        int r = sendmmsg(fd, msgs + done, count - done, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            send_failed++;
            done++; /* skip the datagram the kernel refused */
            continue;
        }
        done += (unsigned)r;
    }
}

static void pump_upstream(int pub, int internal) {
    static struct mmsghdr in[BATCH], out[BATCH];
    static struct iovec in_iov[BATCH], out_iov[BATCH];
    static struct sockaddr_in clients[BATCH];
    for (int i = 0; i < BATCH; i++) {
        in_iov[i].iov_base = up_buf[i] + HEADROOM;
        in_iov[i].iov_len = MAX_DATAGRAM;
        in[i].msg_hdr.msg_iov = &in_iov[i];
        in[i].msg_hdr.msg_iovlen = 1;
        in[i].msg_hdr.msg_name = &clients[i];
        in[i].msg_hdr.msg_namelen = sizeof clients[i];
    }
    int r = recvmmsg(pub, in, BATCH, MSG_DONTWAIT, NULL);
    if (r <= 0)
        return;
    unsigned n = 0;
    for (int i = 0; i < r; i++) {
        size_t size = in[i].msg_len;
        const uint8_t *p = up_buf[i] + HEADROOM;
        struct flow *f = lookup(flow_key(&clients[i]), 0);
        if (!f || size == 0 || p[0] <= 3) {
            f = admit(p, size, &clients[i], f);
            if (!f) {
                dropped++;
                continue;
            }
        }
        memcpy(up_buf[i], f->header, HEADROOM);
        out_iov[n].iov_base = up_buf[i];
        out_iov[n].iov_len = size + HEADROOM;
        out[n].msg_hdr.msg_iov = &out_iov[n];
        out[n].msg_hdr.msg_iovlen = 1;
        out[n].msg_hdr.msg_name = &f->transceiver;
        out[n].msg_hdr.msg_namelen = sizeof f->transceiver;
        up_bytes += size;
        n++;
    }
    send_all(internal, out, n);
    up_packets += n;
}

static void pump_downstream(int pub, int internal) {
    static struct mmsghdr in[BATCH], out[BATCH];
    static struct iovec in_iov[BATCH], out_iov[BATCH];
    static struct sockaddr_in from[BATCH], to[BATCH];
    for (int i = 0; i < BATCH; i++) {
        in_iov[i].iov_base = down_buf[i];
        in_iov[i].iov_len = MAX_DATAGRAM;
        in[i].msg_hdr.msg_iov = &in_iov[i];
        in[i].msg_hdr.msg_iovlen = 1;
        in[i].msg_hdr.msg_name = &from[i];
        in[i].msg_hdr.msg_namelen = sizeof from[i];
    }
    int r = recvmmsg(internal, in, BATCH, MSG_DONTWAIT, NULL);
    if (r <= 0)
        return;
    unsigned n = 0;
    for (int i = 0; i < r; i++) {
        const uint8_t *p = down_buf[i];
        size_t size = in[i].msg_len;
        if (!allowed(&from[i]) || size < HEADROOM || p[0] != 1 || p[1] != 4) {
            dropped++;
            continue;
        }
        memset(&to[n], 0, sizeof to[n]);
        to[n].sin_family = AF_INET;
        memcpy(&to[n].sin_port, p + 2, 2);
        memcpy(&to[n].sin_addr.s_addr, p + 4, 4);
        struct flow *f = lookup(flow_key(&to[n]), 1);
        if (f && (f->transceiver.sin_port != from[i].sin_port ||
                  f->transceiver.sin_addr.s_addr != from[i].sin_addr.s_addr)) {
            f->transceiver = from[i];
            memcpy(f->header, p, HEADROOM);
            f->ufrag_len = 0;
            learned++;
        }
        out_iov[n].iov_base = down_buf[i] + HEADROOM;
        out_iov[n].iov_len = size - HEADROOM;
        out[n].msg_hdr.msg_iov = &out_iov[n];
        out[n].msg_hdr.msg_iovlen = 1;
        out[n].msg_hdr.msg_name = &to[n];
        out[n].msg_hdr.msg_namelen = sizeof to[n];
        n++;
    }
    send_all(pub, out, n);
    down_packets += n;
}

static int udp_socket(uint16_t port, int buffer) {
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0)
        die("socket");
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buffer, sizeof buffer);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buffer, sizeof buffer);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0)
        die("bind");
    return fd;
}

static void on_signal(int sig) {
    (void)sig;
    stopping = 1;
}

int main(int argc, char **argv) {
    int listen_port = 0, internal_port = 0, buffer = 425984;
    const char *allow = "127.0.0.0/8";
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--listen")) listen_port = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--internal")) internal_port = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--socket-buffer")) buffer = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--allow")) allow = argv[i + 1];
        else listen_port = -1;
    }
    char net[32];
    int prefix = 0;
    struct in_addr addr;
    if (listen_port <= 0 || internal_port <= 0 || buffer <= 0 ||
        sscanf(allow, "%31[0-9.]/%d", net, &prefix) != 2 || prefix < 0 || prefix > 32 ||
        inet_pton(AF_INET, net, &addr) != 1) {
        fprintf(stderr, "usage: cforward --listen PORT --internal PORT [--socket-buffer BYTES] "
                        "[--allow A.B.C.D/N]\n");
        return 1;
    }
    allow_mask = prefix ? ~0u << (32 - prefix) : 0;
    allow_net = ntohl(addr.s_addr) & allow_mask;

    int pub = udp_socket((uint16_t)listen_port, buffer);
    int internal = udp_socket((uint16_t)internal_port, buffer);
    struct sigaction sa = {.sa_handler = on_signal}; /* no SA_RESTART: epoll_wait returns EINTR */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN};
    ev.data.fd = pub;
    epoll_ctl(ep, EPOLL_CTL_ADD, pub, &ev);
    ev.data.fd = internal;
    epoll_ctl(ep, EPOLL_CTL_ADD, internal, &ev);

    while (!stopping) {
        struct epoll_event events[2];
        int n = epoll_wait(ep, events, 2, 250);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            if (events[i].data.fd == pub)
                pump_upstream(pub, internal);
            else
                pump_downstream(pub, internal);
        }
    }
    printf("{\"upstream_packets\": %" PRIu64 ", \"upstream_bytes\": %" PRIu64
           ", \"downstream_packets\": %" PRIu64 ", \"dropped\": %" PRIu64
           ", \"send_failed\": %" PRIu64 ", \"flows_learned\": %" PRIu64 ", \"flows\": %u}\n",
           up_packets, up_bytes, down_packets, dropped, send_failed, learned, flow_count);
    return 0;
}
