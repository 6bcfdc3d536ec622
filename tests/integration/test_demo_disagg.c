/*
 * kvpool demo --disaggregated with real processes: a coordinator, two pool
 * nodes, a prefill engine and a decode engine; every request goes through
 * Schedule, the prefill engine saves its KV where the plan says and the
 * decode engine loads every block of the chain and checks every byte.
 */
#include <test.h>
#include <test_util.h>

static void test_demo_disaggregated(void)
{
    const char *demo[] = {"demo",   "--disaggregated", "--requests", "300",    "--memory",
                          "256MiB", "--block-size",    "16KiB",      "--json", NULL};
    cli_files_t f;
    char       *last;

    if (getenv("KVPOOL_CLI_BIN") == NULL) {
        KV_SKIP("KVPOOL_CLI_BIN is not set");
    }
    cli_files_make(&f);
    ASSERT_EQ(run_cli(demo, f.so, f.se), 0);
    last = read_last_line(f.so);
    fprintf(stderr, "kvpool demo --disaggregated said: %s\n", last);
    ASSERT_EQ(json_number(last, "requests"), 300);
    ASSERT_EQ(json_number(last, "mismatches"), 0);
    ASSERT_EQ(json_number(last, "missing"), 0);
    ASSERT_EQ(json_number(last, "errors"), 0);
    /* the decode engine loaded every block of every chain */
    ASSERT_EQ(json_number(last, "decoded_blocks"), json_number(last, "blocks"));
    ASSERT_EQ(json_number(last, "loaded_blocks") + json_number(last, "computed_blocks"),
              json_number(last, "blocks"));
    /* conversations come back: later turns load their prefix as planned */
    ASSERT(json_number(last, "hit_ratio") > 0.2);
    free(last);
    cli_files_remove(&f);
}

KV_TEST_MAIN(KV_TEST(test_demo_disaggregated))
