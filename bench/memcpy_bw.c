/*
 * memcpy_bw: single-thread memcpy bandwidth for one block size, the memory
 * ceiling for kvpool's same-host (shm) path, which copies each block once.
 *
 *   memcpy_bw BLOCK_BYTES [SPAN_BYTES [SECONDS]]
 *
 * Copies block i of a source span to block i of a destination span, for
 * every block of the span (default 1 GiB each, far larger than any LLC, so
 * every copy reads from and writes to DRAM), and repeats whole passes until
 * SECONDS (default 1) have passed.  Prints the bytes copied per second in
 * GB/s (1e9), counting each copied byte once, as kvpool bench does.
 *
 * Built by bench/run.sh with `cc -O2`; not part of the CMake build.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A span of @size bytes, faulted in (and on huge pages where it can be). */
static uint8_t *span_alloc(size_t size, int fill)
{
    uint8_t *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                      -1, 0);

    if (p == MAP_FAILED) {
        perror("memcpy_bw: mmap");
        exit(1);
    }
    madvise(p, size, MADV_HUGEPAGE); /* advice only, as kvpool's arena */
    memset(p, fill, size);
    return p;
}

static void pass(uint8_t *dst, const uint8_t *src, size_t block, size_t blocks)
{
    for (size_t i = 0; i < blocks; i++) {
        memcpy(dst + i * block, src + i * block, block);
        __asm__ volatile("" ::: "memory"); /* keep every copy */
    }
}

int main(int argc, char **argv)
{
    size_t   block, span = (size_t)1 << 30, blocks, passes = 0;
    double   seconds = 1.0, t0, elapsed;
    uint8_t *src, *dst;

    if (argc < 2 || argc > 4) {
        fprintf(stderr, "usage: memcpy_bw BLOCK_BYTES [SPAN_BYTES [SECONDS]]\n");
        return 2;
    }
    block = strtoull(argv[1], NULL, 10);
    if (argc > 2) {
        span = strtoull(argv[2], NULL, 10);
    }
    if (argc > 3) {
        seconds = strtod(argv[3], NULL);
    }
    if (block == 0 || span < block) {
        fprintf(stderr, "memcpy_bw: need 0 < BLOCK_BYTES <= SPAN_BYTES\n");
        return 2;
    }
    blocks = span / block;
    src    = span_alloc(blocks * block, 0x5a);
    dst    = span_alloc(blocks * block, 0);

    pass(dst, src, block, blocks); /* warm-up: TLB, THP collapse, frequency */
    t0 = now_s();
    do {
        pass(dst, src, block, blocks);
        passes++;
        elapsed = now_s() - t0;
    } while (elapsed < seconds);

    if (dst[blocks * block - 1] != 0x5a) {
        fprintf(stderr, "memcpy_bw: copy check failed\n");
        return 1;
    }
    printf("%.3f\n", (double)(passes * blocks * block) / elapsed / 1e9);
    return 0;
}
