/*
 * Unit tests of the arena allocator (pool/arena.c).
 */
#include "arena.h"

#include <kvpool/status.h>
#include <test.h>

#define PAGE ((uint64_t)4096)
#define KiB  ((uint64_t)1 << 10)
#define MiB  ((uint64_t)1 << 20)
#define GiB  ((uint64_t)1 << 30)

static uint64_t rng_state;

static void rng_seed(uint64_t seed)
{
    rng_state = seed * 0x9e3779b97f4a7c15ull + 1;
}

/* xorshift64*: deterministic across platforms */
static uint64_t rng_next(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}

/* uniform in [lo, hi] */
static uint64_t rng_range(uint64_t lo, uint64_t hi)
{
    return lo + rng_next() % (hi - lo + 1);
}

static void shuffle(uint64_t *items, size_t count)
{
    for (size_t i = count; i > 1; i--) {
        size_t   j   = (size_t)(rng_next() % i);
        uint64_t tmp = items[i - 1];
        items[i - 1] = items[j];
        items[j]     = tmp;
    }
}

static uint64_t round_up(uint64_t size)
{
    return (size + PAGE - 1) / PAGE * PAGE;
}

/* A mixed size: mostly small and unaligned, some up to 16 MiB. */
static uint64_t random_size(void)
{
    uint64_t r = rng_next() % 100;

    if (r < 60) {
        return rng_range(1, 64 * KiB);
    } else if (r < 90) {
        return rng_range(64 * KiB, MiB);
    }
    return rng_range(MiB, 16 * MiB);
}

static void expect_abort(kv_arena_t *arena, uint64_t offset, int size_query)
{
    int   wstatus;
    pid_t pid;

    fflush(NULL);
    pid = fork();
    ASSERT(pid >= 0);
    if (pid == 0) {
        if (size_query) {
            (void)kv_arena_alloc_size(arena, offset);
        } else {
            kv_arena_free(arena, offset);
        }
        _exit(0);
    }
    ASSERT_EQ(waitpid(pid, &wstatus, 0), pid);
    ASSERT(WIFSIGNALED(wstatus));
    ASSERT_EQ(WTERMSIG(wstatus), SIGABRT);
}

static void test_create_params(void)
{
    kv_arena_t *arena = (kv_arena_t *)(uintptr_t)0x1;

    ASSERT_STATUS(kv_arena_create(0, &arena), KVP_ERR_INVALID_PARAM);
    ASSERT_STATUS(kv_arena_create(4095, &arena), KVP_ERR_INVALID_PARAM);
    ASSERT_STATUS(kv_arena_create(4096, NULL), KVP_ERR_INVALID_PARAM);
    ASSERT_STATUS(kv_arena_create(KV_ARENA_MAX_SIZE + PAGE, &arena),
                  KVP_ERR_TOO_LARGE);
    ASSERT(arena == (kv_arena_t *)(uintptr_t)0x1); /* untouched on error */

    /* rounded down to 4 KiB */
    ASSERT_OK(kv_arena_create(3 * PAGE - 1, &arena));
    ASSERT_EQ(kv_arena_capacity(arena), 2 * PAGE);
    ASSERT_EQ(kv_arena_used(arena), 0);
    ASSERT_EQ(kv_arena_largest_free(arena), 2 * PAGE);
    ASSERT_EQ(kv_arena_free_extents(arena), 1);
    ASSERT(kv_arena_base(arena) != NULL);
    ASSERT_OK(kv_arena_check(arena));
    kv_arena_destroy(arena);

    /* the smallest arena: one page */
    ASSERT_OK(kv_arena_create(PAGE, &arena));
    ASSERT_EQ(kv_arena_capacity(arena), PAGE);
    kv_arena_destroy(arena);

    kv_arena_destroy(NULL);
}

static void test_create_huge_size(void)
{
    kv_arena_t *arena;
    uint8_t    *base;

    /* a multiple of 2 MiB tries MAP_HUGETLB, and falls back if none */
    ASSERT_OK(kv_arena_create(4 * MiB, &arena));
    ASSERT_EQ(kv_arena_capacity(arena), 4 * MiB);
    base = kv_arena_base(arena);
    ASSERT_EQ((uintptr_t)base % PAGE, 0);
    memset(base, 0xa5, 4 * MiB); /* the whole mapping is writable */
    ASSERT_EQ(base[4 * MiB - 1], 0xa5);
    kv_arena_destroy(arena);
}

