/**
 * @file text.h
 * @brief A growable text buffer, and writers of the Prometheus text
 * exposition format (version 0.0.4) on top of it.
 */
#ifndef KV_TEXT_H
#define KV_TEXT_H

#include <stddef.h>
#include <stdint.h>

/** A NUL-terminated string that grows; zero-initialise it. */
typedef struct kv_text {
    char  *buf; /**< NULL until something is written */
    size_t len;
    size_t cap;
} kv_text_t;

/** @brief Append printf-style; aborts the process when out of memory. */
void kv_text_printf(kv_text_t *text, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/** @brief Free the buffer and zero @p text. */
void kv_text_free(kv_text_t *text);

/**
 * @brief "# HELP" and "# TYPE" lines of the family @p name; @p type is
 * "counter", "gauge" or "histogram".  Each family once, before its samples.
 */
void kv_prom_family(kv_text_t *text, const char *name, const char *type,
                    const char *help);

/**
 * @brief One sample: @p name{@p labels} @p value.  @p labels is NULL or the
 * inside of the braces, already escaped (kv_prom_label()).
 */
void kv_prom_sample(kv_text_t *text, const char *name, const char *labels, double value);

/**
 * @brief Append `key="value"` to a label list in @p out (comma first if it
 * is not empty), escaping the value (backslash, quote, newline).
 * @p out holds @p len bytes; a label that does not fit is cut.
 */
void kv_prom_label(char *out, size_t len, const char *key, const char *value);

/**
 * @brief One sample of @p name per error status with a count: @p counts[i]
 * is the count of status -i (1 <= i < @p n), labelled status="not_found"
 * (kvp_status_string() with '_' for ' ') after @p labels (may be NULL).
 */
void kv_prom_by_status(kv_text_t *text, const char *name, const char *labels,
                       const uint64_t *counts, size_t n);

/** Most finite buckets of a histogram. */
#define KV_HIST_MAX 24

/**
 * A histogram with fixed buckets: @c bounds[i] is bucket i's upper bound
 * (ascending; the last bucket, +Inf, is implicit).  Zero-initialise, then
 * set @c bounds and @c n_bounds (<= KV_HIST_MAX), e.g. to kv_hist_seconds.
 */
typedef struct kv_histogram {
    const double *bounds;
    size_t        n_bounds;
    uint64_t      counts[KV_HIST_MAX + 1]; /**< per bucket, not cumulative */
    uint64_t      count;
    double        sum;
} kv_histogram_t;

/** Latency buckets, 10 us to 2.5 s, in seconds. */
extern const double kv_hist_seconds[];
/** How many kv_hist_seconds has. */
extern const size_t kv_hist_seconds_count;

/** @brief Start @p hist empty with @p bounds (@p n of them, at most KV_HIST_MAX). */
void kv_histogram_init(kv_histogram_t *hist, const double *bounds, size_t n);

/** @brief Count one observation of @p value. */
void kv_histogram_observe(kv_histogram_t *hist, double value);

/**
 * @brief The _bucket (cumulative, with le), _sum and _count samples of
 * @p hist under family @p name (declared with kv_prom_family()).
 */
void kv_prom_histogram(kv_text_t *text, const char *name, const char *labels,
                       const kv_histogram_t *hist);

#endif
