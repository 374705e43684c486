/*
 * loadgen: load generator and sink ("transceiver") for benchmarks/relay_bench.py.
 *
 * A yardstick, never part of the product. One process, two threads, both pinned by the caller
 * (taskset) to the load core:
 *
 *   sender    N client UDP sockets on 127.0.0.1, each connected to --target. First one STUN
 *             binding request per flow (USERNAME = "<token>:bench", tokens from --tokens, one a
 *             line), resent until the sink has seen every flow's; then 160-byte RTP-like
 *             datagrams (first byte 0x80) carrying a global sequence number and a CLOCK_REALTIME
 *             send time, paced against an absolute schedule at --rate for --duration, with
 *             sendmmsg bursts of up to --burst datagrams per flow, flows taken round-robin.
 *   receiver  the sink socket on 127.0.0.1:--sink-port. recvmmsg; with --header 1 checks and
 *             strips the 8-byte relay header (it must name the flow that sent the datagram);
 *             counts unique sequence numbers (loss, duplicates, reordering) and records one-way
 *             latency into histograms.
 *
 * Latency: the primary figure uses the kernel's receive timestamp (SO_TIMESTAMPNS, taken when the
 * datagram enters the loopback device, i.e. inside the forwarder's send call) minus the send time.
 * It ends where the forwarder's work ends, so the sink's own scheduling on the shared load core
 * does not blur it. The time at which the sink read the datagram is reported too ("app").
 *
 * Sender and sink are threads of one process so that flow setup (wait until every STUN request
 * arrived), the measurement window and the end of the trial need no IPC. Output: one JSON object
 * on stdout. Exit status 0 on a completed trial, 2 on a broken setup, 1 on bad arguments.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#ifndef SO_MEMINFO
#define SO_MEMINFO 55
#endif
#define SK_MEMINFO_DROPS 8

#define DATAGRAM 160
#define MAX_BATCH 64
#define RECV_BUF 2048
#define HEADER 8
#define MAX_FLOWS 4096
#define FINE_BUCKETS 100000 /* 100 ns each: 0 .. 10 ms */
#define COARSE_BUCKETS 100000 /* 10 us each: 10 ms .. 1 s */
#define NS 1000000000LL

/* payload layout after the 12-byte RTP header */
#define OFF_SEQ 12
#define OFF_SENT 20
#define OFF_FLOW 28

struct histogram {
    uint32_t buckets[FINE_BUCKETS + COARSE_BUCKETS + 1];
    uint64_t count;
    int64_t max_ns;
    double sum_ns;
    uint64_t negative;
};

static struct {
    uint16_t target_port, sink_port;
    int flows, header, burst, gso;
    double rate, duration, warmup, setup_timeout;
    int sink_buffer;
    const char *tokens_path;
} cfg = {.flows = 200, .burst = 8, .duration = 2.0, .setup_timeout = 5.0,
         .sink_buffer = 16 << 20};

static int client_fd[MAX_FLOWS];
static int32_t flow_of_port[65536];
static char *tokens[MAX_FLOWS];
static int token_count;
static int sink_fd;

static atomic_int phase;            /* 0 setup, 1 sending, 2 sender done */
static atomic_uchar stun_seen[MAX_FLOWS];
static atomic_int stun_flows;
static atomic_uint_fast64_t sent_total;
static atomic_llong measure_from_rt; /* CLOCK_REALTIME ns; latencies of earlier sends are ignored */
static int64_t done_mono;

/* receiver results */
static uint8_t *seen_bits;
static uint64_t planned;
static uint64_t unique, duplicates, reordered, stray, header_errors, stun_datagrams;
static uint64_t max_seq_plus1;
static struct histogram kernel_lat, app_lat;
static uint64_t no_kernel_stamp;

/* sender results */
static uint64_t send_errors, stun_rounds;
static int64_t send_start_mono, send_end_mono;

static int64_t now_ns(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (int64_t)ts.tv_sec * NS + ts.tv_nsec;
}