static void test_alloc_alignment(void)
{
    static const uint64_t sizes[] = {1, 100, 4095, 4096, 4097, 8191, 12345,
                                     MiB - 1, MiB, MiB + 1, 3 * MiB + 17};
    enum { N = sizeof(sizes) / sizeof(sizes[0]) };
    kv_arena_t *arena;
    uint64_t    offsets[N];
    uint64_t    used = 0;

    ASSERT_OK(kv_arena_create(64 * MiB, &arena));
    for (size_t i = 0; i < N; i++) {
        ASSERT_OK(kv_arena_alloc(arena, sizes[i], &offsets[i]));
        ASSERT_EQ(offsets[i] % PAGE, 0);
        ASSERT_LE(offsets[i] + round_up(sizes[i]), kv_arena_capacity(arena));
        ASSERT_EQ(kv_arena_alloc_size(arena, offsets[i]), round_up(sizes[i]));
        ASSERT(kv_arena_ptr(arena, offsets[i]) ==
               (uint8_t *)kv_arena_base(arena) + offsets[i]);
        used += round_up(sizes[i]);
        ASSERT_EQ(kv_arena_used(arena), used);
        /* the whole rounded extent is the caller's */
        memset(kv_arena_ptr(arena, offsets[i]), (int)(i + 1),
               round_up(sizes[i]));
    }
    /* no extent overwrote another */
    for (size_t i = 0; i < N; i++) {
        const uint8_t *p = kv_arena_ptr(arena, offsets[i]);
        for (uint64_t b = 0; b < round_up(sizes[i]); b += 511) {
            ASSERT_EQ(p[b], i + 1);
        }
        ASSERT_EQ(p[round_up(sizes[i]) - 1], i + 1);
    }
    ASSERT_OK(kv_arena_check(arena));
    kv_arena_destroy(arena);
}

static void test_alloc_errors(void)
{
    kv_arena_t *arena;
    uint64_t    offset = 12345, cap;
    uint64_t    offsets[256];

    ASSERT_OK(kv_arena_create(MiB, &arena));
    cap = kv_arena_capacity(arena);

    ASSERT_STATUS(kv_arena_alloc(arena, 0, &offset), KVP_ERR_INVALID_PARAM);
    ASSERT_STATUS(kv_arena_alloc(arena, 1, NULL), KVP_ERR_INVALID_PARAM);
    ASSERT_STATUS(kv_arena_alloc(arena, cap + 1, &offset), KVP_ERR_TOO_LARGE);
    ASSERT_STATUS(kv_arena_alloc(arena, UINT64_MAX, &offset),
                  KVP_ERR_TOO_LARGE);
    ASSERT_EQ(offset, 12345); /* untouched on error */

    /* the whole capacity, then nothing */
    ASSERT_OK(kv_arena_alloc(arena, cap, &offset));
    ASSERT_EQ(offset, 0);
    ASSERT_EQ(kv_arena_largest_free(arena), 0);
    ASSERT_EQ(kv_arena_free_extents(arena), 0);
    offset = 12345;
    ASSERT_STATUS(kv_arena_alloc(arena, 1, &offset), KVP_ERR_NO_SPACE);
    ASSERT_EQ(offset, 12345);
    /* too large stays too large even when full */
    ASSERT_STATUS(kv_arena_alloc(arena, cap + 1, &offset), KVP_ERR_TOO_LARGE);
    kv_arena_free(arena, 0);

    /* exactly cap / 4 KiB one-byte allocations fit, all distinct pages */
    for (size_t i = 0; i < 256; i++) {
        ASSERT_OK(kv_arena_alloc(arena, 1, &offsets[i]));
        for (size_t j = 0; j < i; j++) {
            ASSERT_NE(offsets[i], offsets[j]);
        }
    }
    ASSERT_EQ(kv_arena_used(arena), cap);
    ASSERT_STATUS(kv_arena_alloc(arena, 1, &offset), KVP_ERR_NO_SPACE);
    ASSERT_OK(kv_arena_check(arena));
    kv_arena_destroy(arena);
}

static void test_free_misuse_aborts(void)
{
    kv_arena_t *arena;
    uint64_t    a, b;

    ASSERT_OK(kv_arena_create(MiB, &arena));
    ASSERT_OK(kv_arena_alloc(arena, 4 * PAGE, &a));
    ASSERT_OK(kv_arena_alloc(arena, PAGE, &b));

    expect_abort(arena, a + 1, 0);            /* unaligned */
    expect_abort(arena, a + PAGE, 0);         /* interior page */
    expect_abort(arena, b + PAGE, 0);         /* a free extent */
    expect_abort(arena, MiB, 0);              /* past the end */
    expect_abort(arena, a + PAGE, 1);         /* size of an interior page */
    kv_arena_free(arena, b);
    expect_abort(arena, b, 0);                /* double free */
    expect_abort(arena, b, 1);

    kv_arena_free(arena, a);
    ASSERT_OK(kv_arena_check(arena));
    kv_arena_destroy(arena);
}

