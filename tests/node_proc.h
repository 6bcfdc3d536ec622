/**
 * @file node_proc.h
 * @brief Start and stop real kvpool-node and kvpool-coord processes for
 * integration tests.
 *
 * The binaries come from $KVPOOL_NODE_BIN and $KVPOOL_COORD_BIN (set by
 * ctest).  A daemon listens on a free loopback port (--port 0) and its
 * address is read from the line it prints once it serves.
 */
#ifndef KV_TEST_NODE_PROC_H
#define KV_TEST_NODE_PROC_H

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct {
    pid_t pid;
    int   port;
    char  address[64]; /* "127.0.0.1:PORT" */
} kv_test_node_t;

/*
 * Start @p bin with @p argv (NULL-terminated) and read "@p program
 * listening on HOST:PORT" from its stdout.  Returns 0, or -1 (printed).
 */
static inline int kv_test_daemon_start(kv_test_node_t *node, const char *bin,
                                       const char *program, const char *const *argv)
{
    char  line[256], want[64];
    int   pipefd[2];
    FILE *out;

    if (pipe(pipefd) != 0) {
        return -1;
    }
    node->pid = fork();
    if (node->pid == 0) {
        /* the daemon must not outlive a test that dies (sanitizer exits too) */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(pipefd[1], STDOUT_FILENO);
        close(pipefd[0]);
        close(pipefd[1]);
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    close(pipefd[1]);
    snprintf(want, sizeof(want), "%s listening on %%*[^:]:%%d", program);
    out = fdopen(pipefd[0], "r");
    if (fgets(line, sizeof(line), out) == NULL || sscanf(line, want, &node->port) != 1) {
        fprintf(stderr, "%s did not start\n", program);
        fclose(out);
        kill(node->pid, SIGKILL);
        waitpid(node->pid, NULL, 0);
        return -1;
    }
    fclose(out);
    snprintf(node->address, sizeof(node->address), "127.0.0.1:%d", node->port);
    return 0;
}

/**
 * Start a node with extra flags (NULL-terminated list, may be empty).
 * Returns 0 on success; on failure prints why and returns -1.
 */
static inline int kv_test_node_start(kv_test_node_t *node, const char *memory,
                                     const char *const *extra)
{
    const char *bin = getenv("KVPOOL_NODE_BIN");
    const char *argv[32];
    int         argc = 0;

    if (bin == NULL) {
        fprintf(stderr, "KVPOOL_NODE_BIN is not set\n");
        return -1;
    }
    argv[argc++] = bin;
    argv[argc++] = "--port";
    argv[argc++] = "0";
    argv[argc++] = "--memory";
    argv[argc++] = memory;
    for (int i = 0; extra != NULL && extra[i] != NULL && argc < 30; i++) {
        argv[argc++] = extra[i];
    }
    argv[argc] = NULL;
    return kv_test_daemon_start(node, bin, "kvpool-node", argv);
}

/**
 * Start kvpool-coord ($KVPOOL_COORD_BIN) on @p port (0: a free one) with
 * extra flags (NULL-terminated, may be NULL).  Returns 0, or -1 (printed).
 */
static inline int kv_test_coord_start(kv_test_node_t *coord, int port,
                                      const char *const *extra)
{
    const char *bin = getenv("KVPOOL_COORD_BIN");
    const char *argv[32];
    char        port_text[16];
    int         argc = 0;

    if (bin == NULL) {
        fprintf(stderr, "KVPOOL_COORD_BIN is not set\n");
        return -1;
    }
    snprintf(port_text, sizeof(port_text), "%d", port);
    argv[argc++] = bin;
    argv[argc++] = "--port";
    argv[argc++] = port_text;
    for (int i = 0; extra != NULL && extra[i] != NULL && argc < 30; i++) {
        argv[argc++] = extra[i];
    }
    argv[argc] = NULL;
    return kv_test_daemon_start(coord, bin, "kvpool-coord", argv);
}

/** @return non-zero if the node process is still running. */
static inline int kv_test_node_alive(const kv_test_node_t *node)
{
    return waitpid(node->pid, NULL, WNOHANG) == 0;
}

/**
 * Stop the node with SIGTERM and wait.  Returns its exit status, or -1 if
 * it died of a signal or did not stop within 10 s (then it is killed).
 */
static inline int kv_test_node_stop(kv_test_node_t *node)
{
    int status = 0;

    kill(node->pid, SIGTERM);
    for (int i = 0; i < 1000; i++) {
        if (waitpid(node->pid, &status, WNOHANG) == node->pid) {
            return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        }
        usleep(10000);
    }
    kill(node->pid, SIGKILL);
    waitpid(node->pid, NULL, 0);
    return -1;
}

#endif
