/*
 * ssd.c - the SSD tier's store (see ssd.h for the format and the rules).
 *
 * Segments live in a fixed table of max_segments slots; a record's
 * location is (slot, record number), and each segment keeps an array of
 * its records (first page, pages, owner: NULL once freed).  All I/O goes
 * through one io_uring ring, up to queue_depth operations in flight; the
 * calls wait for their I/O (the node's loop is the only user), except the
 * batch kv_ssd_write_start() leaves in flight, whose completions the
 * ring's eventfd announces.
 */
#include "ssd.h"

#include <kv/alloc.h>
#include <kv/hash.h>
#include <kv/log.h>
#include <kv/util.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <sys/eventfd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAGIC_LIVE 0x31304453535056aBull /* a record */
#define MAGIC_DEAD 0x44454144535056aBull /* a freed record: only its length counts */
#define FORMAT 1u
#define SEG_NAME_FMT "seg-%010u.kvs"
/* The user data of a segment's close through the ring (seg_delete()). */
#define CLOSE_TAG UINT64_MAX

/* The header page of a record; the rest of the page is zero. */
typedef struct rec_header {
    uint64_t magic;
    uint32_t version;
    uint32_t pages; /* of the whole record, header included */
    uint64_t seq;
    uint64_t size;
    uint64_t checksum; /* of the bytes */
    uint8_t  key[KVP_KEY_LEN];
    uint8_t  parent[KVP_KEY_LEN];
    uint32_t has_parent;
    uint32_t ns_len;
    uint8_t  ns[KVP_NAMESPACE_MAX];
    uint64_t header_checksum; /* of everything above */
} rec_header_t;

_Static_assert(sizeof(rec_header_t) <= KV_SSD_PAGE, "a header fits its page");

typedef struct record {
    uint32_t page;
    uint32_t pages;
    void    *owner; /* NULL: freed */
} record_t;

typedef struct segment {
    int       fd; /* -1: the slot is free */
    uint32_t  file_no;
    uint32_t  write_page;
    uint32_t  n_records, cap_records, live_records;
    uint64_t  live_bytes;
    record_t *records;
    int       dirty; /* written since the last fdatasync */
} segment_t;

typedef struct kill {
    uint32_t seg, file_no, page, pages;
} kill_t;

/* One read or write of a batch. */
typedef struct op {
    int          fd;
    uint64_t     offset;
    struct iovec iov[2];
    int          niov;
    int          write;
    int64_t      res;
} op_t;

/* A run of operations through the ring: ops[next..n) not yet submitted. */
typedef struct op_run {
    op_t    *ops;
    size_t   n, next, done;
    unsigned inflight;
} op_run_t;

struct kv_ssd {
    int             dir_fd;
    int             lock_fd;
    char            dir[256];
    uint64_t        capacity;
    uint64_t        segment_size;
    uint32_t        seg_pages;
    uint32_t        max_segments;
    uint32_t        count;
    segment_t      *segs;
    int64_t         head;     /* the segment appended to, or -1 */
    int64_t         scanning; /* the segment recovery reads, or -1 */
    uint32_t        next_file_no;
    uint64_t        next_seq;
    struct io_uring ring;
    unsigned        qd;
    int             event_fd; /* registered with the ring: completions */
    unsigned        closing; /* closes submitted, not yet completed */
    int             sync;
    kill_t         *kills;
    size_t          n_kills, cap_kills;
    uint8_t        *bounce; /* compaction and recovery */
    uint64_t        bounce_len;
    kv_ssd_move_fn  move;
    void           *move_arg;
    kv_ssd_stats_t  stats;
    /* the writes of kv_ssd_write_start(), while async.run.done < n */
    struct {
        op_run_t     run;
        kv_ssd_io_t *ios;
        size_t      *io_of;
        size_t       first; /* ops[first..run.n) are the batch's */
        uint8_t     *headers;
        int          active;
    } async;
};

static uint64_t pages_of(uint64_t bytes)
{
    return (bytes + KV_SSD_PAGE - 1) / KV_SSD_PAGE;
}

uint64_t kv_ssd_record_bytes(uint64_t size)
{
    return (1 + pages_of(size)) * KV_SSD_PAGE;
}

static void *page_alloc(uint64_t bytes)
{
    void *p = NULL;

    if (posix_memalign(&p, KV_SSD_PAGE, bytes) != 0) {
        return NULL;
    }
    return p;
}

static int bounce_reserve(kv_ssd_t *ssd, uint64_t bytes)
{
    if (ssd->bounce_len >= bytes) {
        return 1;
    }
    free(ssd->bounce);
    ssd->bounce     = page_alloc(bytes);
    ssd->bounce_len = ssd->bounce != NULL ? bytes : 0;
    return ssd->bounce != NULL;
}

static uint64_t header_sum(const rec_header_t *h)
{
    return kv_checksum(h, offsetof(rec_header_t, header_checksum));
}

static void header_fill(kv_ssd_t *ssd, void *page, const kv_ssd_meta_t *meta,
                        uint32_t pages)
{
    rec_header_t *h = page;

    memset(page, 0, KV_SSD_PAGE);
    h->magic    = MAGIC_LIVE;
    h->version  = FORMAT;
    h->pages    = pages;
    h->seq      = ssd->next_seq++;
    h->size     = meta->size;
    h->checksum = meta->checksum;
    memcpy(h->key, meta->key.bytes, KVP_KEY_LEN);
    memcpy(h->parent, meta->parent.bytes, KVP_KEY_LEN);
    h->has_parent = meta->has_parent != 0;
    h->ns_len     = (uint32_t)meta->ns_len;
    memcpy(h->ns, meta->ns, meta->ns_len);
    h->header_checksum = header_sum(h);
}