/*
 * Fill an arena exactly with 5 extents and free them in each of the 120
 * orders: after every free the free extents must be exactly the maximal
 * runs of freed neighbours, and at the end one extent.
 */
static void test_coalesce_all_orders(void)
{
    static const uint64_t pages[5] = {1, 3, 17, 2, 40};
    int                   perm[5]  = {0, 1, 2, 3, 4};
    kv_arena_t           *arena;
    uint64_t              offsets[5], total = 0;
    int                   orders = 0;

    for (int i = 0; i < 5; i++) {
        total += pages[i];
    }
    ASSERT_OK(kv_arena_create(total * PAGE, &arena));

    for (;;) {
        int freed[5] = {0};

        for (int i = 0; i < 5; i++) {
            ASSERT_OK(kv_arena_alloc(arena, pages[i] * PAGE, &offsets[i]));
        }
        ASSERT_EQ(kv_arena_used(arena), total * PAGE);
        ASSERT_EQ(kv_arena_free_extents(arena), 0);

        for (int k = 0; k < 5; k++) {
            uint64_t runs = 0, run = 0, largest = 0;

            kv_arena_free(arena, offsets[perm[k]]);
            freed[perm[k]] = 1;
            ASSERT_OK(kv_arena_check(arena));
            /* model: runs of adjacent freed extents (allocated in order) */
            for (int i = 0; i < 5; i++) {
                if (freed[i]) {
                    runs += (run == 0);
                    run  += pages[i];
                    largest = run > largest ? run : largest;
                } else {
                    run = 0;
                }
            }
            ASSERT_EQ(kv_arena_free_extents(arena), runs);
            ASSERT_EQ(kv_arena_largest_free(arena), largest * PAGE);
        }
        ASSERT_EQ(kv_arena_free_extents(arena), 1);
        ASSERT_EQ(kv_arena_used(arena), 0);
        orders++;

        /* next permutation (lexicographic) */
        int i = 3;
        while (i >= 0 && perm[i] > perm[i + 1]) {
            i--;
        }
        if (i < 0) {
            break;
        }
        int j = 4;
        while (perm[j] < perm[i]) {
            j--;
        }
        int tmp = perm[i];
        perm[i] = perm[j];
        perm[j] = tmp;
        for (int lo = i + 1, hi = 4; lo < hi; lo++, hi--) {
            tmp      = perm[lo];
            perm[lo] = perm[hi];
            perm[hi] = tmp;
        }
    }
    ASSERT_EQ(orders, 120);
    kv_arena_destroy(arena);
}

/*
 * Fill an arena (of an awkward page count) completely with random sizes
 * 4 KiB..16 MiB, free everything in random order: one allocation of the
 * whole capacity must then succeed.
 */
static void test_coalesce_random_fill(void)
{
    enum { MAX_ALLOCS = 1 << 16 };
    kv_arena_t *arena;
    uint64_t   *offsets = calloc(MAX_ALLOCS, sizeof(*offsets));
    size_t      count   = 0;
    uint64_t    cap, offset, used = 0;

    ASSERT(offsets != NULL);
    rng_seed(42);
    ASSERT_OK(kv_arena_create(GiB - 3 * PAGE, &arena));
    cap = kv_arena_capacity(arena);

    for (int round = 0; round < 3; round++) {
        /* fill: halve a failing size until even one page fails */
        for (;;) {
            uint64_t size = rng_range(4 * KiB, 16 * MiB);
            while (kv_arena_alloc(arena, size, &offset) != KVP_OK) {
                if (size <= PAGE) {
                    goto full;
                }
                size /= 2;
            }
            ASSERT(count < MAX_ALLOCS);
            offsets[count++] = offset;
            used += round_up(size);
            ASSERT_EQ(kv_arena_used(arena), used);
        }
full:
        ASSERT_EQ(used, cap);
        ASSERT_EQ(kv_arena_free_extents(arena), 0);
        ASSERT_EQ(kv_arena_largest_free(arena), 0);
        ASSERT(count > 64);
        ASSERT_OK(kv_arena_check(arena));

        shuffle(offsets, count);
        for (size_t i = 0; i < count; i++) {
            kv_arena_free(arena, offsets[i]);
        }
        count = 0;
        used  = 0;
        ASSERT_OK(kv_arena_check(arena));
        ASSERT_EQ(kv_arena_used(arena), 0);
        ASSERT_EQ(kv_arena_free_extents(arena), 1);
        ASSERT_EQ(kv_arena_largest_free(arena), cap);

        ASSERT_OK(kv_arena_alloc(arena, cap, &offset));
        ASSERT_EQ(offset, 0);
        kv_arena_free(arena, offset);
    }
    kv_arena_destroy(arena);
    free(offsets);
}

