/**
 * @file frame.h
 * @brief The RPC frame: the unit the control plane sends on a stream.
 *
 *     0        4    5    6        8               16       20       24
 *     +--------+----+----+--------+---------------+--------+--------+
 *     | magic  |kind|flag| method |  request id   | status |timeout |
 *     +--------+----+----+--------+---------------+--------+--------+
 *     24       28       32               40
 *     +--------+--------+---------------+---- msg_len ----+-- payload_len --+
 *     |msg_len |reserved|  payload_len  | protobuf msg    | raw block bytes |
 *     +--------+--------+---------------+-----------------+-----------------+
 *
 * All integers little-endian.  A request carries the method's input
 * message; a reply carries its output message, or an ErrorReply when
 * status is negative.  Lengths are checked against hard limits before
 * anything is allocated.
 */
#ifndef KVPROTO_FRAME_H
#define KVPROTO_FRAME_H

#include <kvpool/kvpool.h>

#include <stdint.h>

#define KV_FRAME_MAGIC      0x3150564bu  /* "KVP1" */
#define KV_FRAME_HEADER_LEN 40
#define KV_FRAME_MSG_MAX    (1u << 20)   /* protobuf part: 1 MiB */
#define KV_FRAME_PAYLOAD_MAX KVP_BLOCK_MAX

typedef enum {
    KV_FRAME_REQUEST  = 1,
    KV_FRAME_RESPONSE = 2
} kv_frame_kind_t;

typedef struct kv_frame_header {
    uint8_t  kind;        /**< kv_frame_kind_t */
    uint8_t  flags;       /**< reserved, 0 */
    uint16_t method;      /**< index of the method in its service */
    uint64_t id;          /**< request id, echoed in the reply */
    int32_t  status;      /**< replies: kvp_status_t; requests: 0 */
    uint32_t timeout_ms;  /**< requests: the caller's deadline, 0 = none */
    uint32_t msg_len;     /**< protobuf bytes, <= KV_FRAME_MSG_MAX */
    uint64_t payload_len; /**< raw bytes after the message */
} kv_frame_header_t;

/** Write @p hdr into @p out in wire order. */
void kv_frame_header_pack(const kv_frame_header_t *hdr,
                          uint8_t out[KV_FRAME_HEADER_LEN]);

/**
 * Parse and check a header.
 * @return KVP_OK and *hdr_p; KVP_ERR_PROTOCOL for a bad magic, kind or
 *         flags, or msg_len/payload_len over their limits.
 */
kvp_status_t kv_frame_header_unpack(const uint8_t in[KV_FRAME_HEADER_LEN],
                                    kv_frame_header_t *hdr_p);

#endif
