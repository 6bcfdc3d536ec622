/* Unit tests of the frame header: round trips and every limit. */
#include <kvproto/frame.h>

#include "test.h"

static kv_frame_header_t sample(void)
{
    kv_frame_header_t hdr = {
        .kind        = KV_FRAME_REQUEST,
        .method      = 2,
        .id          = 0x0102030405060708ull,
        .status      = -41,
        .timeout_ms  = 1234,
        .msg_len     = 99,
        .payload_len = 1ull << 20,
    };
    return hdr;
}

static void test_round_trip(void)
{
    kv_frame_header_t in = sample(), out;
    uint8_t           raw[KV_FRAME_HEADER_LEN];

    kv_frame_header_pack(&in, raw);
    ASSERT_EQ(raw[0], 'K');
    ASSERT_EQ(raw[3], '1');
    ASSERT_EQ(raw[8], 0x08); /* little-endian id */
    ASSERT_OK(kv_frame_header_unpack(raw, &out));
    ASSERT_EQ(out.kind, in.kind);
    ASSERT_EQ(out.method, in.method);
    ASSERT_EQ(out.id, in.id);
    ASSERT_EQ(out.status, in.status);
    ASSERT_EQ(out.timeout_ms, in.timeout_ms);
    ASSERT_EQ(out.msg_len, in.msg_len);
    ASSERT_EQ(out.payload_len, in.payload_len);
}

static void expect_refused(const kv_frame_header_t *hdr)
{
    kv_frame_header_t out = {0};
    uint8_t           raw[KV_FRAME_HEADER_LEN];

    kv_frame_header_pack(hdr, raw);
    ASSERT_STATUS(kv_frame_header_unpack(raw, &out), KVP_ERR_PROTOCOL);
    ASSERT_EQ(out.id, 0); /* untouched */
}

static void test_limits(void)
{
    kv_frame_header_t hdr = sample(), out;
    uint8_t           raw[KV_FRAME_HEADER_LEN];

    hdr.msg_len     = KV_FRAME_MSG_MAX;
    hdr.payload_len = KV_FRAME_PAYLOAD_MAX;
    kv_frame_header_pack(&hdr, raw);
    ASSERT_OK(kv_frame_header_unpack(raw, &out));

    hdr.msg_len = KV_FRAME_MSG_MAX + 1;
    expect_refused(&hdr);
    hdr.msg_len = UINT32_MAX;
    expect_refused(&hdr);
    hdr             = sample();
    hdr.payload_len = KV_FRAME_PAYLOAD_MAX + 1;
    expect_refused(&hdr);
    hdr.payload_len = UINT64_MAX;
    expect_refused(&hdr);
    hdr      = sample();
    hdr.kind = 0;
    expect_refused(&hdr);
    hdr.kind = 3;
    expect_refused(&hdr);
    hdr       = sample();
    hdr.flags = 1;
    expect_refused(&hdr);
}

static void test_bad_magic_and_reserved(void)
{
    kv_frame_header_t hdr = sample(), out;
    uint8_t           raw[KV_FRAME_HEADER_LEN];

    kv_frame_header_pack(&hdr, raw);
    raw[0] ^= 1;
    ASSERT_STATUS(kv_frame_header_unpack(raw, &out), KVP_ERR_PROTOCOL);
    kv_frame_header_pack(&hdr, raw);
    raw[29] = 1; /* reserved word */
    ASSERT_STATUS(kv_frame_header_unpack(raw, &out), KVP_ERR_PROTOCOL);
}

KV_TEST_MAIN(KV_TEST(test_round_trip), KV_TEST(test_limits),
             KV_TEST(test_bad_magic_and_reserved))