static void die(const char *what) {
    fprintf(stderr, "loadgen: %s: %s\n", what, strerror(errno));
    exit(2);
}

static void hist_add(struct histogram *h, int64_t ns) {
    if (ns < 0) {
        h->negative++;
        ns = 0;
    }
    size_t idx;
    if (ns < 10000000)
        idx = (size_t)(ns / 100);
    else if (ns < 10000000 + (int64_t)COARSE_BUCKETS * 10000)
        idx = FINE_BUCKETS + (size_t)((ns - 10000000) / 10000);
    else
        idx = FINE_BUCKETS + COARSE_BUCKETS;
    h->buckets[idx]++;
    h->count++;
    h->sum_ns += (double)ns;
    if (ns > h->max_ns)
        h->max_ns = ns;
}

static double bucket_us(size_t idx, int64_t max_ns) {
    if (idx < FINE_BUCKETS)
        return (idx * 100 + 50) / 1000.0;
    if (idx < FINE_BUCKETS + COARSE_BUCKETS)
        return (10000000 + (idx - FINE_BUCKETS) * 10000.0 + 5000) / 1000.0;
    return max_ns / 1000.0;
}

static double hist_quantile(const struct histogram *h, double q) {
    if (!h->count)
        return -1;
    uint64_t rank = (uint64_t)ceil(q * (double)h->count);
    if (rank < 1)
        rank = 1;
    uint64_t acc = 0;
    for (size_t i = 0; i < FINE_BUCKETS + COARSE_BUCKETS + 1; i++) {
        acc += h->buckets[i];
        if (acc >= rank)
            return bucket_us(i, h->max_ns);
    }
    return h->max_ns / 1000.0;
}

static void hist_json(const char *name, const struct histogram *h) {
    printf("\"%s\": {\"count\": %" PRIu64 ", \"p50_us\": %.2f, \"p90_us\": %.2f, "
           "\"p99_us\": %.2f, \"p999_us\": %.2f, \"max_us\": %.2f, \"mean_us\": %.2f, "
           "\"negative\": %" PRIu64 "}",
           name, h->count, hist_quantile(h, 0.50), hist_quantile(h, 0.90),
           hist_quantile(h, 0.99), hist_quantile(h, 0.999), h->max_ns / 1000.0,
           h->count ? h->sum_ns / h->count / 1000.0 : -1.0, h->negative);
}

static size_t stun_request(uint8_t *out, size_t cap, int flow) {
    const char *token = tokens[flow % token_count];
    char username[600];
    int ulen = snprintf(username, sizeof username, "%s:bench", token);
    size_t padded = ((size_t)ulen + 3) & ~(size_t)3;
    size_t size = 20 + 4 + padded;
    if (ulen <= 0 || ulen > 512 || size > cap) {
        fprintf(stderr, "loadgen: token %d is too long\n", flow);
        exit(1);
    }
    memset(out, 0, size);
    out[0] = 0x00;
    out[1] = 0x01; /* binding request */
    out[2] = (uint8_t)((size - 20) >> 8);
    out[3] = (uint8_t)(size - 20);
    out[4] = 0x21; out[5] = 0x12; out[6] = 0xa4; out[7] = 0x42; /* magic cookie */
    uint32_t f = htonl((uint32_t)flow);
    memcpy(out + 8, "vwbench!", 8);
    memcpy(out + 16, &f, 4); /* transaction id names the flow */
    out[20] = 0x00; out[21] = 0x06; /* USERNAME */
    out[22] = (uint8_t)(ulen >> 8);
    out[23] = (uint8_t)ulen;
    memcpy(out + 24, username, (size_t)ulen);
    return size;
}