/* 1 if @p page holds a well-formed header of either kind (its pages set). */
static int header_valid(const rec_header_t *h, uint32_t seg_pages)
{
    if ((h->magic != MAGIC_LIVE && h->magic != MAGIC_DEAD) || h->version != FORMAT ||
        h->header_checksum != header_sum(h) || h->pages < 1 || h->pages > seg_pages) {
        return 0;
    }
    return h->magic == MAGIC_DEAD || (h->ns_len >= 1 && h->ns_len <= KVP_NAMESPACE_MAX &&
                                      h->size >= 1 && h->pages == 1 + pages_of(h->size));
}

/*
 * Submit what the queue depth allows of @p run, then reap what has
 * completed (waiting for one completion if @p wait).  Only one run uses
 * the ring at a time: a completion's user data is its op's index.
 */
static void run_step(kv_ssd_t *ssd, op_run_t *run, int wait)
{
    struct io_uring_cqe *cqe;
    unsigned             head, seen = 0, done = 0;
    int                  ret;

    while (run->inflight < ssd->qd && run->next < run->n) {
        struct io_uring_sqe *sqe = io_uring_get_sqe(&ssd->ring);
        op_t                *op  = &run->ops[run->next];
        if (sqe == NULL) {
            break;
        }
        if (op->write) {
            io_uring_prep_writev(sqe, op->fd, op->iov, (unsigned)op->niov, op->offset);
        } else {
            io_uring_prep_readv(sqe, op->fd, op->iov, (unsigned)op->niov, op->offset);
        }
        io_uring_sqe_set_data64(sqe, run->next);
        run->next++;
        run->inflight++;
    }
    ret = wait ? io_uring_submit_and_wait(&ssd->ring, 1) : io_uring_submit(&ssd->ring);
    if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY) {
        kv_log_error("ssd: io_uring_submit: %s", strerror(-ret));
    }
    io_uring_for_each_cqe(&ssd->ring, head, cqe)
    {
        uint64_t data = io_uring_cqe_get_data64(cqe);

        seen++;
        if (data == CLOSE_TAG) {
            ssd->closing--;
            if (cqe->res < 0) {
                kv_log_warn("ssd: close of a deleted segment: %s", strerror(-cqe->res));
            }
            continue;
        }
        run->ops[data].res = cqe->res;
        done++;
    }
    io_uring_cq_advance(&ssd->ring, seen);
    run->inflight -= done;
    run->done += done;
}

static void async_complete(kv_ssd_t *ssd);

/* Run @p n operations, up to qd in flight; each op's res is set.  The
 * writes kv_ssd_write_start() left in flight complete first. */
static void run_ops(kv_ssd_t *ssd, op_t *ops, size_t n)
{
    op_run_t run = {.ops = ops, .n = n};

    async_complete(ssd);
    while (run.done < n) {
        run_step(ssd, &run, 1);
    }
}

static uint64_t op_len(const op_t *op)
{
    uint64_t len = 0;

    for (int i = 0; i < op->niov; i++) {
        len += op->iov[i].iov_len;
    }
    return len;
}

/* Synchronous single I/O through the ring.  @return 1 if it was whole. */
static int io_one(kv_ssd_t *ssd, int write, int fd, uint64_t offset, void *buf,
                  uint64_t len)
{
    op_t op = {.fd = fd, .offset = offset, .niov = 1, .write = write};

    op.iov[0].iov_base = buf;
    op.iov[0].iov_len  = len;
    run_ops(ssd, &op, 1);
    if (op.res != (int64_t)len) {
        ssd->stats.io_errors++;
        kv_log_error("ssd: %s of %llu bytes at %llu: %s", write ? "write" : "read",
                     (unsigned long long)len, (unsigned long long)offset,
                     op.res < 0 ? strerror((int)-op.res) : "short");
        return 0;
    }
    if (write) {
        ssd->stats.bytes_written += len;
    } else {
        ssd->stats.bytes_read += len;
    }
    return 1;
}

static segment_t *seg_of(const kv_ssd_t *ssd, kv_ssd_loc_t loc, record_t **rec_p)
{
    uint64_t   idx = loc >> 32, rec = loc & UINT32_MAX;
    segment_t *seg;

    if (idx >= ssd->max_segments) {
        return NULL;
    }
    seg = &ssd->segs[idx];
    if (seg->fd < 0 || rec >= seg->n_records || seg->records[rec].owner == NULL) {
        return NULL;
    }
    *rec_p = &seg->records[rec];
    return seg;
}

static void seg_name(char *buf, size_t len, uint32_t file_no)
{
    snprintf(buf, len, SEG_NAME_FMT, file_no);
}

/*
 * Close a deleted segment's file.  That last close frees the file's
 * blocks, which takes tens of milliseconds where the filesystem discards
 * them at once (ext4 -o discard: 21 ms for 128 MiB): a close through the
 * ring, forced to the kernel's worker threads, keeps that off the caller,
 * which is the node's loop serving a get or a put.
 */
static void seg_close(kv_ssd_t *ssd, int fd)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&ssd->ring);
    int                  ret;

    if (sqe == NULL) {
        close(fd);
        return;
    }
    io_uring_prep_close(sqe, fd);
    io_uring_sqe_set_flags(sqe, IOSQE_ASYNC);
    io_uring_sqe_set_data64(sqe, CLOSE_TAG);
    ssd->closing++;
    ret = io_uring_submit(&ssd->ring); /* else the next submit takes it */
    if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY) {
        kv_log_error("ssd: io_uring_submit: %s", strerror(-ret));
    }
}

