/*
 * arena.c - the host-memory arena and its TLSF-style offset allocator.
 *
 * The arena is one mapping of `pages` 4 KiB pages.  At any time it is cut
 * into extents: runs of whole pages, each either allocated or free, that
 * tile the arena exactly.  Nothing is stored inside the arena; three side
 * tables indexed by page number and one bitmap describe the extents:
 *
 *   page:        0   1   2   3   4   5   6   7   8   9
 *              +---+---+---+---+---+---+---+---+---+---+
 *   extents:   | A (3 pages) | free (4 pages)| B | f2  |   A, B allocated
 *              +---+---+---+---+---+---+---+---+---+---+
 *   tag[]:       3   .   3   4   .   .   4   1   2   2    (. = stale)
 *   alloc bit:   1   0   0   0   0   0   0   1   0   0
 *   next/prev:              [3] links in its free list    [8] links
 *
 *  - tag[p] is the extent's length in pages, kept at its FIRST and at its
 *    LAST page (boundary tags; for a one-page extent both are the same
 *    slot).  Interior slots are stale and never read.  So from an extent
 *    starting at p of n pages, the right neighbour starts at p + n and the
 *    left neighbour starts at p - tag[p - 1]: both found in O(1).
 *  - alloc bit p is set iff page p is the first page of an allocated
 *    extent.  It tells whether a neighbour is free, and lets kv_arena_free()
 *    reject offsets that are not allocated extents (double or interior
 *    frees) at the cost of one bit per page.
 *  - next[p] / prev[p] link the free extent starting at p into its free list
 *    (NIL ends a list); they are meaningful only at free extent starts.
 *
 * Free extents are kept in segregated lists, TLSF style.  An extent of n
 * pages lives in list (fl, sl):
 *    n < 16:  fl = 0, sl = n                      (exact classes)
 *    n >= 16: fl = log2(n) - 3, sl = the 4 bits below the top bit of n
 * so class (fl >= 1, sl) holds sizes [(16 + sl) << (fl - 1),
 * (17 + sl) << (fl - 1)): 16 linear sub-ranges per power of two, which bounds
 * the waste of a good fit to 1/16.  fl_bitmap has bit fl set iff some list
 * of that row is non-empty; sl_bitmap[fl] has bit sl set iff list (fl, sl)
 * is non-empty.
 *
 * Allocation of n pages rounds n up to the next class boundary, so that
 * every extent of the first non-empty class at or above it fits, and finds
 * that class with two find-first-set operations: O(1).  It takes the head
 * extent of that list, carves n pages from its start and puts the remainder
 * back in the list of its own size.  Only if no such class exists is the
 * list of n's own class (whose extents may or may not fit) scanned, so that
 * an allocation fails only when no free extent at all is large enough; this
 * scan is bounded by the length of one list and happens only when the arena
 * is nearly full or fragmented.
 *
 * Free clears the alloc bit, merges the extent with its left and right
 * neighbours when they are free (removing them from their lists, O(1) with
 * the doubly-linked lists) and inserts the result at the head of its list.
 *
 * Invariants (checked by kv_arena_check()):
 *  1. the extents tile [0, pages); both tags of every extent hold its size;
 *  2. no two free extents are adjacent (coalescing is immediate), hence an
 *     empty arena is exactly one free extent;
 *  3. every free extent is on exactly the list of its size class, and the
 *     bitmaps match the emptiness of the lists;
 *  4. the alloc bits are set exactly at the first pages of allocated
 *     extents, and used_pages is the sum of their sizes.
 */
#include "arena.h"

#include <kv/alloc.h>
#include <kv/log.h>

#include <assert.h>
#include <inttypes.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#define ARENA_PAGE_SHIFT 12
#define ARENA_HUGE_SIZE  ((uint64_t)2 << 20)

#define SL_BITS  4
#define SL_COUNT (1u << SL_BITS)
/* n < 2^32 pages, rounded up by at most 1/16: log2 <= 32, fl <= 29 */
#define FL_COUNT 32

#define NIL UINT32_MAX

