/* A refusal storm at packet rate: raw TCP SYNs to a closed loopback port, each answered by the
 * kernel with a RST (a refused connection, as a client on another node would see it), bounded by
 * time and count.
 *
 * usage: synstorm [-a ADDR] [-p PORT] [-s SECONDS] [-n COUNT] [-b BATCH]
 *   ADDR 127.0.0.1 (destination and source), PORT 9 (nothing may listen there), SECONDS 5,
 *   COUNT 0 (= no count bound), BATCH 64 (packets per sendmmsg call).
 * Prints one line of JSON: {"syns": N, "send_errors": E, "seconds": S, "syn_per_s": X, "cpu_s": C,
 * "syn_per_cpu_s": Y}. Exit 0; 1 if sending failed; 2 for bad arguments.
 *
 * Why: a connect() storm (storm.c) costs ~20 us of kernel time per refused connection on this kind
 * of machine (socket, connect, close, both ends' softirq work), so one CPU cannot make more than
 * ~50k refusals (~150k probe events) per second, far from what the reader must sustain. Here the SYN
 * is written by hand and sent with sendmmsg() on an IPPROTO_RAW socket (send-only: it never
 * receives copies of the traffic): per SYN the kernel does what it does for a SYN to a closed port
 * from anywhere, tcp_v4_rcv finds no socket, drops the SYN (skb:kfree_skb NO_SOCKET), sends a RST
 * (tcp:tcp_send_reset, socketless) which loops back and is dropped too (no socket for the source
 * port). Source ports cycle through 1024-65535; sequence numbers vary; checksums are real.
 * Compiled by bench/bench_probes.py with gcc -O2 into bench/out/.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_BATCH 1024

struct syn {
    struct iphdr ip;
    struct tcphdr tcp;
} __attribute__((packed));

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static uint16_t fold(uint32_t sum) {
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)~sum;
}

/* TCP checksum over the pseudo header and the 20-byte header (no payload). */
static uint16_t tcp_checksum(const struct syn *p) {
    uint16_t w[4 + sizeof(struct tcphdr) / 2];  /* saddr, daddr, then the TCP header */
    uint32_t sum = htons(IPPROTO_TCP) + htons(sizeof(struct tcphdr));
    memcpy(w, &p->ip.saddr, 8);
    memcpy(w + 4, &p->tcp, sizeof(struct tcphdr));
    for (size_t i = 0; i < sizeof(w) / 2; i++)
        sum += w[i];
    return fold(sum);
}

int main(int argc, char **argv) {
    const char *addr = "127.0.0.1";
    int port = 9, batch = 64, opt;
    double seconds = 5.0;
    long count = 0;
    while ((opt = getopt(argc, argv, "a:p:s:n:b:")) != -1) {
        switch (opt) {
        case 'a': addr = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 's': seconds = atof(optarg); break;
        case 'n': count = atol(optarg); break;
        case 'b': batch = atoi(optarg); break;
        default:
            fprintf(stderr, "usage: synstorm [-a ADDR] [-p PORT] [-s SECONDS] [-n COUNT] [-b BATCH]\n");
            return 2;
        }
    }
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = 0};
    if (port <= 0 || port > 65535 || seconds <= 0 || seconds > 3600 || count < 0 || batch < 1 ||
        batch > MAX_BATCH || inet_pton(AF_INET, addr, &to.sin_addr) != 1) {
        fprintf(stderr, "synstorm: bad arguments (port 1-65535, 0 < seconds <= 3600, batch 1-%d, IPv4)\n",
                MAX_BATCH);
        return 2;
    }
    int fd = socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_RAW);
    if (fd < 0) {
        fprintf(stderr, "synstorm: raw socket: %s (needs root or CAP_NET_RAW)\n", strerror(errno));
        return 1;
    }
    static struct syn pkts[MAX_BATCH];
    static struct iovec iov[MAX_BATCH];
    static struct mmsghdr msgs[MAX_BATCH];
    for (int i = 0; i < batch; i++) {
        struct syn *p = &pkts[i];
        memset(p, 0, sizeof(*p));
        p->ip.version = 4;
        p->ip.ihl = 5;
        p->ip.ttl = 64;
        p->ip.protocol = IPPROTO_TCP;
        p->ip.tot_len = htons(sizeof(*p));
        p->ip.saddr = to.sin_addr.s_addr;
        p->ip.daddr = to.sin_addr.s_addr;  /* the kernel fills in the IP checksum and id */
        p->tcp.dest = htons((uint16_t)port);
        p->tcp.doff = 5;
        p->tcp.syn = 1;
        p->tcp.window = htons(64240);
        iov[i].iov_base = p;
        iov[i].iov_len = sizeof(*p);
        msgs[i].msg_hdr.msg_name = &to;
        msgs[i].msg_hdr.msg_namelen = sizeof(to);
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    long sent = 0, errors = 0;
    uint32_t seq = 0x5eed0000u;
    unsigned sport = 1024;
    double t0 = now(), deadline = t0 + seconds;
    while (count == 0 || sent < count) {
        if (now() >= deadline)
            break;
        int n = batch;
        if (count && count - sent < n)
            n = (int)(count - sent);
        for (int i = 0; i < n; i++) {
            struct syn *p = &pkts[i];
            p->tcp.source = htons((uint16_t)sport);
            p->tcp.seq = htonl(seq);
            p->tcp.check = 0;
            p->tcp.check = tcp_checksum(p);
            sport = sport >= 65535 ? 1024 : sport + 1;
            seq += 7919;
        }
        int done = sendmmsg(fd, msgs, (unsigned)n, 0);
        if (done < 0) {
            if (errno == EINTR)
                continue;
            if (errno == ENOBUFS || errno == EAGAIN) {  /* backlog full: count, let softirq catch up */
                errors++;
                continue;
            }
            fprintf(stderr, "synstorm: sendmmsg: %s\n", strerror(errno));
            close(fd);
            return 1;
        }
        sent += done;
    }
    double elapsed = now() - t0;
    close(fd);
    struct rusage ru;
    double cpu = 0.0;
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        cpu = (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
              (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
    printf("{\"syns\": %ld, \"send_errors\": %ld, \"seconds\": %.6f, \"syn_per_s\": %.1f, \"cpu_s\": %.6f, "
           "\"syn_per_cpu_s\": %.1f}\n",
           sent, errors, elapsed, elapsed > 0 ? sent / elapsed : 0.0, cpu, cpu > 0 ? sent / cpu : 0.0);
    return 0;
}
