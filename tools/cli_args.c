/*
 * Parsing the kvpool command line's numeric flags, one way for every
 * subcommand.
 */
#include "cli.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

int kv_cli_parse_u64(const char *cmd, const char *flag, const char *text, uint64_t min,
                     uint64_t max, uint64_t *value_p)
{
    unsigned long long value;
    char              *end;

    errno = 0;
    value = strtoull(text, &end, 10);
    if (text[0] < '0' || text[0] > '9' || *end != '\0' || errno != 0 || value < min ||
        value > max) {
        fprintf(stderr, "kvpool %s: %s must be a number of %llu..%llu, not '%s'\n", cmd,
                flag, (unsigned long long)min, (unsigned long long)max, text);
        return 0;
    }
    *value_p = value;
    return 1;
}
