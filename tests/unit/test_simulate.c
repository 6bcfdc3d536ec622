/*
 * Tests of `kvpool simulate` ($KVPOOL_CLI_BIN): times worked out from the
 * cost model on a two-request trace, determinism, the policies' ranking on
 * a synthetic trace from `kvpool gen-trace` and on the Mooncake
 * conversation trace when $KVP_TRACE names it, and bad flags and traces.
 */
#include <kvcoord/sched.h>
#include <test.h>
#include <test_util.h>

#include <math.h>

/* Run `kvpool ARGS...`, expecting exit status @p rc. */
static void cli(cli_files_t *f, const char *const *args, int rc)
{
    int got = run_cli(args, f->so, f->se);

    if (got != rc) {
        uint64_t size;
        char    *err = (char *)read_file(f->se, &size);
        ASSERT_(got == rc, "exit %d, not %d: %s", got, rc, err);
    }
}

/* stderr contains @p want. */
static void expect_stderr(cli_files_t *f, const char *want)
{
    uint64_t size;
    char    *err = (char *)read_file(f->se, &size);

    ASSERT_(strstr(err, want) != NULL, "'%s' in stderr: %s", want, err);
    free(err);
}

/*
 * Two requests of the same 3-block chain (1,500 tokens), a second apart,
 * on one prefill instance: the first computes everything, the second
 * loads the 3 blocks from its own node (local bandwidth) and computes
 * nothing new (3 x 512 >= 1,500), so its prefill is the fixed cost.
 */
static void test_two_requests(void)
{
    static const char trace[] =
        "{\"timestamp\": 0, \"input_length\": 1500, \"output_length\": 20, "
        "\"hash_ids\": [1, 2, 3]}\n"
        "{\"timestamp\": 1000, \"input_length\": 1500, \"output_length\": 20, "
        "\"hash_ids\": [1, 2, 3]}\n";
    const char     *args[] = {"simulate", NULL, "--prefill", "1",
                              "--decode", "1",  "--json",    NULL};
    kv_sched_cost_t c;
    cli_files_t     f;
    char           *line;
    double          first, second;

    cli_files_make(&f);
    write_file(f.in, (const uint8_t *)trace, sizeof(trace) - 1);
    args[1] = f.in;
    cli(&f, args, 0);
    line = read_last_line(f.so);
    kv_sched_cost_defaults(&c);
    first = kv_sched_prefill_s(&c, 0, 1500);
    second =
        kv_sched_transfer_s(&c, 3, c.local_bytes_s) + kv_sched_prefill_s(&c, 1500, 1500);
    ASSERT(fabs(json_number(line, "ttft_mean_s") - (first + second) / 2) < 1e-5);
    ASSERT(second < first);
    ASSERT(fabs(json_number(line, "ttft_p50_s") - second) < 1e-5);
    ASSERT(fabs(json_number(line, "hit_ratio") - 0.5) < 1e-9);
    ASSERT_EQ(json_number(line, "requests"), 2);
    /* a decode step with one request running, 20 tokens */
    ASSERT(fabs(json_number(line, "tbt_mean_s") - kv_sched_decode_step_s(&c, 1)) < 1e-6);
    free(line);
    cli_files_remove(&f);
}

/* Write a synthetic trace of @p requests requests to f->in. */
static void synthetic_trace(cli_files_t *f, const char *requests, const char *seed)
{
    const char *args[] = {"gen-trace", "--requests", requests, "--seed", seed, NULL};
    uint64_t    size;
    uint8_t    *text;

    cli(f, args, 0);
    text = read_file(f->so, &size);
    ASSERT(size > 1000);
    write_file(f->in, text, size);
    free(text);
}