static void seg_delete(kv_ssd_t *ssd, uint32_t idx)
{
    segment_t *seg = &ssd->segs[idx];
    char       name[32];

    seg_name(name, sizeof(name), seg->file_no);
    if (unlinkat(ssd->dir_fd, name, 0) != 0) {
        kv_log_warn("ssd: delete %s/%s: %s", ssd->dir, name, strerror(errno));
    }
    seg_close(ssd, seg->fd);
    ssd->stats.file_bytes -= (uint64_t)seg->write_page * KV_SSD_PAGE;
    kv_free(seg->records);
    memset(seg, 0, sizeof(*seg));
    seg->fd = -1;
    ssd->count--;
    if (ssd->head == (int64_t)idx) {
        ssd->head = -1;
    }
}

static int64_t seg_slot_free(const kv_ssd_t *ssd)
{
    for (uint32_t i = 0; i < ssd->max_segments; i++) {
        if (ssd->segs[i].fd < 0) {
            return i;
        }
    }
    return -1;
}

static int64_t seg_open(kv_ssd_t *ssd, uint32_t file_no, int create)
{
    int64_t idx = seg_slot_free(ssd);
    char    name[32];
    int     fd;

    if (idx < 0) {
        return -1;
    }
    seg_name(name, sizeof(name), file_no);
    fd = openat(ssd->dir_fd, name,
                O_RDWR | O_DIRECT | O_CLOEXEC | (create ? O_CREAT | O_EXCL : 0), 0600);
    if (fd < 0) {
        kv_log_error("ssd: open %s/%s: %s", ssd->dir, name, strerror(errno));
        return -1;
    }
    /* a new segment gets its whole size now: appends then stay inside the
     * file, which the kernel serves without taking the inode's write lock */
    if (create && fallocate(fd, 0, 0, (off_t)ssd->segment_size) != 0) {
        kv_log_error("ssd: fallocate %s/%s: %s", ssd->dir, name, strerror(errno));
        close(fd);
        unlinkat(ssd->dir_fd, name, 0);
        return -1;
    }
    ssd->segs[idx].fd      = fd;
    ssd->segs[idx].file_no = file_no;
    ssd->count++;
    return idx;
}

static kv_ssd_loc_t record_add(kv_ssd_t *ssd, uint32_t idx, uint32_t page, uint32_t pages,
                               void *owner)
{
    segment_t *seg = &ssd->segs[idx];

    if (seg->n_records == seg->cap_records) {
        seg->cap_records = seg->cap_records ? 2 * seg->cap_records : 16;
        seg->records =
            kv_realloc(seg->records, seg->cap_records * sizeof(record_t), "ssd records");
    }
    seg->records[seg->n_records] = (record_t){page, pages, owner};
    if (owner != NULL) {
        seg->live_records++;
        seg->live_bytes += (uint64_t)pages * KV_SSD_PAGE;
        ssd->stats.live_bytes += (uint64_t)pages * KV_SSD_PAGE;
    }
    return ((uint64_t)idx << 32) | seg->n_records++;
}

/* Forget a record; delete its segment when nothing there is live.
 * @return 1 if the segment is still there (a kill is due). */
static int record_drop(kv_ssd_t *ssd, uint32_t idx, record_t *rec)
{
    segment_t *seg = &ssd->segs[idx];

    rec->owner = NULL;
    seg->live_records--;
    seg->live_bytes -= (uint64_t)rec->pages * KV_SSD_PAGE;
    ssd->stats.live_bytes -= (uint64_t)rec->pages * KV_SSD_PAGE;
    if (seg->live_records == 0 && (int64_t)idx != ssd->head &&
        (int64_t)idx != ssd->scanning) {
        seg_delete(ssd, idx);
        return 0;
    }
    return 1;
}

/* The sealed segment written first (@p oldest), or with the fewest live
 * bytes; -1 if there is none. */
static int64_t sealed_segment(const kv_ssd_t *ssd, int oldest)
{
    int64_t victim = -1;

    for (uint32_t i = 0; i < ssd->max_segments; i++) {
        const segment_t *seg = &ssd->segs[i];
        if (seg->fd < 0 || (int64_t)i == ssd->head) {
            continue;
        }
        if (victim < 0 || (oldest ? seg->file_no < ssd->segs[victim].file_no
                                  : seg->live_bytes < ssd->segs[victim].live_bytes)) {
            victim = i;
        }
    }
    return victim;
}

/*
 * Empty segment @p victim and delete it: with @p copy, its live records
 * are copied to the head (which must have room: a fresh one); else, or
 * when a copy fails, they are dropped.  Owners learn either way.
 */
static void segment_reclaim(kv_ssd_t *ssd, uint32_t victim, int copy)
{
    segment_t *seg  = &ssd->segs[victim];
    segment_t *head = copy ? &ssd->segs[ssd->head] : NULL;

    for (uint32_t r = 0; r < seg->n_records && seg->live_records > 0; r++) {
        record_t    *rec   = &seg->records[r];
        uint64_t     bytes = (uint64_t)rec->pages * KV_SSD_PAGE;
        void        *owner = rec->owner;
        kv_ssd_loc_t loc   = KV_SSD_LOC_NONE;

        if (owner == NULL) {
            continue;
        }
        if (copy && head->write_page + rec->pages <= ssd->seg_pages &&
            bounce_reserve(ssd, bytes) &&
            io_one(ssd, 0, seg->fd, (uint64_t)rec->page * KV_SSD_PAGE, ssd->bounce,
                   bytes) &&
            io_one(ssd, 1, head->fd, (uint64_t)head->write_page * KV_SSD_PAGE,
                   ssd->bounce, bytes)) {
            loc =
                record_add(ssd, (uint32_t)ssd->head, head->write_page, rec->pages, owner);
            head->write_page += rec->pages;
            head->dirty = 1;
            ssd->stats.file_bytes += bytes;
        }
        rec->owner = NULL;
        seg->live_records--;
        seg->live_bytes -= bytes;
        ssd->stats.live_bytes -= bytes;
        ssd->move(ssd->move_arg, owner, loc);
    }
    if (copy) {
        ssd->stats.compactions++;
    } else {
        ssd->stats.segment_evictions++;
    }
    seg_delete(ssd, victim);
}

