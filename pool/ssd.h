/**
 * @file ssd.h
 * @brief The SSD tier's store: blocks in log-structured segment files,
 * written and read with O_DIRECT through io_uring.
 *
 * A directory holds segment files "seg-NNNNNNNNNN.kvs" of a fixed size.
 * Records are appended to the newest (the head); each is one 4 KiB header
 * page followed by the block's bytes, padded to 4 KiB:
 *
 *   header: magic, format version, sequence number, namespace, key,
 *           parent key, size, XXH3-64 of the bytes, XXH3-64 of the header
 *
 * A record is live until kv_ssd_free(): then its header page is zeroed on
 * disk (batched with the next I/O, or at kv_ssd_flush()), so that it never
 * comes back after a restart.  A segment with no live record is deleted.
 * One segment slot stays spare.  When the store needs a new segment and
 * only the spare is left, one goes: the sealed segment with the fewest
 * live bytes is compacted when at most a quarter of it is live (its live
 * records are copied to the new head; the owner learns each new location
 * through the move callback), else the oldest segment is evicted whole
 * (the owners learn their records are gone).  A tier that only takes
 * demoted blocks and gives them back on reads evicts in the order it
 * wrote, so this is its LRU order, with no copying; what it costs is the
 * space of records freed (promoted) in segments not yet reclaimed.
 * kv_ssd_fits() keeps live bytes two segments below the capacity.
 *
 * Recovery (kv_ssd_recover()) reads every segment: a record whose header
 * or bytes do not match their checksums (a torn write) is dropped, and the
 * scan of a segment stops at the first page that is not a header.  The
 * store never appends to a recovered segment.
 *
 * Every read checks the header against the key, size and checksum the
 * caller expects, and the bytes against the checksum: a mismatch or an I/O
 * error is reported per block (KVP_ERR_CHECKSUM, KVP_ERR_IO), never data.
 *
 * Threading: none.  The store belongs to one thread (the node's loop);
 * every call returns when its I/O is complete, except kv_ssd_write_start(),
 * which leaves one batch of writes in flight (any other call that does
 * I/O completes it first).
 */
#ifndef KV_POOL_SSD_H
#define KV_POOL_SSD_H

#include <kvpool/kvpool.h>

#include <stddef.h>
#include <stdint.h>

/** Alignment and granularity of the store's I/O, in bytes. */
#define KV_SSD_PAGE ((uint64_t)4096)
/** Bounds of a segment's size, and of the number of segments. */
#define KV_SSD_SEGMENT_MIN ((uint64_t)1 << 20)
#define KV_SSD_SEGMENT_MAX ((uint64_t)1 << 30)
#define KV_SSD_SEGMENTS_MIN 4
#define KV_SSD_SEGMENTS_MAX 65536
/** Most I/Os in flight. */
#define KV_SSD_QUEUE_MAX 256

typedef struct kv_ssd kv_ssd_t;

/** A record's place: segment slot << 32 | record number. */
typedef uint64_t kv_ssd_loc_t;

/** No place: a record compaction could not move (it is gone). */
#define KV_SSD_LOC_NONE UINT64_MAX

typedef struct kv_ssd_config {
    const char *dir;          /**< created if missing; one node at a time */
    uint64_t    capacity;     /**< bytes of segment files at most */
    uint64_t    segment_size; /**< 0: capacity / 64, within 1 MiB..256 MiB */
    unsigned    queue_depth;  /**< I/Os in flight, 1..KV_SSD_QUEUE_MAX; 0: 16 */
    int         sync;         /**< fdatasync written segments after each batch */
} kv_ssd_config_t;

/** What a record says of its block. */
typedef struct kv_ssd_meta {
    const char *ns;     /**< ns_len bytes, not NUL-terminated */
    size_t      ns_len; /**< 1..KVP_NAMESPACE_MAX */
    kvp_key_t   key;
    kvp_key_t   parent;
    int         has_parent;
    uint64_t    size;     /**< 1..segment size - 4 KiB */
    uint64_t    checksum; /**< XXH3-64 of the bytes (kv_checksum()) */
    uint64_t    seq;      /**< set by the store: higher is newer */
} kv_ssd_meta_t;

/** One block of a kv_ssd_write() or kv_ssd_read() batch. */
typedef struct kv_ssd_io {
    kv_ssd_meta_t meta;  /**< write: what to store; read: what to expect */
    void         *data;  /**< 4 KiB aligned, room for size rounded up to 4 KiB */
    void         *owner; /**< write: handed back by the move callback */
    kv_ssd_loc_t  loc;   /**< write: set on success; read: the record */
    kvp_status_t  status;
} kv_ssd_io_t;

/** Told that compaction moved @p owner's record to @p loc, or that the
 *  record is gone (KV_SSD_LOC_NONE: its segment was evicted, or the copy
 *  failed, logged). */
typedef void (*kv_ssd_move_fn)(void *arg, void *owner, kv_ssd_loc_t loc);

/** Told of each good record kv_ssd_recover() finds: return its owner, or
 *  NULL to drop the record. */