struct kv_arena {
    uint8_t  *base;
    uint64_t  size;          /* bytes, a multiple of the page size */
    uint32_t  pages;         /* size in pages, < NIL */
    int       hugetlb;       /* backed by hugetlb pages */
    int       fd;            /* the memfd behind the mapping */
    uint64_t  used_pages;    /* pages in allocated extents */
    uint64_t  free_extents;  /* extents on the free lists */
    uint32_t  fl_bitmap;
    uint32_t  sl_bitmap[FL_COUNT];
    uint32_t  heads[FL_COUNT][SL_COUNT];
    uint32_t *tag;           /* [pages] extent size, at first and last page */
    uint32_t *next;          /* [pages] free list links, at free starts */
    uint32_t *prev;
    uint64_t *alloc_bits;    /* [pages / 64] allocated extent starts */
};

static void arena_mapping(uint64_t pages, unsigned *fl_p, unsigned *sl_p)
{
    unsigned log2;

    if (pages < SL_COUNT) {
        *fl_p = 0;
        *sl_p = (unsigned)pages;
        return;
    }
    log2  = 63u - (unsigned)__builtin_clzll(pages);
    *fl_p = log2 - SL_BITS + 1;
    *sl_p = (unsigned)(pages >> (log2 - SL_BITS)) - SL_COUNT;
}

static int arena_is_alloc(const kv_arena_t *arena, uint32_t page)
{
    return (arena->alloc_bits[page / 64] >> (page % 64)) & 1;
}

static void arena_set_alloc(kv_arena_t *arena, uint32_t page, int alloc)
{
    uint64_t bit = (uint64_t)1 << (page % 64);

    if (alloc) {
        arena->alloc_bits[page / 64] |= bit;
    } else {
        arena->alloc_bits[page / 64] &= ~bit;
    }
}

static void arena_set_extent(kv_arena_t *arena, uint32_t page, uint32_t pages)
{
    arena->tag[page]             = pages;
    arena->tag[page + pages - 1] = pages;
}

static void arena_list_insert(kv_arena_t *arena, uint32_t page)
{
    unsigned fl, sl;
    uint32_t head;

    arena_mapping(arena->tag[page], &fl, &sl);
    head              = arena->heads[fl][sl];
    arena->prev[page] = NIL;
    arena->next[page] = head;
    if (head != NIL) {
        arena->prev[head] = page;
    }
    arena->heads[fl][sl]   = page;
    arena->sl_bitmap[fl]  |= 1u << sl;
    arena->fl_bitmap      |= 1u << fl;
    arena->free_extents++;
}

static void arena_list_remove(kv_arena_t *arena, uint32_t page)
{
    uint32_t prev = arena->prev[page];
    uint32_t next = arena->next[page];
    unsigned fl, sl;

    if (next != NIL) {
        arena->prev[next] = prev;
    }
    if (prev != NIL) {
        arena->next[prev] = next;
    } else {
        arena_mapping(arena->tag[page], &fl, &sl);
        assert(arena->heads[fl][sl] == page);
        arena->heads[fl][sl] = next;
        if (next == NIL) {
            arena->sl_bitmap[fl] &= ~(1u << sl);
            if (arena->sl_bitmap[fl] == 0) {
                arena->fl_bitmap &= ~(1u << fl);
            }
        }
    }
    arena->free_extents--;
}

/* Head of the first non-empty list at class (fl, sl) or above, or NIL. */
static uint32_t arena_find_class(const kv_arena_t *arena, unsigned fl,
                                 unsigned sl)
{
    uint32_t sl_map, fl_map;

    if (fl >= FL_COUNT) {
        return NIL;
    }
    sl_map = arena->sl_bitmap[fl] & (~0u << sl);
    if (sl_map == 0) {
        fl_map = (fl + 1 < FL_COUNT) ? arena->fl_bitmap & (~0u << (fl + 1)) : 0;
        if (fl_map == 0) {
            return NIL;
        }
        fl     = (unsigned)__builtin_ctz(fl_map);
        sl_map = arena->sl_bitmap[fl];
    }
    sl = (unsigned)__builtin_ctz(sl_map);
    return arena->heads[fl][sl];
}

/* Start of a free extent of at least @pages pages, or NIL. */
static uint32_t arena_find(const kv_arena_t *arena, uint32_t pages)
{
    uint64_t search = pages;
    unsigned fl, sl, want_fl, want_sl;
    uint32_t page;

    /* round up to the next class boundary: all extents there fit */
    if (pages >= SL_COUNT) {
        search += ((uint64_t)1 << (63 - __builtin_clzll(pages) - SL_BITS)) - 1;
    }
    arena_mapping(search, &fl, &sl);
    page = arena_find_class(arena, fl, sl);
    if (page != NIL) {
        return page;
    }

    /* nothing larger: some extent in pages' own class may still fit */
    arena_mapping(pages, &want_fl, &want_sl);
    if ((want_fl == fl) && (want_sl == sl)) {
        return NIL; /* that class was just found empty */
    }
    for (page = arena->heads[want_fl][want_sl]; page != NIL;
         page = arena->next[page]) {
        if (arena->tag[page] >= pages) {
            return page;
        }
    }
    return NIL;
}