static int64_t head_open(kv_ssd_t *ssd)
{
    int64_t idx = seg_open(ssd, ssd->next_file_no, 1);

    if (idx >= 0) {
        ssd->next_file_no++;
        ssd->head = idx;
    }
    return idx;
}

/*
 * Make the head able to take @p pages more.  One segment slot stays
 * spare, for compaction.  When only that one is left, a segment goes: the
 * sealed one with the fewest live bytes, compacted into the new head, when
 * at most a quarter of it is live; else the oldest, evicted whole (its
 * records were demoted before any other's, so this is the SSD tier's LRU
 * order, without copying).
 */
static int head_room(kv_ssd_t *ssd, uint32_t pages)
{
    int64_t victim;

    if (ssd->head >= 0 && ssd->segs[ssd->head].write_page + pages <= ssd->seg_pages) {
        return 1;
    }
    if (ssd->head >= 0) {
        int64_t old = ssd->head;
        ssd->head   = -1;
        if (ssd->segs[old].live_records == 0) {
            seg_delete(ssd, (uint32_t)old);
        }
    }
    victim = ssd->count + 1 >= ssd->max_segments ? sealed_segment(ssd, 0) : -1;
    if (victim >= 0 && ssd->segs[victim].live_bytes <= ssd->segment_size / 4) {
        if (head_open(ssd) < 0) {
            return 0;
        }
        segment_reclaim(ssd, (uint32_t)victim, 1);
        if (ssd->sync) {
            fdatasync(ssd->segs[ssd->head].fd);
        }
        return ssd->segs[ssd->head].write_page + pages <= ssd->seg_pages ||
               head_room(ssd, pages);
    }
    if (victim >= 0) {
        segment_reclaim(ssd, (uint32_t)sealed_segment(ssd, 1), 0);
    }
    return ssd->count < ssd->max_segments && head_open(ssd) >= 0;
}

int kv_ssd_fits(const kv_ssd_t *ssd, uint64_t bytes)
{
    uint64_t limit = (uint64_t)(ssd->max_segments - 2) * ssd->segment_size;

    return ssd->stats.live_bytes + bytes <= limit;
}

/* Queue a dead header over a freed record. */
static void kill_push(kv_ssd_t *ssd, uint32_t idx, const record_t *rec)
{
    if (ssd->n_kills == ssd->cap_kills) {
        ssd->cap_kills = ssd->cap_kills ? 2 * ssd->cap_kills : 64;
        ssd->kills = kv_realloc(ssd->kills, ssd->cap_kills * sizeof(kill_t), "ssd kills");
    }
    ssd->kills[ssd->n_kills++] =
        (kill_t){idx, ssd->segs[idx].file_no, rec->page, rec->pages};
}

void kv_ssd_flush(kv_ssd_t *ssd)
{
    uint8_t *pages;
    op_t    *ops;
    size_t   n = 0;

    if (ssd == NULL || ssd->n_kills == 0) {
        return;
    }
    pages = page_alloc(ssd->n_kills * KV_SSD_PAGE);
    ops   = kv_calloc(ssd->n_kills, sizeof(*ops), "ssd kill ops");
    if (pages == NULL) {
        kv_free(ops);
        return; /* try again at the next flush */
    }
    for (size_t i = 0; i < ssd->n_kills; i++) {
        const kill_t *k   = &ssd->kills[i];
        segment_t    *seg = &ssd->segs[k->seg];
        rec_header_t *h   = (rec_header_t *)(pages + n * KV_SSD_PAGE);

        if (seg->fd < 0 || seg->file_no != k->file_no) {
            continue; /* the segment is gone, and the record with it */
        }
        memset(h, 0, KV_SSD_PAGE);
        h->magic           = MAGIC_DEAD;
        h->version         = FORMAT;
        h->pages           = k->pages;
        h->header_checksum = header_sum(h);
        ops[n]             = (op_t){.fd     = seg->fd,
                                    .offset = (uint64_t)k->page * KV_SSD_PAGE,
                                    .niov   = 1,
                                    .write  = 1};
        ops[n].iov[0]      = (struct iovec){h, KV_SSD_PAGE};
        seg->dirty         = 1;
        n++;
    }
    run_ops(ssd, ops, n);
    for (size_t i = 0; i < n; i++) {
        if (ops[i].res != (int64_t)KV_SSD_PAGE) {
            ssd->stats.io_errors++;
            kv_log_warn(
                "ssd: marking a freed record failed: it may come back at restart");
        }
    }
    ssd->n_kills = 0;
    free(pages);
    kv_free(ops);
}

void kv_ssd_free(kv_ssd_t *ssd, kv_ssd_loc_t loc, int now)
{
    record_t  *rec;
    segment_t *seg = seg_of(ssd, loc, &rec);
    uint32_t   idx = (uint32_t)(loc >> 32);

    if (seg == NULL) {
        kv_log_error("ssd: free of a record that is not live (%llx)",
                     (unsigned long long)loc);
        return;
    }
    if (record_drop(ssd, idx, rec)) {
        kill_push(ssd, idx, rec);
    }
    if (now) {
        kv_ssd_flush(ssd);
    }
}

