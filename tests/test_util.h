/**
 * @file test_util.h
 * @brief Helpers shared by the test files: time, a deterministic random
 * generator and block contents, keys, socket reads, starting and stopping
 * nodes and coordinators with an orphan reaper, and running the kvpool
 * command line.  Include it after "test.h".
 *
 * Everything is static (inline), for test executables of one file each.
 */
#ifndef KV_TEST_UTIL_H
#define KV_TEST_UTIL_H

#include <kvpool/kvpool.h>
#include <node_proc.h>
#include <test.h>

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <time.h>

#define KiB ((uint64_t)1 << 10)
#define MiB ((uint64_t)1 << 20)

/* ---------------------------------------------------------------------- */
/* Directories for the SSD tier                                            */
/* ---------------------------------------------------------------------- */

/** Remove @p dir and everything in it. */
static inline void dir_remove(const char *dir)
{
    char cmd[300];

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "could not remove %s\n", dir);
    }
}

/**
 * Make a fresh directory under $TMPDIR (or /tmp) into @p dir (@p len
 * bytes); skip the test (77, with the reason) when its filesystem has no
 * O_DIRECT, which the SSD tier needs.
 */
static inline void odirect_dir_make(char *dir, size_t len)
{
    const char *tmp = getenv("TMPDIR");
    char        probe[320];
    int         fd;

    snprintf(dir, len, "%s/kvpool-ssd-XXXXXX", tmp ? tmp : "/tmp");
    ASSERT(mkdtemp(dir) != NULL);
    snprintf(probe, sizeof(probe), "%s/probe", dir);
    fd = open(probe, O_RDWR | O_CREAT | O_DIRECT, 0600);
    if (fd < 0) {
        dir_remove(dir);
        KV_SKIP("the temporary directory's filesystem has no O_DIRECT");
    }
    close(fd);
    unlink(probe);
}

/* ---------------------------------------------------------------------- */
/* Time                                                                    */
/* ---------------------------------------------------------------------- */

/** Milliseconds on the monotonic clock. */
static inline uint64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/** Sleep @p ms milliseconds, resuming after signals. */
static inline void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* ---------------------------------------------------------------------- */
/* Deterministic random numbers and block contents                         */
/* ---------------------------------------------------------------------- */

/** A xorshift64* generator: the same sequence everywhere for a seed. */
typedef struct {
    uint64_t s;
} rng_t;

/** Seed @p rng (any seed, 0 included, gives a usable state). */
static inline void rng_seed(rng_t *rng, uint64_t seed)
{
    rng->s = seed * 0x9e3779b97f4a7c15ull + 0x632be59bd9b4e019ull;
    if (rng->s == 0) {
        rng->s = 1;
    }
}

/** The next 64 random bits. */
static inline uint64_t rng_next(rng_t *rng)
{
    rng->s ^= rng->s >> 12;
    rng->s ^= rng->s << 25;
    rng->s ^= rng->s >> 27;
    return rng->s * 0x2545f4914f6cdd1dull;
}

/** A random number in [@p lo, @p hi], both included. */
static inline uint64_t rng_range(rng_t *rng, uint64_t lo, uint64_t hi)
{
    return lo + rng_next(rng) % (hi - lo + 1);
}

/** Fill @p buf with random bytes that are a function of (@p seed, @p size). */
static inline void fill_random(void *buf, uint64_t size, uint64_t seed)
{
    uint8_t *p = buf;
    uint64_t i = 0, v;
    rng_t    rng;

    rng_seed(&rng, seed ^ (size * 0xd1b54a32d192ed03ull));
    for (; i + 8 <= size; i += 8) {
        v = rng_next(&rng);
        memcpy(p + i, &v, 8);
    }
    if (i < size) {
        v = rng_next(&rng);
        memcpy(p + i, &v, size - i);
    }
}

/** A malloc'ed block of @p size bytes filled by fill_random(); free() it. */
static inline uint8_t *make_block(uint64_t size, uint64_t seed)
{
    uint8_t *buf = malloc(size ? size : 1);

    ASSERT(buf != NULL);
    fill_random(buf, size, seed);
    return buf;
}

/* ---------------------------------------------------------------------- */
/* Keys and sockets                                                        */
/* ---------------------------------------------------------------------- */

