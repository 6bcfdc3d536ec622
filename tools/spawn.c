/*
 * Starting a kvpool-node for `kvpool demo` and `kvpool bench` when no
 * --node is given: a child process on a free loopback port.
 */
#include "cli.h"

#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

/* Path of kvpool-node: next to us (installed) or in the build tree. */
static void node_binary(char *out, size_t len)
{
    char        self[PATH_MAX];
    const char *env = getenv("KVPOOL_NODE_BIN");
    ssize_t     n;

    if (env != NULL) {
        snprintf(out, len, "%s", env);
        return;
    }
    n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0) {
        snprintf(out, len, "kvpool-node");
        return;
    }
    self[n] = '\0';
    dirname(self);
    snprintf(out, len, "%.*s/kvpool-node", (int)(len - 32), self);
    if (access(out, X_OK) != 0) {
        snprintf(out, len, "%.*s/../pool/kvpool-node", (int)(len - 32), self);
    }
}

/* Start kvpool-node on a free loopback port; read its address back. */
pid_t kv_cli_node_start(const char *memory, char *address, size_t len)
{
    char  bin[PATH_MAX], line[256];
    int   pipefd[2];
    pid_t pid;
    FILE *out;

    node_binary(bin, sizeof(bin));
    if (pipe(pipefd) != 0) {
        return -1;
    }
    pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM); /* a node started for us ends with us */
        dup2(pipefd[1], STDOUT_FILENO);
        close(pipefd[0]);
        close(pipefd[1]);
        execl(bin, "kvpool-node", "--port", "0", "--memory", memory, "--log-level",
              "warn", (char *)NULL);
        fprintf(stderr, "kvpool: cannot run %s: %s\n", bin, strerror(errno));
        _exit(127);
    }
    close(pipefd[1]);
    out = fdopen(pipefd[0], "r");
    if (pid < 0 || out == NULL || fgets(line, sizeof(line), out) == NULL ||
        sscanf(line, "kvpool-node listening on %200s", line) != 1 ||
        strlen(line) >= len) {
        fprintf(stderr, "kvpool: the node did not start\n");
        if (out) {
            fclose(out);
        }
        if (pid > 0) {
            kill(pid, SIGTERM);
            waitpid(pid, NULL, 0);
        }
        return -1;
    }
    fclose(out);
    memcpy(address, line, strlen(line) + 1);
    return pid;
}

void kv_cli_node_stop(pid_t pid)
{
    if (pid > 0) {
        kill(pid, SIGTERM);
        waitpid(pid, NULL, 0);
    }
}
