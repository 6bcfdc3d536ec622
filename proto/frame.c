#include <kvproto/frame.h>

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
    put16(p, (uint16_t)v);
    put16(p + 2, (uint16_t)(v >> 16));
}

static void put64(uint8_t *p, uint64_t v)
{
    put32(p, (uint32_t)v);
    put32(p + 4, (uint32_t)(v >> 32));
}

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t get32(const uint8_t *p)
{
    return get16(p) | ((uint32_t)get16(p + 2) << 16);
}

static uint64_t get64(const uint8_t *p)
{
    return get32(p) | ((uint64_t)get32(p + 4) << 32);
}

void kv_frame_header_pack(const kv_frame_header_t *hdr,
                          uint8_t out[KV_FRAME_HEADER_LEN])
{
    put32(out, KV_FRAME_MAGIC);
    out[4] = hdr->kind;
    out[5] = hdr->flags;
    put16(out + 6, hdr->method);
    put64(out + 8, hdr->id);
    put32(out + 16, (uint32_t)hdr->status);
    put32(out + 20, hdr->timeout_ms);
    put32(out + 24, hdr->msg_len);
    put32(out + 28, 0);
    put64(out + 32, hdr->payload_len);
}

kvp_status_t kv_frame_header_unpack(const uint8_t in[KV_FRAME_HEADER_LEN],
                                    kv_frame_header_t *hdr_p)
{
    kv_frame_header_t hdr;

    if (get32(in) != KV_FRAME_MAGIC) {
        return KVP_ERR_PROTOCOL;
    }
    hdr.kind        = in[4];
    hdr.flags       = in[5];
    hdr.method      = get16(in + 6);
    hdr.id          = get64(in + 8);
    hdr.status      = (int32_t)get32(in + 16);
    hdr.timeout_ms  = get32(in + 20);
    hdr.msg_len     = get32(in + 24);
    hdr.payload_len = get64(in + 32);
    if ((hdr.kind != KV_FRAME_REQUEST && hdr.kind != KV_FRAME_RESPONSE) ||
        hdr.flags != 0 || get32(in + 28) != 0 || hdr.msg_len > KV_FRAME_MSG_MAX ||
        hdr.payload_len > KV_FRAME_PAYLOAD_MAX) {
        return KVP_ERR_PROTOCOL;
    }
    *hdr_p = hdr;
    return KVP_OK;
}
