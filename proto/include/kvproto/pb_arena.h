/**
 * @file pb_arena.h
 * @brief An arena to decode protobuf messages into: protobuf-c allocates
 * each repeated field, string and sub-message on its own (a chain of 256
 * keys is some 260 mallocs and frees); from an arena they are carved from
 * a few chunks, all freed at once.
 *
 * Decode with protobuf_c_message_unpack(desc, &arena.allocator, ...); do
 * not free the message: kv_pb_arena_reset() frees everything decoded
 * since the last reset.  Threading: none; an arena belongs to one thread
 * at a time.
 */
#ifndef KVPROTO_PB_ARENA_H
#define KVPROTO_PB_ARENA_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

typedef struct kv_pb_chunk kv_pb_chunk_t;

typedef struct kv_pb_arena {
    ProtobufCAllocator allocator;  /**< what protobuf-c is given */
    uint8_t           *first;      /* caller memory, used first */
    size_t             first_len, first_used;
    kv_pb_chunk_t     *chunks;     /* then heap chunks, newest first */
} kv_pb_arena_t;

/**
 * @brief Start an arena whose first allocations come from @p first
 * (@p first_len bytes of caller memory, e.g. on the stack, that must stay
 * valid while the arena is used; NULL and 0 for none).
 */
void kv_pb_arena_init(kv_pb_arena_t *arena, void *first, size_t first_len);

/**
 * @brief Free everything allocated since init or the last reset (the heap
 * chunks; @p first is used again).  The arena stays usable.
 */
void kv_pb_arena_reset(kv_pb_arena_t *arena);

#endif