/** The key of a printf-formatted name (kvp_key_from_bytes of its bytes). */
static inline kvp_key_t key_of(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static inline kvp_key_t key_of(const char *fmt, ...)
{
    char    name[256];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(name, sizeof(name), fmt, ap);
    va_end(ap);
    return kvp_key_from_bytes(name, strlen(name));
}

/** @return non-zero if two keys have the same bytes. */
static inline int key_eq(const kvp_key_t *a, const kvp_key_t *b)
{
    return memcmp(a->bytes, b->bytes, KVP_KEY_LEN) == 0;
}

/** Receive exactly @p len bytes; @return 0, or -1 on close, reset or timeout. */
static inline int recv_full(int fd, void *buf, size_t len)
{
    uint8_t *p = buf;

    while (len > 0) {
        ssize_t n = recv(fd, p, len, 0);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Orphan reaper: kill what a test started if the test dies                */
/* ---------------------------------------------------------------------- */

#define MAX_REAP 8
static volatile pid_t reap_pids[MAX_REAP];

/** Signal handler: SIGKILL every registered process, then die of @p sig. */
static inline void reap_on_signal(int sig)
{
    for (int i = 0; i < MAX_REAP; i++) {
        if (reap_pids[i] > 0) {
            kill(reap_pids[i], SIGKILL);
        }
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

/** Register @p pid to be killed if this test dies of a signal. */
static inline void reap_add(pid_t pid)
{
    static const int sigs[] = {SIGABRT, SIGALRM, SIGSEGV, SIGBUS, SIGFPE, SIGILL};

    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
        signal(sigs[i], reap_on_signal);
    }
    for (int i = 0; i < MAX_REAP; i++) {
        if (reap_pids[i] == 0) {
            reap_pids[i] = pid;
            return;
        }
    }
}

/** Unregister @p pid (it has exited or been waited for). */
static inline void reap_del(pid_t pid)
{
    for (int i = 0; i < MAX_REAP; i++) {
        if (reap_pids[i] == pid) {
            reap_pids[i] = 0;
        }
    }
}

/** In a forked worker: its failure must not kill the parent's processes. */
static inline void reap_forget_all(void)
{
    for (int i = 0; i < MAX_REAP; i++) {
        reap_pids[i] = 0;
    }
}

/* ---------------------------------------------------------------------- */
/* Nodes and coordinators                                                  */
/* ---------------------------------------------------------------------- */

/** Start a node (@p extra NULL: quiet logs; skip without $KVPOOL_NODE_BIN), reaped. */
static inline void node_up(kv_test_node_t *node, const char *memory,
                           const char *const *extra)
{
    static const char *const quiet[] = {"--log-level", "warn", NULL};
    int                      rc;

    if (getenv("KVPOOL_NODE_BIN") == NULL) {
        KV_SKIP("KVPOOL_NODE_BIN is not set (run through ctest)");
    }
    rc = kv_test_node_start(node, memory, extra ? extra : quiet);
    ASSERT_EQ(rc, 0);
    reap_add(node->pid);
}

/** Start a node of @p memory that joins the coordinator @p coord, reaped. */
static inline void cluster_node_up(kv_test_node_t *node, const char *memory,
                                   const kv_test_node_t *coord)
{
    const char *const extra[] = {"--coord", coord->address, "--log-level", "warn", NULL};

    node_up(node, memory, extra);
}

/** A libkvpool client of the node or coordinator at @p address (the test fails if not). */
static inline kvp_client_h connect_to(const char *address)
{
    kvp_client_h client = NULL;

    ASSERT_OK(kvp_client_connect(address, NULL, &client));
    return client;
}

/** SIGTERM the node (or coordinator); it must exit cleanly with status 0. */
static inline void node_down(kv_test_node_t *node)
{
    int rc = kv_test_node_stop(node);

    reap_del(node->pid);
    ASSERT_EQ(rc, 0);
}

/**
 * Start a coordinator on @p port (0: a free one) with @p extra flags (NULL:
 * quiet logs); skip without $KVPOOL_COORD_BIN; reaped.
 */
static inline void coord_up(kv_test_node_t *coord, int port, const char *const *extra)
{
    static const char *const quiet[] = {"--log-level", "warn", NULL};
    int                      rc;

    if (getenv("KVPOOL_COORD_BIN") == NULL) {
        KV_SKIP("KVPOOL_COORD_BIN is not set (run through ctest)");
    }
    rc = kv_test_coord_start(coord, port, extra ? extra : quiet);
    ASSERT_EQ(rc, 0);
    reap_add(coord->pid);
}

/** Kill a node or coordinator with SIGKILL (no clean-up runs) and reap it. */
static inline void proc_kill(kv_test_node_t *proc)
{
    kill(proc->pid, SIGKILL);
    waitpid(proc->pid, NULL, 0);
    reap_del(proc->pid);
}

/* ---------------------------------------------------------------------- */
/* The kvpool command line ($KVPOOL_CLI_BIN)                               */
/* ---------------------------------------------------------------------- */

/* Run the kvpool CLI with stdout/stderr to files; returns its exit status. */
static inline int run_cli(const char *const *args, const char *out_path, const char *err_path)
{
    const char *bin = getenv("KVPOOL_CLI_BIN");
    const char *argv[16];
    int         argc = 0, wstatus = 0;
    pid_t       pid;

    if (bin == NULL) {
        KV_SKIP("KVPOOL_CLI_BIN is not set");
    }
    argv[argc++] = bin;
    for (int i = 0; args[i] != NULL && argc < 15; i++) {
        argv[argc++] = args[i];
    }
    argv[argc] = NULL;
    fflush(NULL);
    pid = fork();
    ASSERT(pid >= 0);
    if (pid == 0) {
        int out = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int err = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (out < 0 || err < 0) {
            _exit(126);
        }
        dup2(out, STDOUT_FILENO);
        dup2(err, STDERR_FILENO);
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    reap_add(pid);
    /* bounded wait: a hung CLI fails the test instead of hanging it */
    for (uint64_t deadline = now_ms() + 30000;;) {
        pid_t r = waitpid(pid, &wstatus, WNOHANG);
        if (r == pid) {
            break;
        }
        ASSERT(now_ms() < deadline);
        sleep_ms(2);
    }
    reap_del(pid);
    ASSERT(WIFEXITED(wstatus));
    return WEXITSTATUS(wstatus);
}

/** The whole file @p path, NUL-terminated, malloc'ed (free() it). */
static inline uint8_t *read_file(const char *path, uint64_t *size_p)
{
    struct stat st;
    uint8_t    *buf;
    FILE       *file = fopen(path, "rb");

    ASSERT(file != NULL);
    ASSERT_EQ(fstat(fileno(file), &st), 0);
    buf = malloc((size_t)st.st_size + 1);
    ASSERT(buf != NULL);
    ASSERT_EQ(fread(buf, 1, (size_t)st.st_size, file), st.st_size);
    buf[st.st_size] = 0;
    fclose(file);
    *size_p = (uint64_t)st.st_size;
    return buf;
}

/* Write @p size bytes of @p data to the file @p path (created or truncated). */
static inline void write_file(const char *path, const uint8_t *data, uint64_t size)
{
    FILE *file = fopen(path, "wb");
    int   rc;

    ASSERT(file != NULL);
    ASSERT_EQ(fwrite(data, 1, size, file), size);
    rc = fclose(file);
    ASSERT_EQ(rc, 0);
}

/** A temporary folder with the CLI's input, output, stdout and stderr files. */
typedef struct {
    char dir[64];
    char in[128], out[128], so[128], se[128];
} cli_files_t;

static inline void cli_files_make(cli_files_t *f)
{
    snprintf(f->dir, sizeof(f->dir), "/tmp/kvp-cli-XXXXXX");
    ASSERT(mkdtemp(f->dir) != NULL);
    snprintf(f->in, sizeof(f->in), "%s/in.bin", f->dir);
    snprintf(f->out, sizeof(f->out), "%s/out.bin", f->dir);
    snprintf(f->so, sizeof(f->so), "%s/stdout", f->dir);
    snprintf(f->se, sizeof(f->se), "%s/stderr", f->dir);
}

static inline void cli_files_remove(cli_files_t *f)
{
    unlink(f->in);
    unlink(f->out);
    unlink(f->so);
    unlink(f->se);
    rmdir(f->dir);
}

/** The last line of the file @p path (malloc'ed, without its newline). */
static inline char *read_last_line(const char *path)
{
    uint64_t size;
    uint8_t *text = read_file(path, &size);
    char    *last;

    while (size > 0 && text[size - 1] == '\n') {
        text[--size] = '\0';
    }
    last = strrchr((char *)text, '\n');
    last = strdup(last ? last + 1 : (char *)text);
    free(text);
    ASSERT(last != NULL);
    return last;
}

/** The number after "name": in the JSON object @p line (the test fails if absent). */
static inline double json_number(const char *line, const char *name)
{
    char        key[64];
    const char *at;

    snprintf(key, sizeof(key), "\"%s\":", name);
    at = strstr(line, key);
    ASSERT_(at != NULL, "no %s in %s", key, line);
    return strtod(at + strlen(key), NULL);
}

#endif
