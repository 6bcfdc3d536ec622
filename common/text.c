/*
 * text.c - a growable string and the Prometheus text exposition format.
 */
#include <kv/alloc.h>
#include <kv/text.h>
#include <kvpool/status.h>

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const double kv_hist_seconds[] = {10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6,
                                  1e-3,  2.5e-3, 5e-3, 10e-3,  25e-3,  50e-3,
                                  0.1,   0.25,   0.5,  1.0,    2.5};
const size_t kv_hist_seconds_count = sizeof(kv_hist_seconds) / sizeof(kv_hist_seconds[0]);

static void text_reserve(kv_text_t *text, size_t more)
{
    size_t cap = text->cap ? text->cap : 256;

    if (text->len + more + 1 <= text->cap) {
        return;
    }
    while (cap < text->len + more + 1) {
        cap *= 2;
    }
    text->buf = kv_realloc(text->buf, cap, "text");
    text->cap = cap;
}

void kv_text_printf(kv_text_t *text, const char *fmt, ...)
{
    va_list ap;
    int     n;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        return;
    }
    text_reserve(text, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(text->buf + text->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    text->len += (size_t)n;
}

void kv_text_free(kv_text_t *text)
{
    kv_free(text->buf);
    memset(text, 0, sizeof(*text));
}

void kv_prom_family(kv_text_t *text, const char *name, const char *type,
                    const char *help)
{
    kv_text_printf(text, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void kv_prom_sample(kv_text_t *text, const char *name, const char *labels, double value)
{
    int  braces = labels != NULL && labels[0] != '\0';
    char v[32];

    if (isinf(value)) {
        snprintf(v, sizeof(v), "%s", value > 0 ? "+Inf" : "-Inf");
    } else if (value == floor(value) && fabs(value) < 1e15) {
        snprintf(v, sizeof(v), "%.0f", value); /* counters: no exponent */
    } else {
        snprintf(v, sizeof(v), "%.9g", value);
    }
    kv_text_printf(text, "%s%s%s%s %s\n", name, braces ? "{" : "", braces ? labels : "",
                   braces ? "}" : "", v);
}

void kv_prom_label(char *out, size_t len, const char *key, const char *value)
{
    size_t at = strnlen(out, len), need = strlen(key) + 3 + (at > 0);

    if (at >= len || at + need >= len) {
        return; /* not even the key fits: the list stays as it was */
    }
    at += (size_t)snprintf(out + at, len - at, "%s%s=\"", at > 0 ? "," : "", key);
    /* the value, escaped, as far as it fits with its closing quote */
    for (const char *v = value; *v != '\0'; v++) {
        const char *esc = *v == '\\' ? "\\\\" : *v == '"' ? "\\\"" : *v == '\n' ? "\\n" : NULL;
        size_t      n   = esc != NULL ? 2 : 1;

        if (at + n + 2 > len) {
            break;
        }
        memcpy(out + at, esc != NULL ? esc : v, n);
        at += n;
    }
    out[at++] = '"';
    out[at]   = '\0';
}

void kv_prom_by_status(kv_text_t *text, const char *name, const char *labels,
                       const uint64_t *counts, size_t n)
{
    char l[512], status[64];

    for (size_t i = 1; i < n; i++) {
        if (counts[i] == 0) {
            continue;
        }
        snprintf(status, sizeof(status), "%s", kvp_status_string((kvp_status_t) - (int)i));
        for (char *c = status; *c != '\0'; c++) {
            *c = *c == ' ' ? '_' : *c;
        }
        snprintf(l, sizeof(l), "%s", labels != NULL ? labels : "");
        kv_prom_label(l, sizeof(l), "status", status);
        kv_prom_sample(text, name, l, (double)counts[i]);
    }
}

void kv_histogram_init(kv_histogram_t *hist, const double *bounds, size_t n)
{
    memset(hist, 0, sizeof(*hist));
    hist->bounds   = bounds;
    hist->n_bounds = n < KV_HIST_MAX ? n : KV_HIST_MAX;
}

void kv_histogram_observe(kv_histogram_t *hist, double value)
{
    size_t i = 0;

    while (i < hist->n_bounds && value > hist->bounds[i]) {
        i++;
    }
    hist->counts[i]++;
    hist->count++;
    hist->sum += value;
}

void kv_prom_histogram(kv_text_t *text, const char *name, const char *labels,
                       const kv_histogram_t *hist)
{
    char     sample[128], le[256], bound[32];
    uint64_t cumulative = 0;

    snprintf(sample, sizeof(sample), "%s_bucket", name);
    for (size_t i = 0; i <= hist->n_bounds; i++) {
        cumulative += hist->counts[i];
        snprintf(le, sizeof(le), "%s", labels != NULL ? labels : "");
        if (i < hist->n_bounds) {
            snprintf(bound, sizeof(bound), "%g", hist->bounds[i]);
        } else {
            snprintf(bound, sizeof(bound), "+Inf");
        }
        kv_prom_label(le, sizeof(le), "le", bound);
        kv_prom_sample(text, sample, le, (double)cumulative);
    }
    snprintf(sample, sizeof(sample), "%s_sum", name);
    kv_prom_sample(text, sample, labels, hist->sum);
    snprintf(sample, sizeof(sample), "%s_count", name);
    kv_prom_sample(text, sample, labels, (double)hist->count);
}