static void sync_dirty(kv_ssd_t *ssd)
{
    for (uint32_t i = 0; i < ssd->max_segments; i++) {
        segment_t *seg = &ssd->segs[i];
        if (seg->fd >= 0 && seg->dirty) {
            if (ssd->sync && fdatasync(seg->fd) != 0) {
                kv_log_warn("ssd: fdatasync: %s", strerror(errno));
            }
            seg->dirty = 0;
        }
    }
}

/* Settle the ios of the completed writes ops[first..n). */
static void write_done(kv_ssd_t *ssd, kv_ssd_io_t *ios, const op_t *ops,
                       const size_t *io_of, size_t first, size_t n)
{
    for (size_t j = first; j < n; j++) {
        kv_ssd_io_t *io = &ios[io_of[j]];

        if (ops[j].res == (int64_t)op_len(&ops[j])) {
            ssd->stats.bytes_written += op_len(&ops[j]);
            ssd->segs[io->loc >> 32].dirty = 1;
            io->status                     = KVP_OK;
            continue;
        }
        ssd->stats.io_errors++;
        kv_log_error("ssd: write of %llu bytes: %s", (unsigned long long)op_len(&ops[j]),
                     ops[j].res < 0 ? strerror((int)-ops[j].res) : "short");
        kv_ssd_free(ssd, io->loc, 0);
        io->status = KVP_ERR_IO;
        io->loc    = KV_SSD_LOC_NONE;
    }
}

/* Run the prepared writes ops[first..n) and settle their ios. */
static void write_settle(kv_ssd_t *ssd, kv_ssd_io_t *ios, op_t *ops, size_t *io_of,
                         size_t first, size_t n)
{
    run_ops(ssd, ops + first, n - first);
    write_done(ssd, ios, ops, io_of, first, n);
}

/* Wait for the writes kv_ssd_write_start() left in flight, settle their
 * ios and sync; nothing if there are none. */
static void async_complete(kv_ssd_t *ssd)
{
    op_run_t *run = &ssd->async.run;

    if (!ssd->async.active) {
        return;
    }
    ssd->async.active = 0;
    while (run->done < run->n) {
        run_step(ssd, run, 1);
    }
    write_done(ssd, ssd->async.ios, run->ops, ssd->async.io_of, ssd->async.first,
               run->n);
    sync_dirty(ssd);
    free(ssd->async.headers);
    kv_free(run->ops);
    kv_free(ssd->async.io_of);
    memset(&ssd->async, 0, sizeof(ssd->async));
}

void kv_ssd_write(kv_ssd_t *ssd, kv_ssd_io_t *ios, size_t n)
{
    kv_ssd_write_start(ssd, ios, n);
    kv_ssd_write_wait(ssd);
}

void kv_ssd_write_wait(kv_ssd_t *ssd)
{
    async_complete(ssd);
}

int kv_ssd_event_fd(const kv_ssd_t *ssd)
{
    return ssd->event_fd;
}

int kv_ssd_write_poll(kv_ssd_t *ssd)
{
    uint64_t count;

    /* the count only wakes the caller's loop: what completed is in the ring */
    if (read(ssd->event_fd, &count, sizeof(count)) < 0 && errno != EAGAIN) {
        kv_log_warn("ssd: read of the ring's eventfd: %s", strerror(errno));
    }
    if (!ssd->async.active) {
        return 1;
    }
    run_step(ssd, &ssd->async.run, 0);
    if (ssd->async.run.done < ssd->async.run.n) {
        return 0;
    }
    async_complete(ssd);
    return 1;
}

/*
 * The records are placed and their writes prepared in order; when the
 * head segment changes, what is prepared goes to disk first (a new head
 * may compact).  The writes after the last change are left in flight.
 */
void kv_ssd_write_start(kv_ssd_t *ssd, kv_ssd_io_t *ios, size_t n)
{
    uint8_t *headers;
    op_t    *ops;
    size_t  *io_of;
    size_t   n_ops = 0, first = 0;

    async_complete(ssd);
    kv_ssd_flush(ssd);
    headers = page_alloc(KV_MAX(n, 1) * KV_SSD_PAGE);
    ops     = kv_calloc(n + 1, sizeof(*ops), "ssd ops");
    io_of   = kv_calloc(n + 1, sizeof(*io_of), "ssd op ios");
    for (size_t i = 0; i < n; i++) {
        kv_ssd_io_t *io    = &ios[i];
        uint64_t     pages = 1 + pages_of(io->meta.size);
        segment_t   *head;
        op_t        *op;

        io->loc = KV_SSD_LOC_NONE;
        if (headers == NULL) {
            io->status = KVP_ERR_NO_MEMORY;
            continue;
        }
        if (io->meta.size == 0 || io->meta.ns_len == 0 ||
            io->meta.ns_len > KVP_NAMESPACE_MAX || io->owner == NULL) {
            io->status = KVP_ERR_INVALID_PARAM;
            continue;
        }
        if (pages > ssd->seg_pages) {
            io->status = KVP_ERR_TOO_LARGE;
            continue;
        }
        if (!kv_ssd_fits(ssd, pages * KV_SSD_PAGE)) {
            io->status = KVP_ERR_NO_SPACE;
            continue;
        }
        if (ssd->head < 0 || ssd->segs[ssd->head].write_page + pages > ssd->seg_pages) {
            /* a new head may compact: what is queued goes to disk first */
            write_settle(ssd, ios, ops, io_of, first, n_ops);
            first = n_ops;
            if (!head_room(ssd, (uint32_t)pages)) {
                io->status = KVP_ERR_NO_SPACE;
                continue;
            }
        }
        head    = &ssd->segs[ssd->head];
        io->loc = record_add(ssd, (uint32_t)ssd->head, head->write_page, (uint32_t)pages,
                             io->owner);
        op      = &ops[n_ops];
        *op     = (op_t){.fd     = head->fd,
                         .offset = (uint64_t)head->write_page * KV_SSD_PAGE,
                         .niov   = 2,
                         .write  = 1};
        header_fill(ssd, headers + i * KV_SSD_PAGE, &io->meta, (uint32_t)pages);
        op->iov[0] = (struct iovec){headers + i * KV_SSD_PAGE, KV_SSD_PAGE};
        op->iov[1] = (struct iovec){io->data, (pages - 1) * KV_SSD_PAGE};
        head->write_page += (uint32_t)pages;
        ssd->stats.file_bytes += pages * KV_SSD_PAGE;
        io_of[n_ops++] = i;
    }
    ssd->async.run     = (op_run_t){.ops = ops, .n = n_ops, .next = first, .done = first};
    ssd->async.first   = first;
    ssd->async.ios     = ios;
    ssd->async.io_of   = io_of;
    ssd->async.headers = headers;
    ssd->async.active  = 1;
    run_step(ssd, &ssd->async.run, 0);
}

