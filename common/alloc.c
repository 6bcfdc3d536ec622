#include <kv/alloc.h>
#include <kv/log.h>

#include <stdlib.h>
#include <string.h>

static void oom(size_t size, const char *purpose)
{
    kv_log_error("out of memory allocating %zu bytes for %s", size, purpose);
    abort();
}

void *kv_malloc(size_t size, const char *purpose)
{
    void *ptr = malloc(size ? size : 1);
    if (ptr == NULL) {
        oom(size, purpose);
    }
    return ptr;
}

void *kv_calloc(size_t count, size_t size, const char *purpose)
{
    void *ptr = calloc(count ? count : 1, size ? size : 1);
    if (ptr == NULL) {
        oom(count * size, purpose);
    }
    return ptr;
}

void *kv_realloc(void *ptr, size_t size, const char *purpose)
{
    void *new_ptr = realloc(ptr, size ? size : 1);
    if (new_ptr == NULL) {
        oom(size, purpose);
    }
    return new_ptr;
}

char *kv_strdup(const char *str, const char *purpose)
{
    size_t len = strlen(str) + 1;
    char *copy = kv_malloc(len, purpose);
    memcpy(copy, str, len);
    return copy;
}

void *kv_malloc_try(size_t size, const char *purpose)
{
    void *ptr = malloc(size ? size : 1);
    if (ptr == NULL) {
        kv_log_warn("cannot allocate %zu bytes for %s", size, purpose);
    }
    return ptr;
}

void kv_free(void *ptr)
{
    free(ptr);
}
