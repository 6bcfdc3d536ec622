/*
 * Starting the daemons `kvpool demo` and `kvpool bench` use when no
 * address is given: kvpool-coord and kvpool-node as child processes on
 * free loopback ports.  Each prints "PROGRAM listening on HOST:PORT" once
 * it serves; that line is how its port is learnt.
 */
#include "cli.h"

#include <kv/util.h>

#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

/*
 * Path of @p program: $@p env, else next to us (installed), else in the
 * build tree's @p subdir.
 */
static void find_binary(const char *program, const char *env, const char *subdir,
                        char *out, size_t len)
{
    char        self[PATH_MAX];
    const char *path = getenv(env);
    ssize_t     n;

    if (path != NULL) {
        snprintf(out, len, "%s", path);
        return;
    }
    n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0) {
        snprintf(out, len, "%s", program);
        return;
    }
    self[n] = '\0';
    dirname(self);
    snprintf(out, len, "%.*s/%s", (int)(len - 64), self, program);
    if (access(out, X_OK) != 0) {
        snprintf(out, len, "%.*s/../%s/%s", (int)(len - 64), self, subdir, program);
    }
}

/* "<argv0> <what> ADDRESS" from @p out into @p address: 0, or -1. */
static int read_address(FILE *out, const char *argv0, const char *what, char *address,
                        size_t len)
{
    char line[256], want[64], found[256];

    snprintf(want, sizeof(want), "%s %s", argv0, what);
    if (fgets(line, sizeof(line), out) == NULL || strncmp(line, want, strlen(want)) != 0 ||
        sscanf(line + strlen(want), " %200s", found) != 1 || strlen(found) >= len) {
        return -1;
    }
    memcpy(address, found, strlen(found) + 1);
    return 0;
}

/*
 * Run @p argv (argv[0] the program's name) and read its address back, and
 * the address of its HTTP endpoint into @p http if it is not NULL.
 */
static pid_t spawn(const char *bin, const char *const *argv, char *address, size_t len,
                   char *http, size_t http_len)
{
    int   pipefd[2];
    pid_t pid;
    FILE *out;

    if (pipe(pipefd) != 0) {
        return -1;
    }
    pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM); /* a daemon started for us ends with us */
        dup2(pipefd[1], STDOUT_FILENO);
        close(pipefd[0]);
        close(pipefd[1]);
        execv(bin, (char *const *)argv);
        fprintf(stderr, "kvpool: cannot run %s: %s\n", bin, strerror(errno));
        _exit(127);
    }
    close(pipefd[1]);
    out = fdopen(pipefd[0], "r");
    if (pid < 0 || out == NULL || read_address(out, argv[0], "listening on", address, len) ||
        (http != NULL && read_address(out, argv[0], "http on", http, http_len))) {
        fprintf(stderr, "kvpool: %s did not start\n", argv[0]);
        if (out) {
            fclose(out);
        } else {
            close(pipefd[0]);
        }
        if (pid > 0) {
            kill(pid, SIGTERM);
            waitpid(pid, NULL, 0);
        }
        return -1;
    }
    fclose(out);
    return pid;
}

pid_t kv_cli_node_start(const char *memory, const char *coord, char *address, size_t len)
{
    const char *argv[] = {"kvpool-node", "--port", "0",           "--memory", memory,
                          "--log-level", "warn",   coord ? "--coord" : NULL, coord, NULL};
    char        bin[PATH_MAX];

    find_binary("kvpool-node", "KVPOOL_NODE_BIN", "pool", bin, sizeof(bin));
    return spawn(bin, argv, address, len, NULL, 0);
}

pid_t kv_cli_node_start_ssd(const char *memory, const char *ssd_dir, const char *ssd_size,
                            char *address, size_t len)
{
    const char *argv[] = {"kvpool-node", "--port",    "0",     "--memory",   memory,
                          "--log-level", "warn",      "--ssd-dir", ssd_dir, "--ssd-size",
                          ssd_size,      NULL};
    char        bin[PATH_MAX];

    find_binary("kvpool-node", "KVPOOL_NODE_BIN", "pool", bin, sizeof(bin));
    return spawn(bin, argv, address, len, NULL, 0);
}

pid_t kv_cli_coord_start(char *address, size_t len, char *http, size_t http_len)
{
    const char *argv[] = {"kvpool-coord", "--port", "0",           "--log-level",
                          "warn",         http ? "--http-port" : NULL, "0", NULL};
    char        bin[PATH_MAX];

    find_binary("kvpool-coord", "KVPOOL_COORD_BIN", "coord", bin, sizeof(bin));
    return spawn(bin, argv, address, len, http, http_len);
}

void kv_cli_daemon_stop(pid_t pid)
{
    if (pid > 0) {
        kill(pid, SIGTERM);
        waitpid(pid, NULL, 0);
    }
}

void kv_cli_pool_stop(kv_cli_pool_t *pool)
{
    for (int i = 0; i < pool->num_nodes; i++) {
        kv_cli_daemon_stop(pool->nodes[i]);
    }
    kv_cli_daemon_stop(pool->coord);
}

int kv_cli_pool_start(kv_cli_pool_t *pool, int n, const char *memory)
{
    pool->coord = kv_cli_coord_start(pool->address, sizeof(pool->address), pool->http,
                                     sizeof(pool->http));
    if (pool->coord < 0) {
        return -1;
    }
    for (; pool->num_nodes < n; pool->num_nodes++) {
        char *address = pool->node_addresses[pool->num_nodes];
        pid_t pid     = kv_cli_node_start(memory, pool->address, address,
                                          sizeof(pool->node_addresses[0]));
        if (pid < 0) {
            kv_cli_pool_stop(pool);
            return -1;
        }
        pool->nodes[pool->num_nodes] = pid;
    }
    return 0;
}

kvp_status_t kv_cli_pool_wait_joined(kvp_client_h client, int n)
{
    kvp_index_stats_t st = {0};
    kvp_status_t      status;

    for (uint64_t deadline = kv_time_ns() + 10000000000ull;;) {
        status = kvp_index_stats(client, &st);
        if (status != KVP_OK || st.nodes >= (uint64_t)n) {
            return status;
        }
        if (kv_time_ns() > deadline) {
            fprintf(stderr, "kvpool: %llu of %d nodes joined the coordinator\n",
                    (unsigned long long)st.nodes, n);
            return KVP_ERR_TIMED_OUT;
        }
        usleep(20000);
    }
}

void kv_cli_pool_serve(const kv_cli_pool_t *pool)
{
    sigset_t set;
    int      sig;

    printf("kvpool demo: serving until Ctrl-C (SIGINT or SIGTERM): coordinator %s, "
           "dashboard http://%s/dashboard\n",
           pool->address, pool->http);
    fflush(stdout);
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    sigwait(&set, &sig);
}