static int header_matches(const rec_header_t *h, const kv_ssd_meta_t *meta)
{
    return h->magic == MAGIC_LIVE && h->size == meta->size &&
           h->checksum == meta->checksum &&
           memcmp(h->key, meta->key.bytes, KVP_KEY_LEN) == 0;
}

void kv_ssd_read(kv_ssd_t *ssd, kv_ssd_io_t *ios, size_t n)
{
    uint8_t *headers = page_alloc(KV_MAX(n, 1) * KV_SSD_PAGE);
    op_t    *ops     = kv_calloc(n + 1, sizeof(*ops), "ssd ops");
    size_t  *io_of   = kv_calloc(n + 1, sizeof(*io_of), "ssd op ios");
    size_t   n_ops   = 0;

    for (size_t i = 0; i < n; i++) {
        kv_ssd_io_t *io = &ios[i];
        record_t    *rec;
        segment_t   *seg = seg_of(ssd, io->loc, &rec);

        if (headers == NULL) {
            io->status = KVP_ERR_NO_MEMORY;
            continue;
        }
        if (seg == NULL || rec->pages != 1 + pages_of(io->meta.size)) {
            io->status = KVP_ERR_INVALID_PARAM;
            continue;
        }
        ops[n_ops] =
            (op_t){.fd = seg->fd, .offset = (uint64_t)rec->page * KV_SSD_PAGE, .niov = 2};
        ops[n_ops].iov[0] = (struct iovec){headers + i * KV_SSD_PAGE, KV_SSD_PAGE};
        ops[n_ops].iov[1] = (struct iovec){io->data, (rec->pages - 1) * KV_SSD_PAGE};
        io_of[n_ops++]    = i;
    }
    run_ops(ssd, ops, n_ops);
    for (size_t j = 0; j < n_ops; j++) {
        kv_ssd_io_t        *io = &ios[io_of[j]];
        const rec_header_t *h  = (const rec_header_t *)(headers + io_of[j] * KV_SSD_PAGE);

        if (ops[j].res != (int64_t)op_len(&ops[j])) {
            ssd->stats.io_errors++;
            kv_log_error("ssd: read of %llu bytes: %s",
                         (unsigned long long)op_len(&ops[j]),
                         ops[j].res < 0 ? strerror((int)-ops[j].res) : "short");
            io->status = KVP_ERR_IO;
            continue;
        }
        ssd->stats.bytes_read += op_len(&ops[j]);
        if (!header_valid(h, ssd->seg_pages) || !header_matches(h, &io->meta) ||
            kv_checksum(io->data, io->meta.size) != io->meta.checksum) {
            ssd->stats.corrupt++;
            kv_log_error("ssd: record at %llx does not match its checksum: a miss",
                         (unsigned long long)io->loc);
            io->status = KVP_ERR_CHECKSUM;
            continue;
        }
        io->status = KVP_OK;
    }
    free(headers);
    kv_free(ops);
    kv_free(io_of);
}

