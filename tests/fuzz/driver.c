/*
 * A stand-in for libFuzzer where it is not available (gcc builds): feeds
 * the target every file named on the command line, then N seeded random
 * inputs built by mutating those files (or from nothing).  Not coverage
 * guided; it keeps the decoders exercised under the sanitizers on every
 * test run.  Usage: fuzz_x [-runs=N] [FILE...]
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_INPUT 4096

int main(int argc, char **argv)
{
    static uint8_t seeds[16][MAX_INPUT];
    size_t         seed_len[16];
    int            num_seeds = 0;
    long           runs      = 20000;
    uint64_t       rng       = 0x2545f4914f6cdd1dull;
    uint8_t        buf[MAX_INPUT];

    for (int i = 1; i < argc; i++) {
        if (strncmp(argv[i], "-runs=", 6) == 0) {
            runs = atol(argv[i] + 6);
            continue;
        }
        FILE *f = fopen(argv[i], "rb");
        if (f == NULL || num_seeds == 16) {
            continue;
        }
        seed_len[num_seeds] = fread(seeds[num_seeds], 1, MAX_INPUT, f);
        fclose(f);
        LLVMFuzzerTestOneInput(seeds[num_seeds], seed_len[num_seeds]);
        num_seeds++;
    }
    for (long r = 0; r < runs; r++) {
        size_t len;
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        if (num_seeds > 0 && (rng & 3) != 0) {
            int s = (int)((rng >> 8) % (uint64_t)num_seeds);
            len   = seed_len[s];
            memcpy(buf, seeds[s], len);
            for (int m = 0; m < 1 + (int)((rng >> 20) % 8) && len > 0; m++) {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                buf[(rng >> 16) % len] = (uint8_t)(rng >> 40);
            }
        } else {
            len = (size_t)((rng >> 16) % 512);
            for (size_t i = 0; i < len; i++) {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                buf[i] = (uint8_t)rng;
            }
        }
        LLVMFuzzerTestOneInput(buf, len);
    }
    printf("%ld random inputs, %d seed files: no crash\n", runs, num_seeds);
    return 0;
}