/*
 * The only hole is in the same size class as the request, but the rounded
 * good-fit search looks one class higher: the allocator must still find it
 * when it fits, and fail only when it does not.
 */
static void test_fit_in_own_class(void)
{
    kv_arena_t *arena;
    uint64_t    hole, rest, offset;

    ASSERT_OK(kv_arena_create(1000 * PAGE, &arena));
    ASSERT_OK(kv_arena_alloc(arena, 33 * PAGE, &hole));
    ASSERT_OK(kv_arena_alloc(arena, 967 * PAGE, &rest));
    kv_arena_free(arena, hole);
    ASSERT_EQ(kv_arena_largest_free(arena), 33 * PAGE);

    ASSERT_STATUS(kv_arena_alloc(arena, 33 * PAGE + 1, &offset),
                  KVP_ERR_NO_SPACE);
    ASSERT_OK(kv_arena_alloc(arena, 33 * PAGE, &offset));
    ASSERT_EQ(offset, hole);
    kv_arena_free(arena, offset);

    /* a smaller request carves the hole's start, the rest stays free */
    ASSERT_OK(kv_arena_alloc(arena, 19 * PAGE + 1, &offset));
    ASSERT_EQ(offset, hole);
    ASSERT_EQ(kv_arena_alloc_size(arena, offset), 20 * PAGE);
    ASSERT_EQ(kv_arena_free_extents(arena), 1);
    ASSERT_EQ(kv_arena_largest_free(arena), 13 * PAGE);
    kv_arena_free(arena, offset);
    ASSERT_EQ(kv_arena_largest_free(arena), 33 * PAGE);
    ASSERT_OK(kv_arena_check(arena));

    kv_arena_free(arena, rest);
    ASSERT_OK(kv_arena_alloc(arena, 1000 * PAGE, &offset));
    kv_arena_destroy(arena);
}

typedef struct live {
    uint64_t offset;
    uint64_t size;     /* rounded */
    uint32_t id;
} live_t;

static int live_cmp(const void *a, const void *b)
{
    const live_t *x = a, *y = b;
    return (x->offset > y->offset) - (x->offset < y->offset);
}

/* Check the live extents against each other and the arena's own view. */
static void churn_check(kv_arena_t *arena, live_t *live, size_t count,
                        const uint32_t *owner, uint64_t pages)
{
    live_t  *sorted = malloc((count + 1) * sizeof(*sorted));
    uint64_t runs = 0, run = 0, largest = 0, used = 0, offset;

    ASSERT(sorted != NULL);
    memcpy(sorted, live, count * sizeof(*sorted));
    qsort(sorted, count, sizeof(*sorted), live_cmp);
    for (size_t i = 0; i < count; i++) {
        ASSERT_LE(sorted[i].offset + sorted[i].size, pages * PAGE);
        if (i > 0) {
            /* no two live extents overlap */
            ASSERT_LE(sorted[i - 1].offset + sorted[i - 1].size,
                      sorted[i].offset);
        }
        used += sorted[i].size;
    }
    ASSERT_EQ(kv_arena_used(arena), used);
    free(sorted);

    /* the free space is exactly the maximal runs of unowned pages */
    for (uint64_t p = 0; p < pages; p++) {
        if (owner[p] == 0) {
            runs += (run == 0);
            run++;
            largest = run > largest ? run : largest;
        } else {
            run = 0;
        }
    }
    ASSERT_EQ(kv_arena_free_extents(arena), runs);
    ASSERT_EQ(kv_arena_largest_free(arena), largest * PAGE);
    ASSERT_OK(kv_arena_check(arena));

    /* what largest_free reports can really be allocated */
    if (largest > 0) {
        ASSERT_OK(kv_arena_alloc(arena, largest * PAGE, &offset));
        kv_arena_free(arena, offset);
    }
}

static void churn_stamp(kv_arena_t *arena, const live_t *l)
{
    uint8_t *p = kv_arena_ptr(arena, l->offset);
    memcpy(p, &l->id, sizeof(l->id));
    memcpy(p + l->size - sizeof(l->id), &l->id, sizeof(l->id));
}

