/*
 * Fuzz target: the node's and the coordinator's INI config loaders and the
 * Mooncake trace reader, the parsers that read files.  The input is
 * written to a temporary file and parsed as each.
 */
#include "coord.h"
#include "node.h"
#include "workload.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char             path[] = "/tmp/kvpool-fuzz-XXXXXX";
    char             err[512];
    kv_node_config_t config;
    kv_coord_config_t coord;
    kv_workload_t   *wl;
    kv_request_t     req;
    int              fd = mkstemp(path);

    if (fd < 0) {
        return 0;
    }
    if (write(fd, data, size) != (ssize_t)size) {
        close(fd);
        unlink(path);
        return 0;
    }
    close(fd);
    kv_node_config_defaults(&config);
    (void)kv_node_config_load(&config, path, err, sizeof(err));
    kv_coord_config_defaults(&coord);
    (void)kv_coord_config_load(&coord, path, err, sizeof(err));
    if (kv_workload_trace_open(path, &wl, err, sizeof(err)) == KVP_OK) {
        while (kv_workload_next(wl, &req) == KVP_OK) {
        }
        kv_workload_destroy(wl);
    }
    unlink(path);
    return 0;
}
