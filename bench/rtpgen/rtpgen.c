/* RTP load generator for bench/media.py: 2N UDP streams of 20 ms G.711 packets (172 bytes),
 * each payload stamped with its CLOCK_MONOTONIC send time, spread over the period in 10
 * phases; counts what comes back and the one-way delays. Written in C so the generator takes
 * little of the CPU the relay under test needs.
 *
 *   rtpgen STREAMS SECONDS   prints the bound ports (one line), reads one destination port per
 *                            stream (one line, host 127.0.0.1), runs, prints a JSON result. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PHASES 10
#define PERIOD_NS 20000000LL

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int cmp64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: rtpgen STREAMS SECONDS\n"); return 2; }
    int n = atoi(argv[1]);
    double seconds = atof(argv[2]);
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl); rl.rlim_cur = rl.rlim_max; setrlimit(RLIMIT_NOFILE, &rl);
    int *fds = calloc(n, sizeof(int));
    struct sockaddr_in *dst = calloc(n, sizeof(struct sockaddr_in));
    uint32_t *ssrc = calloc(n, sizeof(uint32_t));
    int ep = epoll_create1(0);
    for (int i = 0; i < n; i++) {
        fds[i] = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        int buf = 1 << 20;
        setsockopt(fds[i], SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
        struct sockaddr_in a = {.sin_family = AF_INET};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (bind(fds[i], (struct sockaddr *)&a, sizeof a) < 0) { perror("bind"); return 1; }
        socklen_t len = sizeof a;
        getsockname(fds[i], (struct sockaddr *)&a, &len);
        printf("%s%d", i ? " " : "", ntohs(a.sin_port));
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev);
        ssrc[i] = (uint32_t)rand() * 2654435761u + i;
    }
    printf("\n");
    fflush(stdout);
    for (int i = 0; i < n; i++) {
        int port;
        if (scanf("%d", &port) != 1) { fprintf(stderr, "missing destination %d\n", i); return 1; }
        dst[i].sin_family = AF_INET;
        dst[i].sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        dst[i].sin_port = htons((uint16_t)port);
    }
    long frames = (long)(seconds * 50);
    size_t cap = (size_t)n * (size_t)frames + 16;
    int64_t *delays = malloc(cap * sizeof(int64_t));
    size_t received = 0, sent = 0, send_errors = 0;
    unsigned char pkt[172], in[2048];
    memset(pkt, 0xff, sizeof pkt);
    pkt[0] = 0x80; pkt[1] = 0;
    struct epoll_event evs[256];
    int64_t start = now_ns() + 50000000LL;
    clock_t cpu0 = clock();
    int64_t end_at = 0;  /* the final drain: 0.5 s after the last send, however late that was */
    for (long f = 0; ; ) {
        int phase_done = f >= frames;
        if (phase_done && !end_at) end_at = now_ns() + 500000000LL;
        int64_t due = phase_done ? end_at : start + f * PERIOD_NS;
        for (int g = 0; g < PHASES; g++) {
            int64_t gdue = phase_done ? end_at : due + g * (PERIOD_NS / PHASES);
            for (;;) {
                int64_t wait = gdue - now_ns();
                if (wait <= 0) break;
                int k = epoll_wait(ep, evs, 256, (int)((wait + 999999) / 1000000));
                for (int e = 0; e < k; e++) {
                    int fd = fds[evs[e].data.u32];
                    for (;;) {
                        ssize_t r = recv(fd, in, sizeof in, 0);
                        if (r < 0) break;
                        int64_t t = now_ns();
                        if (r >= 20 && received < cap) {
                            int64_t s; memcpy(&s, in + 12, 8);
                            delays[received] = t - s;
                        }
                        received++;
                    }
                }
            }
            if (phase_done) break;
            for (int i = g; i < n; i += PHASES) {
                uint16_t seq = htons((uint16_t)f);
                uint32_t ts = htonl((uint32_t)(f * 160)), ss = htonl(ssrc[i]);
                memcpy(pkt + 2, &seq, 2); memcpy(pkt + 4, &ts, 4); memcpy(pkt + 8, &ss, 4);
                int64_t t = now_ns(); memcpy(pkt + 12, &t, 8);
                if (sendto(fds[i], pkt, sizeof pkt, 0, (struct sockaddr *)&dst[i], sizeof dst[i]) < 0)
                    send_errors++;
                else
                    sent++;
            }
        }
        if (phase_done) break;
        f++;
    }
    double cpu = (double)(clock() - cpu0) / CLOCKS_PER_SEC;
    size_t m = received < cap ? received : cap;
    qsort(delays, m, sizeof(int64_t), cmp64);
    double p50 = m ? delays[m / 2] / 1e6 : 0, p99 = m ? delays[(size_t)(m * 0.99)] / 1e6 : 0;
    double mx = m ? delays[m - 1] / 1e6 : 0;
    printf("{\"sent\": %zu, \"received\": %zu, \"send_errors\": %zu, \"p50_ms\": %.4f, \"p99_ms\": %.4f, "
           "\"max_ms\": %.4f, \"generator_cpu\": %.4f}\n",
           sent, received, send_errors, p50, p99, mx, cpu / (seconds + 0.5));
    return 0;
}