/* Each policy's mean TTFT (and more, by name) from a --policy all --json run. */
static void run_all(cli_files_t *f, const char *const *extra, double *ttft)
{
    const char *args[24] = {"simulate", f->in, "--policy", "all", "--json"};
    uint64_t    size;
    char       *text, *line, *save = NULL;
    int         n = 5, seen = 0;

    for (int i = 0; extra[i] != NULL; i++) {
        args[n++] = extra[i];
    }
    cli(f, args, 0);
    text = (char *)read_file(f->so, &size);
    for (line = strtok_r(text, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        for (int p = 0; p < KV_SCHED_POLICY_COUNT; p++) {
            char key[64];
            snprintf(key, sizeof(key), "\"policy\":\"%s\"", kv_sched_policy_name(p));
            if (strstr(line, key) != NULL) {
                ttft[p] = json_number(line, "ttft_mean_s");
                ASSERT(json_number(line, "slo_attainment") >= 0);
                seen++;
            }
        }
    }
    ASSERT_EQ(seen, KV_SCHED_POLICY_COUNT);
    fprintf(stderr,
            "  mean TTFT: cache-aware %.3f local %.3f load %.3f rr %.3f random %.3f\n",
            ttft[KV_SCHED_CACHE_AWARE], ttft[KV_SCHED_LOCAL_CACHE_AWARE],
            ttft[KV_SCHED_LOAD], ttft[KV_SCHED_ROUND_ROBIN], ttft[KV_SCHED_RANDOM]);
    free(text);
}

/* Mooncake's order, and cache-aware at least 1.5x better than load. */
static void expect_ranking(const double *ttft)
{
    ASSERT(ttft[KV_SCHED_CACHE_AWARE] < ttft[KV_SCHED_LOCAL_CACHE_AWARE]);
    ASSERT(ttft[KV_SCHED_LOCAL_CACHE_AWARE] < ttft[KV_SCHED_LOAD]);
    ASSERT(ttft[KV_SCHED_LOAD] < ttft[KV_SCHED_RANDOM]);
    ASSERT(ttft[KV_SCHED_LOAD] >= 1.5 * ttft[KV_SCHED_CACHE_AWARE]);
}

/* Another trace of the format: the synthetic chat generator's. */
static void test_synthetic_ranking(void)
{
    const char *const extra[] = {"--time-scale", "0.5", NULL};
    double            ttft[KV_SCHED_POLICY_COUNT];
    cli_files_t       f;

    cli_files_make(&f);
    synthetic_trace(&f, "6000", "3");
    run_all(&f, extra, ttft);
    expect_ranking(ttft);
    cli_files_remove(&f);
}

/* The same flags give the same figures; another seed moves random's. */
static void test_deterministic(void)
{
    const char *args[] = {"simulate", NULL, "--policy", "random,cache-aware",
                          "--seed",   NULL, NULL};
    cli_files_t f;
    char       *a, *b, *c;
    uint64_t    size;

    cli_files_make(&f);
    synthetic_trace(&f, "2000", "9");
    args[1] = f.in;
    args[5] = "5";
    cli(&f, args, 0);
    a = (char *)read_file(f.so, &size);
    cli(&f, args, 0);
    b       = (char *)read_file(f.so, &size);
    args[5] = "6";
    cli(&f, args, 0);
    c = (char *)read_file(f.so, &size);
    ASSERT(strstr(a, "random") != NULL && strstr(a, "TTFT mean") != NULL);
    ASSERT_(strcmp(a, b) == 0, "two runs differ:\n%s\n%s", a, b);
    ASSERT(strcmp(a, c) != 0);
    free(a);
    free(b);
    free(c);
    cli_files_remove(&f);
}

static void test_bad_input(void)
{
    static const char big[]     = "{\"timestamp\": 0, \"input_length\": 1500, "
                                  "\"output_length\": 100000, \"hash_ids\": [1, 2, 3]}\n";
    const char       *unknown[] = {"simulate", NULL, "--policy", "fastest", NULL};
    const char       *cost[]    = {"simulate", NULL, "--cost", "remote_bytes_s=0", NULL};
    const char       *key[]     = {"simulate", NULL, "--cost", "warp=9", NULL};
    const char       *zero[]    = {"simulate", NULL, "--prefill", "0", NULL};
    const char       *missing[] = {"simulate", "/nonexistent/trace.jsonl", NULL};
    const char       *too_big[] = {"simulate", NULL, "--decode-blocks", "10", NULL};
    cli_files_t       f;

    cli_files_make(&f);
    write_file(f.in, (const uint8_t *)big, sizeof(big) - 1);
    unknown[1] = cost[1] = key[1] = zero[1] = too_big[1] = f.in;
    cli(&f, unknown, 2);
    expect_stderr(&f, "unknown policy 'fastest'");
    cli(&f, cost, 2);
    expect_stderr(&f, "remote_bytes_s must be a number > 0");
    cli(&f, key, 2);
    expect_stderr(&f, "no cost figure 'warp'");
    cli(&f, zero, 2);
    expect_stderr(&f, "--prefill must be a number of 1..1024");
    cli(&f, missing, 1);
    expect_stderr(&f, "/nonexistent/trace.jsonl");
    cli(&f, too_big, 1);
    expect_stderr(&f, "needs 199 KV blocks, more than a decode instance holds");
    cli_files_remove(&f);
}

/* The Mooncake conversation trace: 8 + 8 instances, and 12 + 12. */
static void test_real_trace(void)
{
    const char       *trace    = getenv("KVP_TRACE");
    const char *const eight[]  = {NULL};
    const char *const twelve[] = {"--prefill", "12", "--decode", "12", NULL};
    double            ttft[KV_SCHED_POLICY_COUNT];
    cli_files_t       f;
    uint64_t          size;
    uint8_t          *text;

    if (trace == NULL || access(trace, R_OK) != 0) {
        KV_SKIP("$KVP_TRACE does not name a readable Mooncake conversation trace");
    }
    cli_files_make(&f);
    text = read_file(trace, &size);
    write_file(f.in, text, size);
    free(text);
    run_all(&f, eight, ttft);
    expect_ranking(ttft);
    run_all(&f, twelve, ttft);
    ASSERT(ttft[KV_SCHED_CACHE_AWARE] < ttft[KV_SCHED_LOCAL_CACHE_AWARE]);
    ASSERT(ttft[KV_SCHED_LOCAL_CACHE_AWARE] < ttft[KV_SCHED_LOAD]);
    ASSERT(ttft[KV_SCHED_LOAD] < ttft[KV_SCHED_RANDOM]);
    cli_files_remove(&f);
}

KV_TEST_MAIN(KV_TEST(test_two_requests), KV_TEST(test_synthetic_ranking),
             KV_TEST(test_deterministic), KV_TEST(test_bad_input),
             KV_TEST(test_real_trace))