static __attribute__((noreturn)) void arena_misuse(const char *what,
                                                   uint64_t offset)
{
    kv_log_error("arena: %s of offset %" PRIu64
                 ", which is not an allocated extent", what, offset);
    abort();
}

/* Page of the allocated extent at @offset; aborts if there is none. */
static uint32_t arena_alloc_page(const kv_arena_t *arena, uint64_t offset,
                                 const char *what)
{
    uint32_t page;

    if ((offset % KV_ARENA_PAGE_SIZE) != 0 || offset >= arena->size) {
        arena_misuse(what, offset);
    }
    page = (uint32_t)(offset >> ARENA_PAGE_SHIFT);
    if (!arena_is_alloc(arena, page)) {
        arena_misuse(what, offset);
    }
    return page;
}

/*
 * The arena is a memfd mapped shared, so the node can hand it to clients on
 * the same host (node_shm.c) and they read and write blocks in place.
 * Returns the mapping and *fd_p, or NULL (logged).
 */
static void *arena_map_fd(uint64_t size, unsigned flags, int *fd_p)
{
    void *base;
    int   fd = memfd_create("kvpool-arena", MFD_CLOEXEC | flags);

    if (fd < 0) {
        return NULL;
    }
    if (ftruncate(fd, (off_t)size) != 0) {
        close(fd);
        return NULL;
    }
    base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) {
        close(fd);
        return NULL;
    }
    *fd_p = fd;
    return base;
}

static void *arena_map(uint64_t size, int *hugetlb_p, int *fd_p)
{
    void *base;

    if ((size % ARENA_HUGE_SIZE) == 0) {
        base = arena_map_fd(size, MFD_HUGETLB, fd_p);
        if (base != NULL) {
            *hugetlb_p = 1;
            return base;
        }
        kv_log_debug("arena: no hugetlb pages for %" PRIu64
                     " bytes (%m), using normal pages", size);
    }

    base = arena_map_fd(size, 0, fd_p);
    if (base == NULL) {
        kv_log_error("arena: cannot map %" PRIu64 " bytes: %m", size);
        return NULL;
    }
    if (madvise(base, size, MADV_HUGEPAGE) != 0) {
        kv_log_debug("arena: madvise(MADV_HUGEPAGE) failed: %m");
    }
    /*
     * Fault the whole arena in now: the node reserves its memory at
     * start-up (as RDMA registration will pin it) instead of paying page
     * faults on the put path.
     */
    if (madvise(base, size, MADV_POPULATE_WRITE) != 0) {
        kv_log_debug("arena: MADV_POPULATE_WRITE failed (%m); touching pages");
        for (uint64_t off = 0; off < size; off += KV_ARENA_PAGE_SIZE) {
            ((volatile char *)base)[off] = 0;
        }
    }
    *hugetlb_p = 0;
    return base;
}

kvp_status_t kv_arena_create(uint64_t size, kv_arena_t **arena_p)
{
    kv_arena_t *arena;
    void       *base;
    int         hugetlb, fd;
    uint32_t    pages;

    size &= ~(KV_ARENA_PAGE_SIZE - 1);
    if ((arena_p == NULL) || (size < KV_ARENA_PAGE_SIZE)) {
        return KVP_ERR_INVALID_PARAM;
    }
    if (size > KV_ARENA_MAX_SIZE) {
        return KVP_ERR_TOO_LARGE;
    }

    base = arena_map(size, &hugetlb, &fd);
    if (base == NULL) {
        return KVP_ERR_NO_MEMORY;
    }

    pages             = (uint32_t)(size >> ARENA_PAGE_SHIFT);
    arena             = kv_calloc(1, sizeof(*arena), "arena");
    arena->base       = base;
    arena->size       = size;
    arena->pages      = pages;
    arena->hugetlb    = hugetlb;
    arena->fd         = fd;
    arena->tag        = kv_malloc((size_t)pages * sizeof(uint32_t), "arena tags");
    arena->next       = kv_malloc((size_t)pages * sizeof(uint32_t), "arena links");
    arena->prev       = kv_malloc((size_t)pages * sizeof(uint32_t), "arena links");
    arena->alloc_bits = kv_calloc(((size_t)pages + 63) / 64, sizeof(uint64_t),
                                  "arena bitmap");
    for (unsigned fl = 0; fl < FL_COUNT; fl++) {
        for (unsigned sl = 0; sl < SL_COUNT; sl++) {
            arena->heads[fl][sl] = NIL;
        }
    }

    arena_set_extent(arena, 0, pages);
    arena_list_insert(arena, 0);

    kv_log_info("arena: %" PRIu64 " bytes at %p (%s)", size, base,
                hugetlb ? "hugetlb pages" : "normal pages, THP advised");
    *arena_p = arena;
    return KVP_OK;
}

