/*
 * A decoding arena (see kvproto/pb_arena.h): bump allocation from the
 * caller's first buffer, then from heap chunks of at least PB_CHUNK bytes,
 * each twice the last; freeing one allocation does nothing.
 */
#include <kv/alloc.h>
#include <kv/util.h>
#include <kvproto/pb_arena.h>

#include <stddef.h>

#define PB_ALIGN sizeof(max_align_t)
#define PB_CHUNK (16u << 10)

struct kv_pb_chunk {
    kv_pb_chunk_t *next;
    size_t         size, used;
    max_align_t    data[];
};

static size_t pb_round(size_t size)
{
    return (size + PB_ALIGN - 1) & ~(PB_ALIGN - 1);
}

static void *pb_alloc(void *data, size_t size)
{
    kv_pb_arena_t *arena = data;
    kv_pb_chunk_t *chunk = arena->chunks;
    void          *p;
    size_t         at;

    size = pb_round(size ? size : 1);
    if (chunk == NULL && arena->first != NULL) {
        /* the first buffer may start unaligned: align the offset */
        at = pb_round((uintptr_t)arena->first + arena->first_used) - (uintptr_t)arena->first;
        if (at <= arena->first_len && arena->first_len - at >= size) {
            arena->first_used = at + size;
            return arena->first + at;
        }
    }
    if (chunk == NULL || chunk->size - chunk->used < size) {
        size_t want = KV_MAX(size, chunk == NULL ? (size_t)PB_CHUNK : 2 * chunk->size);

        chunk         = kv_malloc(sizeof(*chunk) + want, "decoding arena");
        chunk->size   = want;
        chunk->used   = 0;
        chunk->next   = arena->chunks;
        arena->chunks = chunk;
    }
    p = (uint8_t *)chunk->data + chunk->used;
    chunk->used += size;
    return p;
}

static void pb_free(void *data, void *ptr)
{
    (void)data;
    (void)ptr; /* freed with the arena */
}

void kv_pb_arena_init(kv_pb_arena_t *arena, void *first, size_t first_len)
{
    arena->allocator.alloc          = pb_alloc;
    arena->allocator.free           = pb_free;
    arena->allocator.allocator_data = arena;
    arena->first                    = first;
    arena->first_len                = first != NULL ? first_len : 0;
    arena->first_used               = 0;
    arena->chunks                   = NULL;
}

void kv_pb_arena_reset(kv_pb_arena_t *arena)
{
    while (arena->chunks != NULL) {
        kv_pb_chunk_t *chunk = arena->chunks;

        arena->chunks = chunk->next;
        kv_free(chunk);
    }
    arena->first_used = 0;
}
