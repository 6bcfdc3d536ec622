#include <kv/log.h>

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* Set once at start-up, read by every thread afterwards. */
static kvp_log_level_t log_level = KVP_LOG_ERROR;
static kvp_log_func_t  log_func;
static void           *log_arg;
static const char     *log_component = "kvpool";

void kv_log_set_handler(kvp_log_level_t level, kvp_log_func_t func, void *arg)
{
    log_level = level;
    log_func  = func;
    log_arg   = arg;
}

static void stderr_sink(kvp_log_level_t level, const char *message, void *arg)
{
    /* syslog priorities: 3 err, 4 warning, 6 info, 7 debug */
    static const int prio[] = {3, 4, 6, 7};
    (void)arg;
    fprintf(stderr, "<%d>%s: %s\n", prio[level], log_component, message);
}

void kv_log_to_stderr(kvp_log_level_t level, const char *component)
{
    log_component = component;
    kv_log_set_handler(level, stderr_sink, NULL);
}

int kv_log_level_parse(const char *name)
{
    static const char *names[] = {"error", "warn", "info", "debug"};
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(name, names[i]) == 0) {
            return i;
        }
    }
    return -1;
}

int kv_log_enabled(kvp_log_level_t level)
{
    return log_func != NULL && level <= log_level;
}

void kv_log_emit(kvp_log_level_t level, const char *fmt, ...)
{
    char    line[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    /* one event per line: fold embedded newlines */
    for (char *p = line; *p; p++) {
        if (*p == '\n') {
            *p = ' ';
        }
    }
    if (log_func != NULL) {
        log_func(level, line, log_arg);
    }
}