/* Read the records of one segment, reporting the good ones. */
static uint64_t recover_segment(kv_ssd_t *ssd, uint32_t idx, kv_ssd_recover_fn fn,
                                void *arg)
{
    segment_t  *seg = &ssd->segs[idx];
    struct stat st;
    uint64_t    file_pages, kept = 0;
    uint32_t    page = 0;

    if (fstat(seg->fd, &st) != 0) {
        return 0;
    }
    file_pages = KV_MIN((uint64_t)st.st_size / KV_SSD_PAGE, ssd->seg_pages);
    while (page < file_pages) {
        rec_header_t  h;
        kv_ssd_meta_t meta;
        kv_ssd_loc_t  loc;
        void         *owner;

        if (!io_one(ssd, 0, seg->fd, (uint64_t)page * KV_SSD_PAGE, ssd->bounce,
                    KV_SSD_PAGE)) {
            break;
        }
        memcpy(&h, ssd->bounce, sizeof(h));
        if (!header_valid(&h, ssd->seg_pages) || page + h.pages > file_pages) {
            if (h.magic != 0) {
                ssd->stats.corrupt++;
                kv_log_warn("ssd: %s/" SEG_NAME_FMT
                            " page %u: a torn record; the rest of "
                            "the segment is dropped",
                            ssd->dir, seg->file_no, page);
            }
            break;
        }
        if (h.magic == MAGIC_DEAD) {
            page += h.pages;
            continue;
        }
        ssd->next_seq = KV_MAX(ssd->next_seq, h.seq + 1);
        if (!io_one(ssd, 0, seg->fd, (uint64_t)(page + 1) * KV_SSD_PAGE, ssd->bounce,
                    (uint64_t)(h.pages - 1) * KV_SSD_PAGE) ||
            kv_checksum(ssd->bounce, h.size) != h.checksum) {
            ssd->stats.corrupt++;
            kv_log_warn("ssd: %s/" SEG_NAME_FMT " page %u: a torn record (its bytes do "
                        "not match their checksum); dropped",
                        ssd->dir, seg->file_no, page);
            loc = record_add(ssd, idx, page, h.pages, NULL);
            kill_push(ssd, idx, &seg->records[loc & UINT32_MAX]);
            page += h.pages;
            continue;
        }
        memset(&meta, 0, sizeof(meta));
        meta.ns     = (const char *)h.ns;
        meta.ns_len = h.ns_len;
        memcpy(meta.key.bytes, h.key, KVP_KEY_LEN);
        memcpy(meta.parent.bytes, h.parent, KVP_KEY_LEN);
        meta.has_parent = h.has_parent != 0;
        meta.size       = h.size;
        meta.checksum   = h.checksum;
        meta.seq        = h.seq;
        loc             = ((uint64_t)idx << 32) | seg->n_records;
        owner           = fn(arg, &meta, loc);
        record_add(ssd, idx, page, h.pages, owner);
        if (owner == NULL) {
            kill_push(ssd, idx, &seg->records[loc & UINT32_MAX]);
        } else {
            kept++;
        }
        page += h.pages;
    }
    seg->write_page = (uint32_t)file_pages;
    ssd->stats.file_bytes += file_pages * KV_SSD_PAGE;
    return kept;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

    return (x > y) - (x < y);
}

/* The file numbers of the segments in the directory, sorted. */
static size_t list_segments(kv_ssd_t *ssd, uint32_t **nums_p)
{
    int            fd  = dup(ssd->dir_fd);
    DIR           *dir = fd >= 0 ? fdopendir(fd) : NULL;
    struct dirent *ent;
    uint32_t      *nums = NULL;
    size_t         n = 0, cap = 0;

    if (dir == NULL) {
        if (fd >= 0) {
            close(fd);
        }
        *nums_p = NULL;
        return 0;
    }
    while ((ent = readdir(dir)) != NULL) {
        unsigned no;
        char     check[32];

        if (sscanf(ent->d_name, "seg-%10u.kvs", &no) != 1) {
            continue;
        }
        seg_name(check, sizeof(check), no);
        if (strcmp(check, ent->d_name) != 0) {
            continue;
        }
        if (n == cap) {
            cap  = cap ? 2 * cap : 16;
            nums = kv_realloc(nums, cap * sizeof(*nums), "segment list");
        }
        nums[n++] = no;
    }
    closedir(dir);
    if (n > 0) {
        qsort(nums, n, sizeof(*nums), cmp_u32);
    }
    *nums_p = nums;
    return n;
}

uint64_t kv_ssd_recover(kv_ssd_t *ssd, kv_ssd_recover_fn fn, void *arg)
{
    uint32_t *nums;
    size_t    n     = list_segments(ssd, &nums);
    size_t    first = 0;
    uint64_t  kept  = 0;

    /* keep room for a head and a compaction: drop the oldest beyond that */
    if (n > ssd->max_segments - 2) {
        first = n - (ssd->max_segments - 2);
    }
    for (size_t i = 0; i < n; i++) {
        char    name[32];
        int64_t idx;

        ssd->next_file_no = KV_MAX(ssd->next_file_no, nums[i] + 1);
        if (i < first) {
            seg_name(name, sizeof(name), nums[i]);
            kv_log_warn("ssd: %s/%s dropped: more segments than the capacity holds",
                        ssd->dir, name);
            unlinkat(ssd->dir_fd, name, 0);
            continue;
        }
        idx = seg_open(ssd, nums[i], 0);
        if (idx < 0 || !bounce_reserve(ssd, ssd->segment_size)) {
            continue;
        }
        ssd->scanning = idx;
        kept += recover_segment(ssd, (uint32_t)idx, fn, arg);
        ssd->scanning = -1;
        if (ssd->segs[idx].live_records == 0) {
            seg_delete(ssd, (uint32_t)idx);
        }
    }
    kv_free(nums);
    kv_ssd_flush(ssd);
    sync_dirty(ssd);
    return kept;
}

static kvp_status_t config_check(const kv_ssd_config_t *config, uint64_t *seg_size_p)
{
    uint64_t seg = config->segment_size;

    if (config->dir == NULL || config->dir[0] == '\0' || strlen(config->dir) >= 256) {
        kv_log_error("ssd: the directory must be a path of 1..255 bytes");
        return KVP_ERR_CONFIG;
    }
    if (seg == 0) {
        seg = KV_MIN(KV_MAX(config->capacity / 64, KV_SSD_SEGMENT_MIN),
                     (uint64_t)256 << 20);
        seg &= ~(KV_SSD_SEGMENT_MIN - 1);
    }
    if (seg % KV_SSD_PAGE != 0 || seg < KV_SSD_SEGMENT_MIN || seg > KV_SSD_SEGMENT_MAX) {
        kv_log_error("ssd: a segment must be a multiple of 4 KiB in 1 MiB..1 GiB");
        return KVP_ERR_CONFIG;
    }
    if (config->capacity / seg < KV_SSD_SEGMENTS_MIN ||
        config->capacity / seg > KV_SSD_SEGMENTS_MAX) {
        kv_log_error("ssd: the capacity must hold %d..%d segments of %llu bytes",
                     KV_SSD_SEGMENTS_MIN, KV_SSD_SEGMENTS_MAX, (unsigned long long)seg);
        return KVP_ERR_CONFIG;
    }
    if (config->queue_depth > KV_SSD_QUEUE_MAX) {
        kv_log_error("ssd: queue depth %u above %d", config->queue_depth,
                     KV_SSD_QUEUE_MAX);
        return KVP_ERR_CONFIG;
    }
    *seg_size_p = seg;
    return KVP_OK;
}

