/**
 * @file node_proc.h
 * @brief Start and stop real kvpool-node and kvpool-coord processes for
 * integration tests.
 *
 * The binaries come from $KVPOOL_NODE_BIN and $KVPOOL_COORD_BIN (set by
 * ctest).  A process listens on a loopback port (--port 0: a free one) and
 * its address is read from the line it prints once it serves.
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

/** A node or coordinator process. */
typedef struct {
    pid_t pid;
    int   port;
    char  address[64]; /* "127.0.0.1:PORT" */
} kv_test_node_t;

/**
 * Start the program named by $@p bin_env with @p args (NULL-terminated,
 * after the program name) and wait for the line "@p banner listening on
 * HOST:PORT" it prints once it serves.  Returns 0 on success; on failure
 * prints why and returns -1.
 */
static inline int kv_test_proc_start(kv_test_node_t *proc, const char *bin_env,
                                     const char *banner, const char *const *args)
{
    const char *bin = getenv(bin_env);
    const char *argv[40];
    char        line[256], format[96];
    int         argc = 0, pipefd[2];
    FILE       *out;

    if (bin == NULL) {
        fprintf(stderr, "%s is not set\n", bin_env);
        return -1;
    }
    argv[argc++] = bin;
    for (int i = 0; args != NULL && args[i] != NULL && argc < 39; i++) {
        argv[argc++] = args[i];
    }
    argv[argc] = NULL;
    if (pipe(pipefd) != 0) {
        return -1;
    }
    proc->pid = fork();
    if (proc->pid == 0) {
        /* it must not outlive a test that dies (sanitizer exits too) */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(pipefd[1], STDOUT_FILENO);
        close(pipefd[0]);
        close(pipefd[1]);
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    close(pipefd[1]);
    out = fdopen(pipefd[0], "r");
    snprintf(format, sizeof(format), "%s listening on %%*[^:]:%%d", banner);
    if (fgets(line, sizeof(line), out) == NULL ||
        sscanf(line, format, &proc->port) != 1) {
        fprintf(stderr, "%s did not start\n", banner);
        fclose(out);
        kill(proc->pid, SIGKILL);
        waitpid(proc->pid, NULL, 0);
        return -1;
    }
    fclose(out);
    snprintf(proc->address, sizeof(proc->address), "127.0.0.1:%d", proc->port);
    return 0;
}

/**
 * Start a node ($KVPOOL_NODE_BIN) on a free port with extra flags
 * (NULL-terminated list, may be empty).  Returns 0, or -1 after saying why.
 */
static inline int kv_test_node_start(kv_test_node_t *node, const char *memory,
                                     const char *const *extra)
{
    const char *args[36] = {"--port", "0", "--memory", memory};
    int         argc     = 4;

    for (int i = 0; extra != NULL && extra[i] != NULL && argc < 35; i++) {
        args[argc++] = extra[i];
    }
    args[argc] = NULL;
    return kv_test_proc_start(node, "KVPOOL_NODE_BIN", "kvpool-node", args);
}

/**
 * Start a coordinator ($KVPOOL_COORD_BIN) on @p port (0: a free one) with
 * extra flags (NULL-terminated list, may be empty).  Returns 0, or -1
 * after saying why.
 */
static inline int kv_test_coord_start(kv_test_node_t *coord, int port,
                                      const char *const *extra)
{
    const char *args[36] = {"--port"};
    char        port_text[16];
    int         argc = 2;

    snprintf(port_text, sizeof(port_text), "%d", port);
    args[1] = port_text;
    for (int i = 0; extra != NULL && extra[i] != NULL && argc < 35; i++) {
        args[argc++] = extra[i];
    }
    args[argc] = NULL;
    return kv_test_proc_start(coord, "KVPOOL_COORD_BIN", "kvpool-coord", args);
}

/** @return non-zero if the node process is still running. */
static inline int kv_test_node_alive(const kv_test_node_t *node)
{
    return waitpid(node->pid, NULL, WNOHANG) == 0;
}

/**
 * Stop the node (or coordinator) with SIGTERM and wait.  Returns its exit status, or -1 if
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