int kv_arena_fd(const kv_arena_t *arena)
{
    return arena->fd;
}

void kv_arena_destroy(kv_arena_t *arena)
{
    if (arena == NULL) {
        return;
    }
    if (munmap(arena->base, arena->size) != 0) {
        kv_log_warn("arena: munmap failed: %m");
    }
    close(arena->fd);
    kv_free(arena->tag);
    kv_free(arena->next);
    kv_free(arena->prev);
    kv_free(arena->alloc_bits);
    kv_free(arena);
}

kvp_status_t kv_arena_alloc(kv_arena_t *arena, uint64_t size,
                            uint64_t *offset_p)
{
    uint32_t pages, page, total;

    if ((size == 0) || (offset_p == NULL)) {
        return KVP_ERR_INVALID_PARAM;
    }
    if (size > arena->size) {
        return KVP_ERR_TOO_LARGE;
    }

    pages = (uint32_t)((size + KV_ARENA_PAGE_SIZE - 1) >> ARENA_PAGE_SHIFT);
    page  = arena_find(arena, pages);
    if (page == NIL) {
        return KVP_ERR_NO_SPACE;
    }

    arena_list_remove(arena, page);
    total = arena->tag[page];
    assert(total >= pages);
    if (total > pages) {
        arena_set_extent(arena, page + pages, total - pages);
        arena_list_insert(arena, page + pages);
    }
    arena_set_extent(arena, page, pages);
    arena_set_alloc(arena, page, 1);
    arena->used_pages += pages;

    *offset_p = (uint64_t)page << ARENA_PAGE_SHIFT;
    return KVP_OK;
}

void kv_arena_free(kv_arena_t *arena, uint64_t offset)
{
    uint32_t page  = arena_alloc_page(arena, offset, "free");
    uint32_t pages = arena->tag[page];
    uint32_t left, right;

    arena_set_alloc(arena, page, 0);
    arena->used_pages -= pages;

    if (page > 0) {
        left = page - arena->tag[page - 1];
        if (!arena_is_alloc(arena, left)) {
            arena_list_remove(arena, left);
            pages += page - left;
            page   = left;
        }
    }

    right = page + pages;
    if ((right < arena->pages) && !arena_is_alloc(arena, right)) {
        arena_list_remove(arena, right);
        pages += arena->tag[right];
    }

    arena_set_extent(arena, page, pages);
    arena_list_insert(arena, page);
}

void *kv_arena_ptr(const kv_arena_t *arena, uint64_t offset)
{
    assert(offset < arena->size);
    return arena->base + offset;
}

void *kv_arena_base(const kv_arena_t *arena)
{
    return arena->base;
}

uint64_t kv_arena_capacity(const kv_arena_t *arena)
{
    return arena->size;
}

uint64_t kv_arena_used(const kv_arena_t *arena)
{
    return arena->used_pages << ARENA_PAGE_SHIFT;
}

uint64_t kv_arena_largest_free(const kv_arena_t *arena)
{
    uint32_t largest = 0;
    unsigned fl, sl;

    if (arena->fl_bitmap == 0) {
        return 0;
    }
    fl = 31u - (unsigned)__builtin_clz(arena->fl_bitmap);
    sl = 31u - (unsigned)__builtin_clz(arena->sl_bitmap[fl]);
    for (uint32_t page = arena->heads[fl][sl]; page != NIL;
         page = arena->next[page]) {
        if (arena->tag[page] > largest) {
            largest = arena->tag[page];
        }
    }
    return (uint64_t)largest << ARENA_PAGE_SHIFT;
}

