/**
 * @file test.h
 * @brief A tiny test harness: every test file is one executable whose
 * main() runs the functions listed with KV_TEST_LIST.  Each test is forked
 * so that a crash fails that test alone, and has a timeout.  Exit status:
 * 0 all passed, 1 something failed, 77 every test skipped (ctest SKIP).
 *
 * A test calls KV_SKIP("reason") to skip with a visible reason.
 */
#ifndef KV_TEST_H
#define KV_TEST_H

#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define KV_TEST_SKIP_CODE 77

#define ASSERT_(_cond, _fmt, ...) \
    do { \
        if (!(_cond)) { \
            fprintf(stderr, "%s:%d: assertion failed: " _fmt "\n", __FILE__, \
                    __LINE__, __VA_ARGS__); \
            abort(); \
        } \
    } while (0)

#define ASSERT(_c)         ASSERT_((_c), "%s", #_c)
#define ASSERT_EQ(_a, _b) \
    ASSERT_((int64_t)(_a) == (int64_t)(_b), "%s == %s (%" PRId64 " vs %" PRId64 ")", \
            #_a, #_b, (int64_t)(_a), (int64_t)(_b))
#define ASSERT_NE(_a, _b) \
    ASSERT_((int64_t)(_a) != (int64_t)(_b), "%s != %s (both %" PRId64 ")", #_a, \
            #_b, (int64_t)(_a))
#define ASSERT_LE(_a, _b) \
    ASSERT_((int64_t)(_a) <= (int64_t)(_b), "%s <= %s (%" PRId64 " vs %" PRId64 ")", \
            #_a, #_b, (int64_t)(_a), (int64_t)(_b))
#define ASSERT_OK(_s) \
    do { \
        int _st = (int)(_s); \
        ASSERT_(_st == 0, "%s is OK (got %d: %s)", #_s, _st, \
                kvp_status_string((kvp_status_t)_st)); \
    } while (0)
#define ASSERT_STATUS(_s, _want) \
    do { \
        int _st = (int)(_s); \
        ASSERT_(_st == (int)(_want), "%s is %s (got %d: %s)", #_s, #_want, _st, \
                kvp_status_string((kvp_status_t)_st)); \
    } while (0)

#define KV_SKIP(_reason) \
    do { \
        fprintf(stderr, "SKIP: %s\n", (_reason)); \
        exit(KV_TEST_SKIP_CODE); \
    } while (0)

typedef struct {
    const char *name;
    void (*func)(void);
} kv_test_t;

#define KV_TEST(_name) {#_name, _name}

/* Seconds a single test may run. */
#ifndef KV_TEST_TIMEOUT
#define KV_TEST_TIMEOUT 120
#endif

static inline int kv_test_run(const kv_test_t *tests, size_t count, int argc,
                              char **argv)
{
    int failed = 0, skipped = 0, ran = 0;

    for (size_t i = 0; i < count; i++) {
        if (argc > 1 && strcmp(argv[1], tests[i].name) != 0) {
            continue;
        }
        ran++;
        fflush(NULL);
        pid_t pid = fork();
        if (pid == 0) {
            alarm(KV_TEST_TIMEOUT);
            tests[i].func();
            fflush(NULL);
            _exit(0);
        }
        int wstatus = 0;
        waitpid(pid, &wstatus, 0);
        if (WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0) {
            printf("ok   %s\n", tests[i].name);
        } else if (WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == KV_TEST_SKIP_CODE) {
            printf("skip %s\n", tests[i].name);
            skipped++;
        } else {
            printf("FAIL %s (%s %d)\n", tests[i].name,
                   WIFSIGNALED(wstatus) ? "signal" : "exit",
                   WIFSIGNALED(wstatus) ? WTERMSIG(wstatus) : WEXITSTATUS(wstatus));
            failed++;
        }
    }
    if (ran == 0) {
        fprintf(stderr, "no test named %s\n", argc > 1 ? argv[1] : "(any)");
        return 1;
    }
    if (failed) {
        return 1;
    }
    return skipped == ran ? KV_TEST_SKIP_CODE : 0;
}

#define KV_TEST_MAIN(...) \
    int main(int argc, char **argv) \
    { \
        static const kv_test_t tests[] = {__VA_ARGS__}; \
        return kv_test_run(tests, sizeof(tests) / sizeof(tests[0]), argc, argv); \
    }

#endif