static void churn_verify_stamp(kv_arena_t *arena, const live_t *l)
{
    uint8_t *p = kv_arena_ptr(arena, l->offset);
    uint32_t head, tail;
    memcpy(&head, p, sizeof(head));
    memcpy(&tail, p + l->size - sizeof(tail), sizeof(tail));
    ASSERT_EQ(head, l->id);
    ASSERT_EQ(tail, l->id);
}

/*
 * A long seeded random churn of mixed sizes, checking after every step that
 * the new extent overlaps no live one (page ownership map) and that used is
 * the sum of rounded sizes, and periodically the whole picture; at the end
 * everything is freed and must coalesce back to one extent.
 */
static void test_churn(void)
{
    enum { OPS = 100000, MAX_LIVE = 1 << 16 };
    const uint64_t cap   = 256 * MiB;
    const uint64_t pages = cap / PAGE;
    kv_arena_t    *arena;
    live_t        *live  = calloc(MAX_LIVE, sizeof(*live));
    uint32_t      *owner = calloc(pages, sizeof(*owner));
    size_t         count = 0;
    uint32_t       next_id = 1;
    uint64_t       used = 0, failures = 0, used_at_failure = 0;
    uint64_t      *order;

    ASSERT(live != NULL && owner != NULL);
    rng_seed(7);
    ASSERT_OK(kv_arena_create(cap, &arena));

    for (int op = 0; op < OPS; op++) {
        /* allocate more often than free: the arena runs near full */
        if ((count == 0) || ((rng_next() % 100) < 60 && count < MAX_LIVE)) {
            uint64_t     size = random_size(), offset = 0;
            kvp_status_t status = kv_arena_alloc(arena, size, &offset);

            if (status == KVP_ERR_NO_SPACE) {
                /* only when no free extent is large enough */
                ASSERT(kv_arena_largest_free(arena) < round_up(size));
                failures++;
                used_at_failure += used;
                continue;
            }
            ASSERT_OK(status);
            ASSERT_EQ(offset % PAGE, 0);
            ASSERT_EQ(kv_arena_alloc_size(arena, offset), round_up(size));
            live_t *l = &live[count++];
            l->offset = offset;
            l->size   = round_up(size);
            l->id     = next_id++;
            ASSERT_LE(l->offset + l->size, cap);
            for (uint64_t p = offset / PAGE; p < (offset + l->size) / PAGE; p++) {
                ASSERT_EQ(owner[p], 0); /* overlaps nothing live */
                owner[p] = l->id;
            }
            churn_stamp(arena, l);
            used += l->size;
        } else {
            size_t i = (size_t)(rng_next() % count);
            live_t l = live[i];

            churn_verify_stamp(arena, &l); /* nobody wrote into it */
            for (uint64_t p = l.offset / PAGE; p < (l.offset + l.size) / PAGE; p++) {
                ASSERT_EQ(owner[p], l.id);
                owner[p] = 0;
            }
            kv_arena_free(arena, l.offset);
            live[i] = live[--count];
            used -= l.size;
        }
        ASSERT_EQ(kv_arena_used(arena), used);
        if (op % 5000 == 0) {
            churn_check(arena, live, count, owner, pages);
        }
    }
    churn_check(arena, live, count, owner, pages);

    /*
     * Fragmentation: a request fails only when the arena is nearly full.
     * Requests are at most 16 MiB of 256 MiB, so a failing arena that
     * merges well is mostly used (a non-coalescing allocator ends up far
     * lower).
     */
    ASSERT(failures > 100);
    ASSERT_LE(cap * 80 / 100, used_at_failure / failures);

    /* free everything in random order: back to one extent */
    order = malloc(count * sizeof(*order) + 1);
    ASSERT(order != NULL);
    for (size_t i = 0; i < count; i++) {
        order[i] = live[i].offset;
    }
    shuffle(order, count);
    for (size_t i = 0; i < count; i++) {
        kv_arena_free(arena, order[i]);
    }
    ASSERT_EQ(kv_arena_used(arena), 0);
    ASSERT_EQ(kv_arena_free_extents(arena), 1);
    ASSERT_EQ(kv_arena_largest_free(arena), cap);
    ASSERT_OK(kv_arena_check(arena));

    free(order);
    free(owner);
    free(live);
    kv_arena_destroy(arena);
}

KV_TEST_MAIN(KV_TEST(test_create_params), KV_TEST(test_create_huge_size),
             KV_TEST(test_alloc_alignment), KV_TEST(test_alloc_errors),
             KV_TEST(test_free_misuse_aborts), KV_TEST(test_coalesce_all_orders),
             KV_TEST(test_coalesce_random_fill), KV_TEST(test_fit_in_own_class),
             KV_TEST(test_churn))