uint64_t kv_arena_alloc_size(const kv_arena_t *arena, uint64_t offset)
{
    uint32_t page = arena_alloc_page(arena, offset, "size query");

    return (uint64_t)arena->tag[page] << ARENA_PAGE_SHIFT;
}

uint64_t kv_arena_free_extents(const kv_arena_t *arena)
{
    return arena->free_extents;
}

#define ARENA_CHECK(_cond, ...) \
    do { \
        if (!(_cond)) { \
            kv_log_error("arena check: " __VA_ARGS__); \
            status = KVP_ERR_INTERNAL; \
            goto out; \
        } \
    } while (0)

kvp_status_t kv_arena_check(const kv_arena_t *arena)
{
    kvp_status_t status = KVP_OK;
    uint64_t    *free_starts;
    uint64_t     used = 0, nfree = 0, nalloc = 0, listed = 0, bits = 0;
    uint32_t     page, pages, prev_free = 0;
    unsigned     fl, sl;

    free_starts = kv_calloc(((size_t)arena->pages + 63) / 64, sizeof(uint64_t),
                            "arena check");

    /* 1, 2, 4: walk the extents by their tags */
    for (page = 0; page < arena->pages; page += pages) {
        pages = arena->tag[page];
        ARENA_CHECK(pages >= 1 && pages <= arena->pages - page,
                    "extent at page %" PRIu32 " has bad size %" PRIu32,
                    page, pages);
        ARENA_CHECK(arena->tag[page + pages - 1] == pages,
                    "extent at page %" PRIu32 " has tags %" PRIu32
                    "/%" PRIu32, page, pages, arena->tag[page + pages - 1]);
        if (arena_is_alloc(arena, page)) {
            used += pages;
            nalloc++;
            prev_free = 0;
        } else {
            ARENA_CHECK(!prev_free, "free extents adjacent at page %" PRIu32,
                        page);
            free_starts[page / 64] |= (uint64_t)1 << (page % 64);
            nfree++;
            prev_free = 1;
        }
    }
    ARENA_CHECK(used == arena->used_pages, "used pages %" PRIu64 " vs %" PRIu64,
                used, arena->used_pages);
    for (size_t i = 0; i < ((size_t)arena->pages + 63) / 64; i++) {
        bits += (uint64_t)__builtin_popcountll(arena->alloc_bits[i]);
    }
    ARENA_CHECK(bits == nalloc, "%" PRIu64 " alloc bits for %" PRIu64
                " allocated extents", bits, nalloc);

    /* 3: every list member is a distinct free extent of the list's class */
    for (fl = 0; fl < FL_COUNT; fl++) {
        for (sl = 0; sl < SL_COUNT; sl++) {
            uint32_t prev = NIL;
            unsigned mfl, msl;

            ARENA_CHECK(!(arena->heads[fl][sl] == NIL) ==
                        !!(arena->sl_bitmap[fl] & (1u << sl)),
                        "sl bitmap wrong at %u/%u", fl, sl);
            for (page = arena->heads[fl][sl]; page != NIL;
                 page = arena->next[page]) {
                ARENA_CHECK(page < arena->pages &&
                            (free_starts[page / 64] >> (page % 64)) & 1,
                            "list %u/%u holds page %" PRIu32
                            ", not a free extent (or twice)", fl, sl, page);
                free_starts[page / 64] &= ~((uint64_t)1 << (page % 64));
                ARENA_CHECK(arena->prev[page] == prev,
                            "bad prev link at page %" PRIu32, page);
                arena_mapping(arena->tag[page], &mfl, &msl);
                ARENA_CHECK(mfl == fl && msl == sl,
                            "extent at %" PRIu32 " in list %u/%u, not %u/%u",
                            page, fl, sl, mfl, msl);
                prev = page;
                listed++;
            }
        }
        ARENA_CHECK(!(arena->sl_bitmap[fl] == 0) ==
                    !!(arena->fl_bitmap & (1u << fl)),
                    "fl bitmap wrong at %u", fl);
    }
    ARENA_CHECK(listed == nfree && nfree == arena->free_extents,
                "%" PRIu64 " free extents, %" PRIu64 " listed, %" PRIu64
                " counted", nfree, listed, arena->free_extents);

out:
    kv_free(free_starts);
    return status;
}
