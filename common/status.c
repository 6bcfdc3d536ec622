#include <kvpool/status.h>

const char *kvp_status_string(kvp_status_t status)
{
    switch (status) {
    case KVP_OK:                     return "success";
    case KVP_INPROGRESS:             return "in progress";
    case KVP_ERR_INVALID_PARAM:      return "invalid parameter";
    case KVP_ERR_NOT_FOUND:          return "not found";
    case KVP_ERR_NO_SPACE:           return "no space left";
    case KVP_ERR_TOO_LARGE:          return "too large";
    case KVP_ERR_BUFFER_TOO_SMALL:   return "buffer too small";
    case KVP_ERR_UNSUPPORTED:        return "unsupported operation";
    case KVP_ERR_TIMED_OUT:          return "timed out";
    case KVP_ERR_CHECKSUM:           return "checksum mismatch";
    case KVP_ERR_NO_MEMORY:          return "out of memory";
    case KVP_ERR_IO:                 return "input/output error";
    case KVP_ERR_UNKNOWN_METHOD:     return "unknown method";
    case KVP_ERR_CONFIG:             return "bad configuration";
    case KVP_ERR_CONNECTION_REFUSED: return "connection refused";
    case KVP_ERR_CONNECTION_LOST:    return "connection lost";
    case KVP_ERR_PROTOCOL:           return "protocol error";
    case KVP_ERR_VERSION:            return "protocol version mismatch";
    case KVP_ERR_AUTH:               return "authentication failed";
    case KVP_ERR_SHUTDOWN:           return "node shutting down";
    case KVP_ERR_INTERNAL:           return "internal error";
    }
    return "unknown status";
}
