/*
 * Asynchronous batched put/get.  A request is queued to the client's
 * workers (started on first use), which run the blocking batch call; the
 * caller polls or waits.  Several requests run at once on the one
 * connection (its calls are multiplexed), so an engine can overlap loading
 * the next layer's blocks with computing on the current ones.
 */
#include "client_int.h"

#include <kv/alloc.h>

#include <pthread.h>

#define ASYNC_WORKERS 4

struct kvp_request {
    struct kvp_request *next;
    kvp_client_h        client;
    int                 is_put;
    const char         *ns;
    const kvp_key_t    *keys;
    const void *const  *datas;
    void *const        *bufs;
    const uint64_t     *in_sizes;   /* put: sizes; get: capacities */
    uint64_t           *out_sizes;
    size_t              count;
    kvp_status_t       *statuses;
    kvp_status_t        status;     /* KVP_INPROGRESS until done */
    pthread_cond_t      done;
};

struct kvp__async {
    pthread_mutex_t lock;
    pthread_cond_t  work;
    kvp_request_h   head, tail;
    int             stop;
    int             num_workers;
    pthread_t       workers[ASYNC_WORKERS];
};

static void *worker_main(void *arg)
{
    kvp_client_h   client = arg;
    kvp__async_t  *async  = client->async;
    kvp_request_h  req;
    kvp_status_t   status;

    pthread_mutex_lock(&async->lock);
    for (;;) {
        while (async->head == NULL && !async->stop) {
            pthread_cond_wait(&async->work, &async->lock);
        }
        if (async->head == NULL) {
            break;
        }
        req         = async->head;
        async->head = req->next;
        if (async->head == NULL) {
            async->tail = NULL;
        }
        pthread_mutex_unlock(&async->lock);
        if (req->is_put) {
            status = kvp_put_batch(client, req->ns, req->keys, req->datas, req->in_sizes,
                                   req->count, req->statuses);
        } else {
            status = kvp_get_batch(client, req->ns, req->keys, req->bufs, req->in_sizes,
                                   req->count, req->out_sizes, req->statuses);
        }
        pthread_mutex_lock(&async->lock);
        req->status = status;
        pthread_cond_broadcast(&req->done);
    }
    pthread_mutex_unlock(&async->lock);
    return NULL;
}

/* Queue @p req (freed here if it cannot be). */
static kvp_status_t async_submit(kvp_client_h client, kvp_request_h req,
                                 kvp_request_h *req_p)
{
    kvp__async_t *async;

    if (client->async == NULL) {
        async = kv_calloc(1, sizeof(*async), "async");
        pthread_mutex_init(&async->lock, NULL);
        pthread_cond_init(&async->work, NULL);
        client->async = async;
        for (int i = 0; i < ASYNC_WORKERS; i++) {
            if (pthread_create(&async->workers[i], NULL, worker_main, client) != 0) {
                break;
            }
            async->num_workers++;
        }
    }
    async = client->async;
    if (async->num_workers == 0) {
        kv_free(req);
        return KVP_ERR_NO_MEMORY;
    }
    req->client = client;
    req->status = KVP_INPROGRESS;
    pthread_cond_init(&req->done, NULL);
    pthread_mutex_lock(&async->lock);
    if (async->tail != NULL) {
        async->tail->next = req;
    } else {
        async->head = req;
    }
    async->tail = req;
    pthread_cond_signal(&async->work);
    pthread_mutex_unlock(&async->lock);
    *req_p = req;
    return KVP_OK;
}

kvp_status_t kvp_put_batch_async(kvp_client_h client, const char *ns,
                                 const kvp_key_t *keys, const void *const *datas,
                                 const uint64_t *sizes, size_t count,
                                 kvp_status_t *statuses, kvp_request_h *req_p)
{
    kvp_request_h req;

    if (client == NULL || req_p == NULL) {
        return KVP_ERR_INVALID_PARAM;
    }
    req           = kv_calloc(1, sizeof(*req), "request");
    req->is_put   = 1;
    req->ns       = ns;
    req->keys     = keys;
    req->datas    = datas;
    req->in_sizes = sizes;
    req->count    = count;
    req->statuses = statuses;
    return async_submit(client, req, req_p);
}

kvp_status_t kvp_get_batch_async(kvp_client_h client, const char *ns,
                                 const kvp_key_t *keys, void *const *bufs,
                                 const uint64_t *capacities, size_t count,
                                 uint64_t *sizes, kvp_status_t *statuses,
                                 kvp_request_h *req_p)
{
    kvp_request_h req;

    if (client == NULL || req_p == NULL) {
        return KVP_ERR_INVALID_PARAM;
    }
    req            = kv_calloc(1, sizeof(*req), "request");
    req->ns        = ns;
    req->keys      = keys;
    req->bufs      = bufs;
    req->in_sizes  = capacities;
    req->out_sizes = sizes;
    req->count     = count;
    req->statuses  = statuses;
    return async_submit(client, req, req_p);
}

kvp_status_t kvp_request_test(kvp_request_h req)
{
    kvp__async_t *async = req->client->async;
    kvp_status_t  status;

    pthread_mutex_lock(&async->lock);
    status = req->status;
    pthread_mutex_unlock(&async->lock);
    return status;
}

kvp_status_t kvp_request_wait(kvp_request_h req)
{
    kvp__async_t *async = req->client->async;
    kvp_status_t  status;

    pthread_mutex_lock(&async->lock);
    while (req->status == KVP_INPROGRESS) {
        pthread_cond_wait(&req->done, &async->lock);
    }
    status = req->status;
    pthread_mutex_unlock(&async->lock);
    return status;
}

void kvp_request_free(kvp_request_h req)
{
    if (req == NULL) {
        return;
    }
    kvp_request_wait(req);
    pthread_cond_destroy(&req->done);
    kv_free(req);
}

void kvp__async_destroy(kvp_client_h client)
{
    kvp__async_t *async = client->async;

    if (async == NULL) {
        return;
    }
    pthread_mutex_lock(&async->lock);
    async->stop = 1;
    pthread_cond_broadcast(&async->work);
    pthread_mutex_unlock(&async->lock);
    for (int i = 0; i < async->num_workers; i++) {
        pthread_join(async->workers[i], NULL);
    }
    pthread_mutex_destroy(&async->lock);
    pthread_cond_destroy(&async->work);
    kv_free(async);
    client->async = NULL;
}