static void put64(uint8_t *p, uint64_t v) {
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static uint64_t get64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

static void sleep_until_mono(int64_t t) {
    struct timespec ts = {.tv_sec = t / NS, .tv_nsec = t % NS};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

static void *sender(void *arg) {
    (void)arg;
    static uint8_t bufs[MAX_BATCH][DATAGRAM]; /* contiguous: one GSO send can carry them all */
    static struct iovec iov[MAX_BATCH];
    static struct mmsghdr msgs[MAX_BATCH];
    uint8_t stun[700];

    /* setup: one binding request per flow, resent to the flows not yet seen at the sink */
    int64_t setup_end = now_ns(CLOCK_MONOTONIC) + (int64_t)(cfg.setup_timeout * NS);
    while (atomic_load(&stun_flows) < cfg.flows) {
        if (now_ns(CLOCK_MONOTONIC) > setup_end)
            break;
        stun_rounds++;
        for (int f = 0; f < cfg.flows; f++) {
            if (atomic_load(&stun_seen[f]))
                continue;
            size_t size = stun_request(stun, sizeof stun, f);
            if (send(client_fd[f], stun, size, 0) < 0 && errno != ECONNREFUSED)
                die("send STUN");
        }
        for (int i = 0; i < 50 && atomic_load(&stun_flows) < cfg.flows; i++)
            usleep(5000);
    }
    if (atomic_load(&stun_flows) < cfg.flows) {
        atomic_store(&phase, 2);
        return NULL;
    }

    for (int i = 0; i < MAX_BATCH; i++) {
        memset(bufs[i], 0, DATAGRAM);
        bufs[i][0] = 0x80;
        bufs[i][1] = 111; /* Opus-like payload type */
        iov[i].iov_base = bufs[i];
        iov[i].iov_len = DATAGRAM;
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    int min_batch = (int)lround(cfg.rate * 20e-6); /* one wake-up per ~20 us at most */
    if (min_batch < 1)
        min_batch = 1;
    if (min_batch > cfg.burst)
        min_batch = cfg.burst;

    int64_t t0 = now_ns(CLOCK_MONOTONIC);
    int64_t t_end = t0 + (int64_t)(cfg.duration * NS);
    atomic_store(&measure_from_rt, now_ns(CLOCK_REALTIME) + (int64_t)(cfg.warmup * NS));
    send_start_mono = t0;
    atomic_store(&phase, 1);
    uint64_t sent = 0;
    int flow = 0;
    while (sent < planned) {
        int64_t now = now_ns(CLOCK_MONOTONIC);
        if (now >= t_end)
            break;
        uint64_t due = (uint64_t)((double)(now - t0) * cfg.rate / 1e9) + 1;
        if (due > planned)
            due = planned;
        if (due < sent + (uint64_t)min_batch && due < planned) {
            sleep_until_mono(t0 + (int64_t)((double)(sent + min_batch - 1) * 1e9 / cfg.rate));
            continue;
        }
        uint64_t todo = due - sent;
        if (todo > MAX_BATCH)
            todo = MAX_BATCH;
        while (todo > 0) {
            int n = todo < (uint64_t)cfg.burst ? (int)todo : cfg.burst;
            int64_t stamp = now_ns(CLOCK_REALTIME);
            for (int i = 0; i < n; i++) {
                uint8_t *b = bufs[i];
                uint64_t seq = sent + (uint64_t)i;
                b[2] = (uint8_t)(seq >> 8);
                b[3] = (uint8_t)seq;
                put64(b + OFF_SEQ, seq);
                put64(b + OFF_SENT, (uint64_t)stamp);
                b[OFF_FLOW] = (uint8_t)(flow >> 8);
                b[OFF_FLOW + 1] = (uint8_t)flow;
            }
            int r;
            if (cfg.gso) { /* one send, split into n datagrams by UDP_SEGMENT */
                r = send(client_fd[flow], bufs, (size_t)n * DATAGRAM, 0) < 0 ? -1 : n;
            } else {
                r = sendmmsg(client_fd[flow], msgs, (unsigned)n, 0);
            }
            if (r < 0) {
                if (errno == EINTR)
                    continue;
                send_errors += (uint64_t)n; /* counted as sent: they are lost */
                r = n;
            }
            sent += (uint64_t)r;
            todo -= (uint64_t)r;
            flow = (flow + 1) % cfg.flows;
        }
    }
    send_end_mono = now_ns(CLOCK_MONOTONIC);
    atomic_store(&sent_total, sent);
    done_mono = send_end_mono;
    atomic_store(&phase, 2);
    return NULL;
}

static void receive_one(const uint8_t *data, size_t len, const struct sockaddr_in *from,
                        int64_t kstamp, int64_t now_rt, int64_t measure_from) {
    int port_flow = -1;
    if (cfg.header) {
        if (len < HEADER || data[0] != 1 || data[1] != 4 ||
            memcmp(data + 4, "\x7f\x00\x00\x01", 4) != 0) {
            header_errors++;
            return;
        }
        port_flow = flow_of_port[(data[2] << 8) | data[3]];
        data += HEADER;
        len -= HEADER;
    } else {
        port_flow = flow_of_port[ntohs(from->sin_port)];
    }
    if (len >= 20 && data[0] <= 3) { /* STUN: the flow's binding request arrived */
        stun_datagrams++;
        int f = port_flow;
        if (f < 0 || memcmp(data + 8, "vwbench!", 8) != 0 ||
            (int)((data[16] << 24) | (data[17] << 16) | (data[18] << 8) | data[19]) != f) {
            header_errors++;
            return;
        }
        if (!atomic_exchange(&stun_seen[f], 1))
            atomic_fetch_add(&stun_flows, 1);
        return;
    }
    if (len != DATAGRAM || data[0] != 0x80) {
        stray++;
        return;
    }
    uint64_t seq = get64(data + OFF_SEQ);
    int flow = (data[OFF_FLOW] << 8) | data[OFF_FLOW + 1];
    if (flow != port_flow) {
        header_errors++;
        return;
    }
    if (seq >= planned) {
        stray++;
        return;
    }
    uint8_t bit = (uint8_t)(1u << (seq & 7));
    if (seen_bits[seq >> 3] & bit) {
        duplicates++;
        return;
    }
    seen_bits[seq >> 3] |= bit;
    unique++;
    if (seq + 1 < max_seq_plus1)
        reordered++;
    else
        max_seq_plus1 = seq + 1;
    int64_t sent_rt = (int64_t)get64(data + OFF_SENT);
    if (measure_from && sent_rt >= measure_from) {
        if (kstamp)
            hist_add(&kernel_lat, kstamp - sent_rt);
        else
            no_kernel_stamp++;
        hist_add(&app_lat, now_rt - sent_rt);
    }
}

static void *receiver(void *arg) {
    (void)arg;
    static uint8_t bufs[MAX_BATCH][RECV_BUF];
    static struct iovec iov[MAX_BATCH];
    static struct mmsghdr msgs[MAX_BATCH];
    static struct sockaddr_in from[MAX_BATCH];
    static uint8_t ctrl[MAX_BATCH][CMSG_SPACE(sizeof(struct timespec)) + 64];
    for (int i = 0; i < MAX_BATCH; i++) {
        iov[i].iov_base = bufs[i];
        iov[i].iov_len = RECV_BUF;
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        msgs[i].msg_hdr.msg_name = &from[i];
        msgs[i].msg_hdr.msg_control = ctrl[i];
    }
    int64_t last_rx = now_ns(CLOCK_MONOTONIC);
    for (;;) {
        for (int i = 0; i < MAX_BATCH; i++) {
            msgs[i].msg_hdr.msg_namelen = sizeof from[i];
            msgs[i].msg_hdr.msg_controllen = sizeof ctrl[i];
        }
        int r = recvmmsg(sink_fd, msgs, MAX_BATCH, MSG_WAITFORONE, NULL);
        int64_t mono = now_ns(CLOCK_MONOTONIC);
        if (r > 0) {
            int64_t now_rt = now_ns(CLOCK_REALTIME);
            int64_t measure_from = atomic_load(&measure_from_rt);
            last_rx = mono;
            for (int i = 0; i < r; i++) {
                int64_t kstamp = 0;
                struct msghdr *h = &msgs[i].msg_hdr;
                for (struct cmsghdr *c = CMSG_FIRSTHDR(h); c; c = CMSG_NXTHDR(h, c)) {
                    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
                        struct timespec ts;
                        memcpy(&ts, CMSG_DATA(c), sizeof ts);
                        kstamp = (int64_t)ts.tv_sec * NS + ts.tv_nsec;
                    }
                }
                receive_one(bufs[i], msgs[i].msg_len, &from[i], kstamp, now_rt, measure_from);
            }
        } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            die("recvmmsg");
        }
        int p = atomic_load(&phase);
        if (p == 2) {
            uint64_t total = atomic_load(&sent_total);
            if (total == 0 && atomic_load(&stun_flows) < cfg.flows)
                break; /* setup failed */
            if (unique >= total)
                break;
            if (mono - last_rx > 200000000LL && mono - done_mono > 200000000LL)
                break;
            if (mono - done_mono > 3 * NS)
                break;
        }
    }
    return NULL;
}

static void read_tokens(void) {
    FILE *f = fopen(cfg.tokens_path, "r");
    if (!f)
        die(cfg.tokens_path);
    char line[1024];
    while (token_count < MAX_FLOWS && fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = 0;
        if (line[0])
            tokens[token_count++] = strdup(line);
    }
    fclose(f);
    if (!token_count) {
        fprintf(stderr, "loadgen: no tokens in %s\n", cfg.tokens_path);
        exit(1);
    }
}

static void usage(void) {
    fprintf(stderr,
            "usage: loadgen --target PORT --sink-port PORT --tokens FILE --rate PPS\n"
            "               [--duration S] [--warmup S] [--flows N] [--header 0|1]\n"
            "               [--burst N] [--setup-timeout S] [--sink-buffer BYTES]\n");
    exit(1);
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i += 2) {
        if (i + 1 >= argc)
            usage();
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--target")) cfg.target_port = (uint16_t)atoi(v);
        else if (!strcmp(k, "--sink-port")) cfg.sink_port = (uint16_t)atoi(v);
        else if (!strcmp(k, "--tokens")) cfg.tokens_path = v;
        else if (!strcmp(k, "--rate")) cfg.rate = atof(v);
        else if (!strcmp(k, "--duration")) cfg.duration = atof(v);
        else if (!strcmp(k, "--warmup")) cfg.warmup = atof(v);
        else if (!strcmp(k, "--flows")) cfg.flows = atoi(v);
        else if (!strcmp(k, "--header")) cfg.header = atoi(v);
        else if (!strcmp(k, "--burst")) cfg.burst = atoi(v);
        else if (!strcmp(k, "--gso")) cfg.gso = atoi(v);
        else if (!strcmp(k, "--setup-timeout")) cfg.setup_timeout = atof(v);
        else if (!strcmp(k, "--sink-buffer")) cfg.sink_buffer = atoi(v);
        else usage();
    }
    if (!cfg.target_port || !cfg.sink_port || !cfg.tokens_path || cfg.rate <= 0 ||
        cfg.duration <= 0 || cfg.duration > 60 || cfg.flows < 1 || cfg.flows > MAX_FLOWS ||
        cfg.burst < 1 || cfg.burst > MAX_BATCH || cfg.rate * cfg.duration > 2e8)
        usage();
    read_tokens();
    prctl(PR_SET_TIMERSLACK, 1UL); /* accurate pacing: wake-ups within ~1 us of the schedule */

    planned = (uint64_t)llround(cfg.rate * cfg.duration);
    seen_bits = calloc(planned / 8 + 1, 1);
    if (!seen_bits)
        die("calloc");
    for (int i = 0; i < 65536; i++)
        flow_of_port[i] = -1;

    struct sockaddr_in loop = {.sin_family = AF_INET};
    loop.sin_addr.s_addr = htonl(INADDR_LOOPBACK);

    sink_fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (sink_fd < 0)
        die("socket");
    if (setsockopt(sink_fd, SOL_SOCKET, SO_RCVBUFFORCE, &cfg.sink_buffer, sizeof(int)) < 0)
        setsockopt(sink_fd, SOL_SOCKET, SO_RCVBUF, &cfg.sink_buffer, sizeof(int));
    int on = 1;
    if (setsockopt(sink_fd, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof on) < 0)
        die("SO_TIMESTAMPNS");
    struct timeval tv = {.tv_sec = 0, .tv_usec = 20000};
    setsockopt(sink_fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in sink_addr = loop;
    sink_addr.sin_port = htons(cfg.sink_port);
    if (bind(sink_fd, (struct sockaddr *)&sink_addr, sizeof sink_addr) < 0)
        die("bind sink");

    struct sockaddr_in target = loop;
    target.sin_port = htons(cfg.target_port);
    for (int f = 0; f < cfg.flows; f++) {
        int fd = socket(AF_INET, SOCK_DGRAM, 0);
        if (fd < 0)
            die("socket");
        struct sockaddr_in any = loop;
        any.sin_port = 0;
        if (bind(fd, (struct sockaddr *)&any, sizeof any) < 0)
            die("bind client");
        if (connect(fd, (struct sockaddr *)&target, sizeof target) < 0)
            die("connect client");
        int segment = DATAGRAM;
        if (cfg.gso && setsockopt(fd, SOL_UDP, UDP_SEGMENT, &segment, sizeof segment) < 0)
            die("UDP_SEGMENT");
        struct sockaddr_in me;
        socklen_t len = sizeof me;
        getsockname(fd, (struct sockaddr *)&me, &len);
        flow_of_port[ntohs(me.sin_port)] = f;
        client_fd[f] = fd;
    }

    pthread_t rx, tx;
    if (pthread_create(&rx, NULL, receiver, NULL) || pthread_create(&tx, NULL, sender, NULL))
        die("pthread_create");
    pthread_join(tx, NULL);
    pthread_join(rx, NULL);

    uint32_t meminfo[16] = {0};
    socklen_t mlen = sizeof meminfo;
    long long sink_drops = -1;
    if (getsockopt(sink_fd, SOL_SOCKET, SO_MEMINFO, meminfo, &mlen) == 0 &&
        mlen > SK_MEMINFO_DROPS * sizeof(uint32_t))
        sink_drops = meminfo[SK_MEMINFO_DROPS];

    uint64_t sent = atomic_load(&sent_total);
    int ok = atomic_load(&stun_flows) == cfg.flows;
    double seconds = sent ? (send_end_mono - send_start_mono) / 1e9 : 0;
    printf("{\"ok\": %s, \"flows\": %d, \"flows_set_up\": %d, \"stun_rounds\": %" PRIu64 ", "
           "\"stun_datagrams\": %" PRIu64 ", \"target_pps\": %.0f, \"duration_s\": %.3f, "
           "\"planned\": %" PRIu64 ", \"sent\": %" PRIu64 ", \"send_seconds\": %.4f, "
           "\"achieved_pps\": %.0f, \"send_errors\": %" PRIu64 ", \"received\": %" PRIu64
           ", \"lost\": %" PRIu64 ", \"duplicates\": %" PRIu64 ", \"reordered\": %" PRIu64
           ", \"stray\": %" PRIu64 ", \"header_errors\": %" PRIu64 ", \"sink_drops\": %lld, "
           "\"no_kernel_stamp\": %" PRIu64 ", ",
           ok ? "true" : "false", cfg.flows, atomic_load(&stun_flows), stun_rounds,
           stun_datagrams, cfg.rate, cfg.duration, planned, sent, seconds,
           seconds > 0 ? sent / seconds : 0.0, send_errors, unique,
           sent > unique ? sent - unique : 0, duplicates, reordered, stray, header_errors,
           sink_drops, no_kernel_stamp);
    hist_json("latency", &kernel_lat);
    printf(", ");
    hist_json("app_latency", &app_lat);
    printf("}\n");
    if (!ok) {
        fprintf(stderr, "loadgen: only %d of %d flows were set up within %.1f s\n",
                atomic_load(&stun_flows), cfg.flows, cfg.setup_timeout);
        return 2;
    }
    return 0;
}
