#include <kv/util.h>

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

uint64_t kv_time_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

kvp_status_t kv_size_parse(const char *text, uint64_t *size_p)
{
    static const struct {
        const char *suffix;
        unsigned    shift;
    } units[] = {
        {"", 0},     {"b", 0},    {"k", 10},   {"kb", 10},  {"kib", 10},
        {"m", 20},   {"mb", 20},  {"mib", 20}, {"g", 30},   {"gb", 30},
        {"gib", 30}, {"t", 40},   {"tb", 40},  {"tib", 40},
    };
    char              *end;
    unsigned long long value;

    if (text == NULL || *text < '0' || *text > '9') {
        return KVP_ERR_INVALID_PARAM;
    }
    errno = 0;
    value = strtoull(text, &end, 10);
    if (errno != 0) {
        return KVP_ERR_INVALID_PARAM;
    }
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcasecmp(end, units[i].suffix) == 0) {
            if (value > (UINT64_MAX >> units[i].shift)) {
                return KVP_ERR_INVALID_PARAM;
            }
            *size_p = (uint64_t)value << units[i].shift;
            return KVP_OK;
        }
    }
    return KVP_ERR_INVALID_PARAM;
}

void kv_size_format(uint64_t bytes, char *out, size_t len)
{
    static const char *names[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double             value   = (double)bytes;
    int                unit    = 0;

    while (value >= 1024.0 && unit < 4) {
        value /= 1024.0;
        unit++;
    }
    snprintf(out, len, unit ? "%.1f %s" : "%.0f %s", value, names[unit]);
}

kvp_status_t kv_addr_parse(const char *text, struct sockaddr_storage *addr_p,
                           socklen_t *len_p)
{
    char             host[256];
    const char      *port;
    size_t           host_len;
    struct addrinfo  hints = {0}, *res;

    if (text == NULL) {
        return KVP_ERR_INVALID_PARAM;
    }
    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (close == NULL || close[1] != ':') {
            return KVP_ERR_INVALID_PARAM;
        }
        host_len = (size_t)(close - text - 1);
        text++;
        port = close + 2;
    } else {
        port = strrchr(text, ':');
        if (port == NULL) {
            return KVP_ERR_INVALID_PARAM;
        }
        host_len = (size_t)(port - text);
        port++;
    }
    if (host_len == 0 || host_len >= sizeof(host) || *port == '\0' ||
        strspn(port, "0123456789") != strlen(port) || atoi(port) > 65535) {
        return KVP_ERR_INVALID_PARAM;
    }
    memcpy(host, text, host_len);
    host[host_len] = '\0';

    hints.ai_family   = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, port, &hints, &res) != 0) {
        return KVP_ERR_INVALID_PARAM;
    }
    memcpy(addr_p, res->ai_addr, res->ai_addrlen);
    *len_p = res->ai_addrlen;
    freeaddrinfo(res);
    return KVP_OK;
}

int kv_addr_is_loopback(const struct sockaddr *addr)
{
    if (addr->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)addr;
        return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    }
    if (addr->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)addr;
        if (IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr)) {
            return 1;
        }
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
            return in6->sin6_addr.s6_addr[12] == 127;
        }
    }
    return addr->sa_family == AF_UNIX;
}

void kv_host_id(char *out, size_t len)
{
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");

    out[0] = '\0';
    if (f != NULL) {
        if (fgets(out, (int)len, f) == NULL) {
            out[0] = '\0';
        }
        out[strcspn(out, "\n")] = '\0';
        fclose(f);
    }
}

kvp_status_t kv_status_from_errno(int err)
{
    switch (err) {
    case ECONNREFUSED:
    case EHOSTUNREACH:
    case ENETUNREACH:
        return KVP_ERR_CONNECTION_REFUSED;
    case ECONNRESET:
    case EPIPE:
    case ENOTCONN:
        return KVP_ERR_CONNECTION_LOST;
    case ETIMEDOUT:
        return KVP_ERR_TIMED_OUT;
    case ENOMEM:
        return KVP_ERR_NO_MEMORY;
    case EINVAL:
        return KVP_ERR_INVALID_PARAM;
    default:
        return KVP_ERR_IO;
    }
}

const char *kv_tier_name(int tier)
{
    static const char *const names[] = {"host", "ssd", "gpu"};

    return tier >= 0 && tier < 3 ? names[tier] : "unknown";
}