/* Open the directory and its lock (with O_DIRECT: tells if the filesystem can). */
static kvp_status_t dir_open(kv_ssd_t *ssd, const char *dir)
{
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        kv_log_error("ssd: mkdir %s: %s", dir, strerror(errno));
        return KVP_ERR_IO;
    }
    ssd->dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (ssd->dir_fd < 0) {
        kv_log_error("ssd: open %s: %s", dir, strerror(errno));
        return KVP_ERR_IO;
    }
    ssd->lock_fd =
        openat(ssd->dir_fd, "LOCK", O_RDWR | O_CREAT | O_DIRECT | O_CLOEXEC, 0600);
    if (ssd->lock_fd < 0) {
        kv_log_error("ssd: %s: %s%s", dir, strerror(errno),
                     errno == EINVAL ? " (its filesystem has no O_DIRECT)" : "");
        return errno == EINVAL ? KVP_ERR_CONFIG : KVP_ERR_IO;
    }
    if (flock(ssd->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        kv_log_error("ssd: %s is in use by another process", dir);
        return KVP_ERR_CONFIG;
    }
    return KVP_OK;
}

kvp_status_t kv_ssd_open(const kv_ssd_config_t *config, kv_ssd_move_fn move,
                         void *move_arg, kv_ssd_t **ssd_p)
{
    kv_ssd_t    *ssd;
    uint64_t     seg_size;
    kvp_status_t status;
    int          ret;

    if (config == NULL || move == NULL || ssd_p == NULL) {
        return KVP_ERR_INVALID_PARAM;
    }
    status = config_check(config, &seg_size);
    if (status != KVP_OK) {
        return status;
    }
    ssd               = kv_calloc(1, sizeof(*ssd), "ssd");
    ssd->dir_fd       = -1;
    ssd->lock_fd      = -1;
    ssd->event_fd     = -1;
    ssd->head         = -1;
    ssd->scanning     = -1;
    ssd->capacity     = config->capacity;
    ssd->segment_size = seg_size;
    ssd->seg_pages    = (uint32_t)(seg_size / KV_SSD_PAGE);
    ssd->max_segments = (uint32_t)(config->capacity / seg_size);
    ssd->qd           = config->queue_depth ? config->queue_depth : 16;
    ssd->sync         = config->sync;
    ssd->move         = move;
    ssd->move_arg     = move_arg;
    ssd->next_seq     = 1;
    snprintf(ssd->dir, sizeof(ssd->dir), "%s", config->dir);
    ssd->segs = kv_calloc(ssd->max_segments, sizeof(*ssd->segs), "ssd segments");
    for (uint32_t i = 0; i < ssd->max_segments; i++) {
        ssd->segs[i].fd = -1;
    }
    ssd->stats.capacity_bytes = config->capacity;
    ssd->stats.segment_size   = seg_size;
    status                    = dir_open(ssd, config->dir);
    if (status == KVP_OK && (ret = io_uring_queue_init(ssd->qd, &ssd->ring, 0)) < 0) {
        kv_log_error("ssd: io_uring_queue_init: %s", strerror(-ret));
        status = KVP_ERR_IO;
    } else if (status == KVP_OK) {
        ssd->event_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (ssd->event_fd < 0 ||
            (ret = io_uring_register_eventfd(&ssd->ring, ssd->event_fd)) < 0) {
            kv_log_error("ssd: the ring's eventfd: %s",
                         strerror(ssd->event_fd < 0 ? errno : -ret));
            io_uring_queue_exit(&ssd->ring);
            status = KVP_ERR_IO;
        }
    }
    if (status != KVP_OK) {
        if (ssd->event_fd >= 0) {
            close(ssd->event_fd);
        }
        if (ssd->lock_fd >= 0) {
            close(ssd->lock_fd);
        }
        if (ssd->dir_fd >= 0) {
            close(ssd->dir_fd);
        }
        kv_free(ssd->segs);
        kv_free(ssd);
        return status;
    }
    *ssd_p = ssd;
    return KVP_OK;
}

void kv_ssd_close(kv_ssd_t *ssd)
{
    if (ssd == NULL) {
        return;
    }
    async_complete(ssd);
    kv_ssd_flush(ssd);
    sync_dirty(ssd);
    while (ssd->closing > 0) { /* the ring's end would cancel them */
        op_run_t none = {0};
        run_step(ssd, &none, 1);
    }
    for (uint32_t i = 0; i < ssd->max_segments; i++) {
        if (ssd->segs[i].fd >= 0) {
            close(ssd->segs[i].fd);
            kv_free(ssd->segs[i].records);
        }
    }
    io_uring_queue_exit(&ssd->ring);
    close(ssd->event_fd);
    close(ssd->lock_fd);
    close(ssd->dir_fd);
    free(ssd->bounce);
    kv_free(ssd->kills);
    kv_free(ssd->segs);
    kv_free(ssd);
}

void kv_ssd_stats(const kv_ssd_t *ssd, kv_ssd_stats_t *stats_p)
{
    *stats_p          = ssd->stats;
    stats_p->segments = ssd->count;
}
