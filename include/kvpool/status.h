/**
 * @file status.h
 * @brief The one status enum of kvpool, shared by every layer.
 *
 * Modelled on UCX's ucs_status_t: KVP_OK is zero, KVP_INPROGRESS is
 * positive, every error is negative.  Errors are grouped by how much failed:
 *  - request errors (-1 .. -39): this call failed, the connection is fine;
 *  - connection errors (-40 .. -79): the connection to the peer is unusable;
 *  - node errors (-80 ..): the peer itself is failing or going away.
 */
#ifndef KVPOOL_STATUS_H
#define KVPOOL_STATUS_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum kvp_status {
    KVP_OK                     = 0,
    KVP_INPROGRESS             = 1,

    /* request errors */
    KVP_ERR_INVALID_PARAM      = -1,  /**< bad argument (length, NULL, range) */
    KVP_ERR_NOT_FOUND          = -2,  /**< no such block */
    KVP_ERR_NO_SPACE           = -3,  /**< nothing evictable frees enough room */
    KVP_ERR_TOO_LARGE          = -4,  /**< larger than the arena or a limit */
    KVP_ERR_BUFFER_TOO_SMALL   = -5,  /**< caller buffer shorter than the block */
    KVP_ERR_UNSUPPORTED        = -6,  /**< operation not provided here */
    KVP_ERR_TIMED_OUT          = -7,  /**< the call's deadline passed */
    KVP_ERR_CHECKSUM           = -8,  /**< bytes do not match their checksum */
    KVP_ERR_NO_MEMORY          = -9,  /**< local allocation failed */
    KVP_ERR_IO                 = -10, /**< a system call failed */
    KVP_ERR_UNKNOWN_METHOD     = -11, /**< the peer has no such RPC method */
    KVP_ERR_CONFIG             = -12, /**< bad configuration value */

    /* connection errors */
    KVP_ERR_FIRST_CONNECTION   = -40,
    KVP_ERR_CONNECTION_REFUSED = -40, /**< could not connect */
    KVP_ERR_CONNECTION_LOST    = -41, /**< the peer closed or the socket failed */
    KVP_ERR_PROTOCOL           = -42, /**< malformed or oversized frame */
    KVP_ERR_VERSION            = -43, /**< protocol version mismatch */
    KVP_ERR_AUTH               = -44, /**< wrong token, or peer not allowed */

    /* node errors */
    KVP_ERR_FIRST_NODE         = -80,
    KVP_ERR_SHUTDOWN           = -80, /**< the node is shutting down */
    KVP_ERR_INTERNAL           = -81  /**< a bug or broken invariant */
} kvp_status_t;

/**
 * @brief A short English description of @p status.
 * @return a static string; never NULL (unknown values give "unknown status").
 */
#if defined(KVP_BUILDING_LIBRARY)
#define KVP_STATUS_EXPORT __attribute__((visibility("default")))
#else
#define KVP_STATUS_EXPORT
#endif

KVP_STATUS_EXPORT const char *kvp_status_string(kvp_status_t status);

/** @return non-zero if @p status means the connection must be dropped. */
#define KVP_STATUS_IS_CONNECTION_ERROR(_s) \
    ((_s) <= KVP_ERR_FIRST_CONNECTION && (_s) > KVP_ERR_FIRST_NODE)

#ifdef __cplusplus
}
#endif
#endif
