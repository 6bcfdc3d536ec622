/*
 * Fuzz target: the decoders a node applies to bytes from the wire.  The
 * first 40 bytes are a frame header; the rest is decoded as the input
 * message of every PoolNode method (and ErrorReply, which clients decode).
 * Built with libFuzzer under clang (KVP_FUZZ=ON), or with driver.c as a
 * plain program that replays random inputs.
 */
#include <kvproto/frame.h>

#include "kvpool.pb-c.h"

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const ProtobufCServiceDescriptor *svc = &kvpool__pool_node__descriptor;
    kv_frame_header_t                 hdr;

    if (size < KV_FRAME_HEADER_LEN) {
        return 0;
    }
    if (kv_frame_header_unpack(data, &hdr) == KVP_OK) {
        uint8_t again[KV_FRAME_HEADER_LEN];
        kv_frame_header_pack(&hdr, again);
        /* a header that parses must survive a round trip unchanged */
        if (__builtin_memcmp(again, data, KV_FRAME_HEADER_LEN) != 0) {
            __builtin_trap();
        }
    }
    data += KV_FRAME_HEADER_LEN;
    size -= KV_FRAME_HEADER_LEN;
    for (unsigned i = 0; i < svc->n_methods; i++) {
        ProtobufCMessage *msg =
            protobuf_c_message_unpack(svc->methods[i].input, NULL, size, data);
        if (msg != NULL) {
            protobuf_c_message_free_unpacked(msg, NULL);
        }
    }
    Kvpool__ErrorReply *err = kvpool__error_reply__unpack(NULL, size, data);
    if (err != NULL) {
        kvpool__error_reply__free_unpacked(err, NULL);
    }
    return 0;
}
