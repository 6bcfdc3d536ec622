/*
 * Fan-out: run the n parts of one call (one per pool node) in parallel on
 * a few library threads, and return when all are done.
 *
 * A fan-out is queued whole; whoever takes a part (a worker, or the
 * calling thread itself) takes the next index under the pool's lock.  The
 * caller takes parts too, so a call never waits for a free worker: with
 * every worker busy it runs its parts alone, one after the other.  The
 * part that takes the last index unlinks the fan-out from the queue, so
 * once the caller sees every index taken and none running, no worker can
 * touch the fan-out (it lives on the caller's stack).
 *
 * Parts never fan out themselves (they are calls to one node), so the
 * workers never wait on each other.
 */
#include "fanout.h"

#include <kv/alloc.h>

#include <pthread.h>

#define FANOUT_WORKERS 4

typedef struct fanout {
    struct fanout   *next;
    kvp__part_func_t func;
    void            *arg;
    size_t           n;
    size_t           taken;   /* parts handed out */
    size_t           running; /* parts handed out and not finished */
    pthread_cond_t   done;
} fanout_t;

struct kvp__fanout_pool {
    pthread_mutex_t lock;
    pthread_cond_t  work;
    fanout_t       *head;
    int             stop;
    int             num_workers;
    pthread_t       workers[FANOUT_WORKERS];
};

/* Hand out the next part of @p f (lock held); unlink it when none is left. */
static size_t take_part(kvp__fanout_pool_t *pool, fanout_t *f)
{
    size_t i = f->taken++;

    if (f->taken == f->n) {
        for (fanout_t **pp = &pool->head; *pp != NULL; pp = &(*pp)->next) {
            if (*pp == f) {
                *pp = f->next;
                break;
            }
        }
    }
    f->running++;
    return i;
}

/* Run part @p i of @p f (lock held on entry and exit). */
static void run_part(kvp__fanout_pool_t *pool, fanout_t *f, size_t i)
{
    pthread_mutex_unlock(&pool->lock);
    f->func(f->arg, i);
    pthread_mutex_lock(&pool->lock);
    if (--f->running == 0 && f->taken == f->n) {
        pthread_cond_signal(&f->done);
    }
}

static void *worker_main(void *arg)
{
    kvp__fanout_pool_t *pool = arg;

    pthread_mutex_lock(&pool->lock);
    for (;;) {
        while (pool->head == NULL && !pool->stop) {
            pthread_cond_wait(&pool->work, &pool->lock);
        }
        if (pool->head == NULL) {
            break;
        }
        fanout_t *f = pool->head;
        run_part(pool, f, take_part(pool, f));
    }
    pthread_mutex_unlock(&pool->lock);
    return NULL;
}

kvp__fanout_pool_t *kvp__fanout_pool_create(void)
{
    kvp__fanout_pool_t *pool = kv_calloc(1, sizeof(*pool), "fan-out pool");

    pthread_mutex_init(&pool->lock, NULL);
    pthread_cond_init(&pool->work, NULL);
    for (int i = 0; i < FANOUT_WORKERS; i++) {
        if (pthread_create(&pool->workers[i], NULL, worker_main, pool) != 0) {
            break; /* fewer workers: callers run more parts themselves */
        }
        pool->num_workers++;
    }
    return pool;
}

void kvp__fanout_pool_destroy(kvp__fanout_pool_t *pool)
{
    if (pool == NULL) {
        return;
    }
    pthread_mutex_lock(&pool->lock);
    pool->stop = 1;
    pthread_cond_broadcast(&pool->work);
    pthread_mutex_unlock(&pool->lock);
    for (int i = 0; i < pool->num_workers; i++) {
        pthread_join(pool->workers[i], NULL);
    }
    pthread_cond_destroy(&pool->work);
    pthread_mutex_destroy(&pool->lock);
    kv_free(pool);
}

void kvp__fanout(kvp__fanout_pool_t *pool, size_t n, kvp__part_func_t func, void *arg)
{
    fanout_t f = {.func = func, .arg = arg, .n = n};

    if (n == 0) {
        return;
    }
    if (n == 1) {
        func(arg, 0);
        return;
    }
    pthread_cond_init(&f.done, NULL);
    pthread_mutex_lock(&pool->lock);
    f.next     = pool->head; /* LIFO: the newest call's parts go first */
    pool->head = &f;
    for (size_t i = 1; i < n && i <= (size_t)pool->num_workers; i++) {
        pthread_cond_signal(&pool->work);
    }
    while (f.taken < f.n) {
        run_part(pool, &f, take_part(pool, &f));
    }
    while (f.running > 0) {
        pthread_cond_wait(&f.done, &pool->lock);
    }
    pthread_mutex_unlock(&pool->lock);
    pthread_cond_destroy(&f.done);
}
