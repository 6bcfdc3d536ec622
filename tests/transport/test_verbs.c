/*
 * Tests of the verbs backend.  They run where kvt_context_create("verbs")
 * succeeds and an IPv4 address of the RDMA interface is found (or given in
 * KVP_TEST_RDMA_ADDR); elsewhere each test skips (exit 77) with the reason
 * the library logged, "no RDMA device: ...".
 */
#include "transport_helpers.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>

static char rdma_addr[INET_ADDRSTRLEN];

static kvp_status_t verbs_context(const char *device_addr, kvt_context_h *ctx_p)
{
    kvt_params_t params = {.field_mask = KVT_PARAM_FIELD_BACKEND, .backend = "verbs"};

    if (device_addr != NULL) {
        params.field_mask |= KVT_PARAM_FIELD_DEVICE_ADDR;
        params.device_addr = device_addr;
    }
    return kvt_context_create(&params, ctx_p);
}

/*
 * Skip unless a verbs context can be made; then find an IPv4 address of its
 * interface (KVP_TEST_RDMA_ADDR, or the first address that owns a device).
 * Leaves no context open: the servers are forked next.
 */
static void require_rdma(void)
{
    struct ifaddrs *ifs, *ifa;
    kvt_context_h   ctx;
    kvp_status_t    status;
    char            reason[1100];
    const char     *env = getenv("KVP_TEST_RDMA_ADDR");

    last_error[0] = '\0';
    status        = verbs_context(NULL, &ctx);
    if (status == KVP_ERR_UNSUPPORTED) {
        const char *why = strstr(last_error, "no RDMA device:");
        if (why == NULL && strstr(last_error, "not built") != NULL) {
            KV_SKIP("the verbs backend is not built (KVP_WITH_VERBS=OFF)");
        }
        /* the library must say why, in those words */
        ASSERT_(why != NULL, "no reason logged (last error: '%s')", last_error);
        snprintf(reason, sizeof(reason), "%s", why);
        KV_SKIP(reason);
    }
    ASSERT_OK(status);
    char dev[64];
    ASSERT_OK(kvt_verbs_device_name(ctx, dev, sizeof(dev)));
    ASSERT_STATUS(kvt_context_event_fd(ctx, &(int){0}), KVP_ERR_UNSUPPORTED);
    kvt_context_destroy(ctx);

    if (env != NULL) {
        snprintf(rdma_addr, sizeof(rdma_addr), "%s", env);
        return;
    }
    ASSERT(getifaddrs(&ifs) == 0);
    for (ifa = ifs; ifa != NULL; ifa = ifa->ifa_next) {
        if (ifa->ifa_addr == NULL || ifa->ifa_addr->sa_family != AF_INET ||
            (ifa->ifa_flags & IFF_LOOPBACK)) {
            continue;
        }
        inet_ntop(AF_INET, &((struct sockaddr_in *)ifa->ifa_addr)->sin_addr, rdma_addr,
                  sizeof(rdma_addr));
        if (verbs_context(rdma_addr, &ctx) == KVP_OK) {
            kvt_context_destroy(ctx);
            break;
        }
        rdma_addr[0] = '\0';
    }
    freeifaddrs(ifs);
    if (rdma_addr[0] == '\0') {
        snprintf(reason, sizeof(reason),
                 "RDMA device %s has no IPv4 address here; set KVP_TEST_RDMA_ADDR", dev);
        KV_SKIP(reason);
    }
}

static void test_verbs_roundtrip(void)
{
    server_t     server;
    client_t     client;
    kvt_params_t params = {.field_mask =
                               KVT_PARAM_FIELD_BACKEND | KVT_PARAM_FIELD_DEVICE_ADDR,
                           .backend = "verbs"};
    kvt_ep_h     ep;
    char         listen[64], info[64];

    require_rdma();
    helper_device_addr = params.device_addr = rdma_addr;
    snprintf(listen, sizeof(listen), "%s:0", rdma_addr);
    server_start(&server, "verbs", listen, 0);
    client_init(&client, &params);
    ASSERT(strcmp(kvt_context_backend(client.ctx), "verbs") == 0);
    ASSERT_OK(kvt_ep_connect(client.ctx, server.addr, &ep));
    ASSERT_STATUS(kvt_ucx_ep_info(ep, info, sizeof(info)), KVP_ERR_UNSUPPORTED);
    roundtrip(&client, &server, ep, 4);
    kvt_ep_destroy(ep);
    client_cleanup(&client);
    server_stop(&server);
    leak_check();
}

static void test_verbs_peer_killed(void)
{
    server_t     victim, other;
    client_t     client;
    kvt_params_t params = {.field_mask = KVT_PARAM_FIELD_BACKEND |
                                         KVT_PARAM_FIELD_DEVICE_ADDR |
                                         KVT_PARAM_FIELD_TIMEOUT_MS,
                           .backend    = "verbs",
                           .timeout_ms = 3000};
    kvt_ep_h     ep;
    kvt_iov_t    iov[BATCH];
    kvp_status_t status = KVP_OK;
    char         listen[64];
    double       t0, dt;

    require_rdma();
    helper_device_addr = params.device_addr = rdma_addr;
    snprintf(listen, sizeof(listen), "%s:0", rdma_addr);
    server_start(&victim, "verbs", listen, 0);
    server_start(&other, "verbs", listen, 0);
    client_init(&client, &params);
    ASSERT_OK(kvt_ep_connect(client.ctx, victim.addr, &ep));
    roundtrip(&client, &victim, ep, 1);

    batch_make(&client, &victim, iov, 1);
    t0 = now_s();
    kill(victim.pid, SIGKILL);
    for (int tries = 0; status == KVP_OK && tries < 1000; tries++) {
        status = xfer_wait(ep, iov, BATCH, 1);
    }
    dt = now_s() - t0;
    fprintf(stderr, "gets from a killed server: %s after %.3f s\n",
            kvp_status_string(status), dt);
    ASSERT(status == KVP_ERR_CONNECTION_LOST || status == KVP_ERR_TIMED_OUT);
    ASSERT(dt < 10.0);
    kvt_ep_destroy(ep);
    server_kill(&victim);

    ASSERT_OK(kvt_ep_connect(client.ctx, other.addr, &ep));
    roundtrip(&client, &other, ep, 1);
    kvt_ep_destroy(ep);
    client_cleanup(&client);
    server_stop(&other);
    leak_check();
}

int main(int argc, char **argv)
{
    static const kv_test_t tests[] = {
        KV_TEST(test_verbs_roundtrip),
        KV_TEST(test_verbs_peer_killed),
    };

    test_log_init();
    return kv_test_run(tests, sizeof(tests) / sizeof(tests[0]), argc, argv);
}