typedef void *(*kv_ssd_recover_fn)(void *arg, const kv_ssd_meta_t *meta,
                                   kv_ssd_loc_t loc);

/**
 * @brief Open the store in config->dir (created with mode 0700 if
 * missing), locked against a second process.  Existing segments are kept
 * for kv_ssd_recover(); when there are more than the capacity allows, the
 * oldest are deleted.
 * @return KVP_OK; KVP_ERR_CONFIG (bad sizes: a capacity below 4 segments,
 *         a segment size not a multiple of 4 KiB or out of bounds; the
 *         directory in use by another process; O_DIRECT not supported
 *         there), KVP_ERR_IO (logged).
 */
kvp_status_t kv_ssd_open(const kv_ssd_config_t *config, kv_ssd_move_fn move,
                         void *move_arg, kv_ssd_t **ssd_p);

/** @brief Flush pending frees, close the files (they stay).  NULL is fine. */
void kv_ssd_close(kv_ssd_t *ssd);

/**
 * @brief Read every segment left by an earlier run and report each good
 * record to @p fn; records @p fn drops, torn records and segments left
 * with no live record are freed.  Call once, before any write.
 * @return how many records were kept.
 */
uint64_t kv_ssd_recover(kv_ssd_t *ssd, kv_ssd_recover_fn fn, void *arg);

/** @return the bytes a record of a @p size byte block takes on disk. */
uint64_t kv_ssd_record_bytes(uint64_t size);

/**
 * @return non-zero if records of @p bytes more (kv_ssd_record_bytes())
 *         can be written without freeing any: live bytes stay at least
 *         two segments below the capacity.
 */
int kv_ssd_fits(const kv_ssd_t *ssd, uint64_t bytes);

/**
 * @brief Append @p n records (several in flight).  Each io's status is
 * KVP_OK (and its loc set), KVP_ERR_TOO_LARGE (does not fit a segment),
 * KVP_ERR_NO_SPACE (kv_ssd_fits() was not checked) or KVP_ERR_IO.  May
 * compact first, calling the move callback.
 */
void kv_ssd_write(kv_ssd_t *ssd, kv_ssd_io_t *ios, size_t n);

/**
 * @brief kv_ssd_write() that returns once the writes are submitted: the
 * caller goes on while they run, and learns the ios' statuses (and locs)
 * from kv_ssd_write_wait() or kv_ssd_write_poll().  @p ios and their data
 * must stay as they are until then.  One batch at a time: a batch left in
 * flight completes first, as it does before any other call of the store
 * that does I/O (the ios are then settled, but the caller still waits).
 * The records are durable (fdatasync, with sync) when the batch completes.
 */
void kv_ssd_write_start(kv_ssd_t *ssd, kv_ssd_io_t *ios, size_t n);

/** @brief Complete the batch of kv_ssd_write_start(), if any: its ios settled. */
void kv_ssd_write_wait(kv_ssd_t *ssd);

/**
 * @brief An eventfd that becomes readable when I/O of the store completes:
 * a caller's event loop watches it and calls kv_ssd_write_poll(), which
 * clears it.  Owned by the store.
 */
int kv_ssd_event_fd(const kv_ssd_t *ssd);

/**
 * @brief Submit more of the batch of kv_ssd_write_start() (its queue depth
 * allows) and reap what completed, without blocking.
 * @return non-zero once the batch is complete (as after kv_ssd_write_wait()),
 *         or if there is none; 0 while it is in flight.
 */
int kv_ssd_write_poll(kv_ssd_t *ssd);

/**
 * @brief Read @p n live records into their ios' data (several in flight).
 * Each io's status is KVP_OK, KVP_ERR_CHECKSUM (header or bytes not as
 * expected: logged) or KVP_ERR_IO (logged).
 */
void kv_ssd_read(kv_ssd_t *ssd, kv_ssd_io_t *ios, size_t n);

/**
 * @brief Free a live record: its header is zeroed at the next I/O batch or
 * kv_ssd_flush() (at once if @p now), its segment deleted if it was the
 * last live one there.
 */
void kv_ssd_free(kv_ssd_t *ssd, kv_ssd_loc_t loc, int now);

/** @brief Write pending frees (from the node's tick). */
void kv_ssd_flush(kv_ssd_t *ssd);

/** Counters of kv_ssd_stats(). */
typedef struct kv_ssd_stats {
    uint64_t capacity_bytes; /**< the configured capacity */
    uint64_t live_bytes;     /**< on disk, of live records */
    uint64_t file_bytes;     /**< on disk, of segment files */
    uint64_t segments;
    uint64_t segment_size;
    uint64_t bytes_written; /**< since open, compaction included */
    uint64_t bytes_read;
    uint64_t compactions;       /**< segments compacted */
    uint64_t segment_evictions; /**< segments evicted whole (too live to compact) */
    uint64_t io_errors;         /**< failed reads and writes */
    uint64_t corrupt;           /**< records that failed a check */
} kv_ssd_stats_t;

/** @brief Fill @p stats_p. */
void kv_ssd_stats(const kv_ssd_t *ssd, kv_ssd_stats_t *stats_p);

#endif
