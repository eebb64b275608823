/* A refusal storm on loopback: connect() to a closed port, back to back, bounded by time and count.
 *
 * usage: storm [-a ADDR] [-p PORT] [-s SECONDS] [-n COUNT] [-w WORKERS]
 *   ADDR 127.0.0.1, PORT 9 (nothing may listen there), SECONDS 5, COUNT 0 (= no count bound),
 *   WORKERS 1 (forked processes, each with its share of COUNT).
 * Prints one line of JSON: {"connections": N, "refused": R, "other_errors": E, "seconds": S,
 * "conn_per_s": X, "cpu_s": C, "conn_per_cpu_s": Y} (C: user + system time of the workers, which
 * includes the loopback softirq work done in their context unless the kernel accounts IRQ time apart). Exit 0; 1 if a connect() did anything but fail with ECONNREFUSED (something
 * listens on the port, or sockets ran out), 2 for bad arguments.
 *
 * Each connection: socket(), a blocking connect() that the loopback RST answers within the call
 * (ECONNREFUSED), close(). No TIME_WAIT is left behind, so ephemeral ports do not run out.
 * Compiled by bench/bench_probes.py with gcc -O2 into bench/out/.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct tally {
    long connections, refused, other;
};

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void storm(const struct sockaddr_in *to, double deadline, long count, struct tally *t) {
    while (count == 0 || t->connections < count) {
        if ((t->connections & 255) == 0 && now() >= deadline)
            break;
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            t->other++;
            t->connections++;
            continue;
        }
        if (connect(fd, (const struct sockaddr *)to, sizeof(*to)) < 0 && errno == ECONNREFUSED)
            t->refused++;
        else
            t->other++;
        close(fd);
        t->connections++;
    }
}

int main(int argc, char **argv) {
    const char *addr = "127.0.0.1";
    int port = 9, workers = 1, opt;
    double seconds = 5.0;
    long count = 0;
    while ((opt = getopt(argc, argv, "a:p:s:n:w:")) != -1) {
        switch (opt) {
        case 'a': addr = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 's': seconds = atof(optarg); break;
        case 'n': count = atol(optarg); break;
        case 'w': workers = atoi(optarg); break;
        default:
            fprintf(stderr, "usage: storm [-a ADDR] [-p PORT] [-s SECONDS] [-n COUNT] [-w WORKERS]\n");
            return 2;
        }
    }
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    if (port <= 0 || port > 65535 || seconds <= 0 || seconds > 3600 || count < 0 || workers < 1 ||
        workers > 64 || inet_pton(AF_INET, addr, &to.sin_addr) != 1) {
        fprintf(stderr, "storm: bad arguments (port 1-65535, 0 < seconds <= 3600, workers 1-64, IPv4)\n");
        return 2;
    }
    int fds[64][2];
    pid_t pids[64];
    double t0 = now(), deadline = t0 + seconds;
    for (int i = 0; i < workers; i++) {
        if (pipe(fds[i]) < 0 || (pids[i] = fork()) < 0) {
            perror("storm");
            return 1;
        }
        if (pids[i] == 0) {
            struct tally t = {0, 0, 0};
            long share = count ? count / workers + (i < count % workers) : 0;
            close(fds[i][0]);
            if (count == 0 || share > 0)
                storm(&to, deadline, share, &t);
            if (write(fds[i][1], &t, sizeof(t)) != (ssize_t)sizeof(t))
                _exit(1);
            _exit(0);
        }
        close(fds[i][1]);
    }
    struct tally sum = {0, 0, 0};
    for (int i = 0; i < workers; i++) {
        struct tally t = {0, 0, 0};
        if (read(fds[i][0], &t, sizeof(t)) != (ssize_t)sizeof(t))
            sum.other++;
        close(fds[i][0]);
        waitpid(pids[i], NULL, 0);
        sum.connections += t.connections;
        sum.refused += t.refused;
        sum.other += t.other;
    }
    double elapsed = now() - t0;
    struct rusage ru;
    double cpu = 0.0;
    if (getrusage(RUSAGE_CHILDREN, &ru) == 0)
        cpu = (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
              (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
    printf("{\"connections\": %ld, \"refused\": %ld, \"other_errors\": %ld, \"seconds\": %.6f, "
           "\"conn_per_s\": %.1f, \"cpu_s\": %.6f, \"conn_per_cpu_s\": %.1f}\n",
           sum.connections, sum.refused, sum.other, elapsed, elapsed > 0 ? sum.connections / elapsed : 0.0, cpu,
           cpu > 0 ? sum.connections / cpu : 0.0);
    return sum.other ? 1 : 0;
}
